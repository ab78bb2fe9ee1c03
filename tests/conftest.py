"""Shared test configuration: float64 is enabled so that oracles can be compared tightly;
float32 tests build float32 arrays explicitly. Shared helpers live in ``tests/helpers.py``
(``import helpers``)."""

import pathlib
import sys

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

# `import helpers` from any test directory, whatever pytest's import mode.
_TESTS = str(pathlib.Path(__file__).resolve().parent)
if _TESTS not in sys.path:
  sys.path.insert(0, _TESTS)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
  return request.param
