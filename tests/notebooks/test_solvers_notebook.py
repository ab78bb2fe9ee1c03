"""The solvers notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_solvers_notebook_executes():
  run_notebook("solvers.ipynb")
