"""The gradient flows notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_gradient_flows_notebook_executes():
  run_notebook("gradient_flows.ipynb")
