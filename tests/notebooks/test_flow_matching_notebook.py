"""The flow matching notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_flow_matching_notebook_executes():
  run_notebook("flow_matching.ipynb")
