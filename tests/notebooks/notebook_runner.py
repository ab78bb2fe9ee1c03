"""Runs a notebook of ``notebooks/`` from top to bottom, as a user would, at its small size.

Each notebook reads ``OTKIT_NOTEBOOK_SIZE``: ``small`` for the test run, anything else (or
unset) for the full size. A notebook fails its test on any exception, including warnings,
which a first cell turns into errors (deprecations of the libraries excepted).

The notebooks of one test process share one kernel, started once: a kernel's start and its
imports cost about 4–5 s, more than some notebooks take. Before each notebook the kernel is
brought back to a fresh session's state: every name of the previous notebook deleted
(``%reset -f``), its figures closed, float64 off, otkit's memory budget and the warning filters
back to their defaults.
"""

from __future__ import annotations

import atexit
import functools
import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

WARNINGS_AS_ERRORS = """\
import warnings
warnings.simplefilter("error")
warnings.simplefilter("ignore", DeprecationWarning)
warnings.simplefilter("ignore", PendingDeprecationWarning)"""


FRESH_SESSION = """\
%reset -f
import warnings
warnings.resetwarnings()
import matplotlib.pyplot
matplotlib.pyplot.close("all")
import jax
jax.config.update("jax_enable_x64", False)
import otkit
otkit.set_memory_budget(None)
%reset -f"""


@functools.cache
def _kernel():
  """The kernel this process's notebooks run in (started on first use, shut down at exit)."""
  from jupyter_client.manager import KernelManager
  manager = KernelManager(kernel_name="python3")
  manager.start_kernel(env={**os.environ, "OTKIT_NOTEBOOK_SIZE": "small"}, cwd=str(NOTEBOOKS))
  atexit.register(manager.shutdown_kernel, now=True)
  return manager


def run_notebook(name: str) -> None:
  """Executes ``notebooks/<name>`` in the shared kernel, from a fresh session's state; raises on
  the first failing cell."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  path = NOTEBOOKS / name
  notebook = nbformat.read(path, as_version=4)
  notebook.cells[:0] = [nbformat.v4.new_code_cell(FRESH_SESSION),
                        nbformat.v4.new_code_cell(WARNINGS_AS_ERRORS)]
  kernel = _kernel()
  if not kernel.is_alive():  # a previous notebook took it down
    kernel.restart_kernel(now=True)
  client = nbclient.NotebookClient(notebook, km=kernel, timeout=600, interrupt_on_timeout=True,
                                   resources={"metadata": {"path": str(path.parent)}})
  try:
    client.execute()
  except BaseException:  # the next notebook starts from a new kernel
    kernel.restart_kernel(now=True)
    raise
  finally:
    if client.kc is not None:
      client.kc.stop_channels()
  plots = [out for cell in notebook.cells if cell.cell_type == "code"
           for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
  assert plots, f"{name} draws no plot"
