"""The quick-start notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_quickstart_notebook_executes():
  run_notebook("quickstart.ipynb")
