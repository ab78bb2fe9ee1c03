"""The Gromov–Wasserstein and barycenters notebook runs from top to bottom and draws its plots."""

from notebook_runner import run_notebook


def test_gromov_and_barycenters_notebook_executes():
  run_notebook("gromov_and_barycenters.ipynb")
