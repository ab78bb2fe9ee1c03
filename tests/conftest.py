"""Shared test configuration: float64 is enabled so that oracles can be compared tightly;
float32 tests build float32 arrays explicitly. Shared helpers live in ``tests/helpers.py``
(``import helpers``)."""

import os
import pathlib
import shutil
import sys
import tempfile

# The tests' arrays are tiny and their time goes to compiling. XLA compiles faster at backend
# optimisation level 0, without LLVM's expensive passes, and with its CPU fusions emitted
# directly to LLVM instead of through the MLIR fusion emitters (the three halve the run's compile
# time). The floating-point results are those of another summation order, which every
# assertion must tolerate anyway. Set before JAX starts its backend (notebook kernels inherit
# it); a user's setting of any of these flags is kept.
for _flag in ("--xla_llvm_disable_expensive_passes=true", "--xla_backend_optimization_level=0",
              "--xla_cpu_use_fusion_emitters=false"):
  if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

# One compilation cache per test run, shared by the xdist workers: a program that one worker, or
# an identical jitted function of another test, has compiled is loaded instead of compiled again.
# The controlling process makes the folder (its environment passes to the workers it starts)
# and removes it when the run ends.
_OWNER = "OTKIT_TEST_JAX_CACHE" not in os.environ
if _OWNER:
  os.environ["OTKIT_TEST_JAX_CACHE"] = tempfile.mkdtemp(prefix="otkit-jax-cache-")
_CACHE = os.environ["OTKIT_TEST_JAX_CACHE"]
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The longest tests, and the files that take longest in all (20–40 s each), start first, so
# that the two workers do not end with one of them alone on a long file.
_LONG = ("_notebook.py", "test_stored_cost_matrix_path",
         "test_vmap_over_four_sinkhorn_flows", "test_vmap_over_a_batch_of_four_problems",
         "test_sinkhorn_and_plan_functions_equal_the_dense_cost", "test_demo_writes_a_png",
         "test_fuzz.py", "test_ot_cfm_learns", "test_meta_flow_matching_fits",
         "test_otdd.py", "test_gromov.py", "test_contract.py", "test_newton.py",
         "test_sliced.py", "test_sinkhorn.py", "test_assignment.py", "test_barycenter.py",
         "test_batching.py", "test_divergence.py")


def pytest_collection_modifyitems(items):
  items.sort(key=lambda item: not any(name in item.nodeid for name in _LONG))  # stable


def pytest_sessionfinish(session):
  if _OWNER:  # the controlling process, after every worker
    shutil.rmtree(_CACHE, ignore_errors=True)

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
