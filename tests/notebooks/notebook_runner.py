"""Runs a notebook of ``notebooks/`` from top to bottom, as a user would, at its small size.

Each notebook reads ``OTKIT_NOTEBOOK_SIZE``: ``small`` for the test run, anything else (or
unset) for the full size. A notebook fails its test on any exception, including warnings,
which a first cell turns into errors (deprecations of the libraries excepted).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

WARNINGS_AS_ERRORS = """\
import warnings
warnings.simplefilter("error")
warnings.simplefilter("ignore", DeprecationWarning)
warnings.simplefilter("ignore", PendingDeprecationWarning)"""


def run_notebook(name: str) -> None:
  """Executes ``notebooks/<name>`` in a fresh kernel; raises on the first failing cell."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  path = NOTEBOOKS / name
  notebook = nbformat.read(path, as_version=4)
  notebook.cells.insert(0, nbformat.v4.new_code_cell(WARNINGS_AS_ERRORS))
  client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(path.parent)}})
  client.execute(env={**os.environ, "OTKIT_NOTEBOOK_SIZE": "small"})  # the kernel's environment
  plots = [out for cell in notebook.cells if cell.cell_type == "code"
           for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
  assert plots, f"{name} draws no plot"
