"""The estimators notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_estimators_notebook_executes():
  run_notebook("estimators.ipynb")
