"""Split over a mesh of 8 host devices equals one device: solves, Sinkhorn divergences, sliced
Wasserstein, the mini-batch estimators and OTDD, values and gradients, in float64 (converged) and
float32 (the same sweeps). Each 8-device run is a separate process, so that the rest of the suite
keeps one device; they compile for 8 devices and run with -m slow. The default run checks the
split code paths on a mesh of this process's one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("sharded_checks.py")
# The split reductions change the order of sums only: differences stay at rounding.
TOLERANCE = {"float64": 1e-9, "float32": 1e-5}


def run_checks(*args: str) -> dict:
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=1200)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def assert_split_equals_single(results: dict) -> None:
  differences = {key: value for key, value in results.items()
                 if key.split("/")[-1] in TOLERANCE and key.split("/")[1] != "mesh_used"}
  assert differences
  for key, value in differences.items():
    assert value <= TOLERANCE[key.split("/")[-1]], (key, value)


def test_split_code_paths_on_a_mesh_of_one_device():
  # In this process (one device): the split paths (shard_map, the explicit mesh's placements,
  # padding of the split axes) under jit and grad; 8 devices run with -m slow below.
  import jax
  import numpy as np

  import otkit
  mesh = jax.make_mesh((1,), ("data",))
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(24, 3)), rng.normal(size=(16, 3)) + 0.5
  solver = otkit.Sinkhorn(tol=1e-10, max_iters=5000)

  def value(x, mesh):
    return otkit.solve(otkit.PointCloud(x, y, mesh=mesh), epsilon=0.5, solver=solver).value
  grad = jax.jit(jax.value_and_grad(value), static_argnums=1)
  (split, split_grad), (whole, whole_grad) = grad(x, mesh), grad(x, None)
  np.testing.assert_allclose(split, whole, rtol=1e-10)
  np.testing.assert_allclose(split_grad, whole_grad, rtol=1e-9, atol=1e-12)
  key = jax.random.key(0)
  sliced = [otkit.sliced_wasserstein(key, x, y, n_projections=5, mesh=m).value for m in (mesh, None)]
  np.testing.assert_allclose(*sliced, rtol=1e-12)


@pytest.mark.slow
def test_split_solve_memory_and_errors():
  results = run_checks("solve", "memory", "errors", "--dtypes", "float32")
  assert_split_equals_single(results)
  # Per device, a split solve of 8n rows holds about what one device holds for n rows.
  assert results["memory/split_8x/-"] <= 1.5 * results["memory/single_1x/-"]
  assert results["memory/split_8x/-"] <= 0.25 * results["memory/single_8x/-"]
  assert "`x` has 63 points" in results["errors/indivisible/-"]
  assert "`sharded` must be one of" in results["errors/side/-"]
  assert "`y` has 63 points" in results["errors/self_pairs/-"]
  assert "self-pair" in results["errors/self_pairs/-"]


@pytest.mark.slow
def test_every_split_function_equals_single_device():
  results = run_checks("solve", "divergence", "sliced", "minibatch", "otdd")
  assert_split_equals_single(results)
  assert results["otdd/mesh_used/float64"] and results["otdd/mesh_used/float32"]
  for name in ("divergence", "sliced", "minibatch", "otdd"):
    assert any(key.startswith(name) for key in results), name
