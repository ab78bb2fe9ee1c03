"""The accelerator benchmark runs at its smoke size on any machine, and the costs it times are
computed at full matmul precision (no TF32 or bfloat16 passes on accelerators)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import otkit

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cost_fn", [otkit.SqEuclidean(), otkit.Cosine()],
                         ids=["sqeuclidean", "cosine"])
def test_cost_matmuls_request_the_highest_precision(cost_fn):
  x = jnp.ones((5, 8), jnp.float32)
  hlo = jax.jit(lambda x, y: otkit.PointCloud(x, y, cost_fn=cost_fn).cost_matrix).lower(x, x)
  text = hlo.as_text()
  assert "dot_general" in text and "HIGHEST" in text


def test_low_dimensional_squared_distances_use_no_matmul():
  # d <= 4: summed coordinate by coordinate, so no reduced-precision matrix product (TF32) can
  # enter them.
  x = jnp.ones((5, 3), jnp.float32)
  hlo = jax.jit(lambda x, y: otkit.PointCloud(x, y).cost_matrix).lower(x, x)
  assert "dot_general" not in hlo.as_text()


def test_gpu_benchmark_cpu_smoke(tmp_path):
  run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--cpu-smoke",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert run.returncode == 0, run.stderr[-3000:]
  rows = json.loads((tmp_path / "gpu_smoke.json").read_text())
  ours = [r for r in rows if r["library"] == "otkit"]
  assert {r["task"] for r in ours} == {"100 sweeps", "to 1e-3"}
  assert all("error" not in r and r["seconds"] > 0 and r["iterations"] > 0 for r in rows), rows
  assert all(r["iterations"] == 100 for r in ours if r["task"] == "100 sweeps")
