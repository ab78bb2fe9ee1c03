"""The OTDD notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_otdd_notebook_executes():
  run_notebook("otdd.ipynb")
