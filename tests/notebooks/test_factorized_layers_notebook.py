"""The factorized layers notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_factorized_layers_notebook_executes():
  run_notebook("factorized_layers.ipynb")
