"""The documentation site builds offline in strict mode, and its API reference documents every
public name of ``otkit``, ``otkit.flows``, ``otkit.flows.dataset``, ``otkit.nn`` and
``otkit.flow_matching``."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")
pytest.importorskip("mkdocs_jupyter", reason="the docs extra is not installed")

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("otkit", "otkit.flows", "otkit.flows.dataset", "otkit.nn", "otkit.flow_matching")


def test_mkdocs_build_is_strict_clean_and_covers_the_public_api(tmp_path):
  site = tmp_path / "site"
  build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(site)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
  assert build.returncode == 0, build.stderr[-4000:]
  reference = "".join(page.read_text(encoding="utf-8") for page in (site / "api").rglob("*.html"))
  missing = [f"{name}.{member}" for name in MODULES
             for member in importlib.import_module(name).__all__
             if f'id="{name}.{member}"' not in reference]
  assert not missing, f"not in the API reference: {missing}"
  for notebook in (ROOT / "notebooks").glob("*.ipynb"):
    assert (site / "notebooks" / notebook.stem / "index.html").exists(), notebook.name
