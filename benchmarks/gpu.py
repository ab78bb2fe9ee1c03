"""Sinkhorn on one accelerator: otkit against ott-jax at large n.

For n ∈ {10⁴, 5·10⁴, 10⁵} and d ∈ {2, 64}: x ~ N(0, I_d), y ~ N(e₁, 0.64 I_d) in float32, the
squared-Euclidean cost rescaled to mean 1, uniform weights, ε = 0.01. otkit runs online (no
n × m matrix); ott-jax's ``PointCloud`` runs with its cost matrix (its online mode,
``batch_size=…``, fails on JAX 0.10: ``jax.interpreters.batching.is_vmappable`` is gone), so its
memory grows as n², and a run that fails is reported with its error. Each library is timed

* for 100 fixed sweeps (otkit ``Sinkhorn(fixed_iters=100, anneal=False)``, ott-jax
  ``Sinkhorn(min_iterations=100, max_iterations=100)``), the anchor of FlashSinkhorn's report
  (n = 50 000, d = 64, 100 iterations in 1.45 s on an A100);
* to an L1 marginal error of 1e-3 with each library's defaults,

with the peak device memory (``memory_stats()['peak_bytes_in_use']`` on GPU; the growth of the
resident set on CPU). TF32 stays off: every cost matmul of otkit runs at
``Precision.HIGHEST`` (the tests check it), and ``jax_default_matmul_precision`` is set to
``highest`` for ott-jax.

  python benchmarks/gpu.py [--out benchmarks/results]        # on an accelerator
  python benchmarks/gpu.py --cpu-smoke --out /tmp/smoke       # tiny sizes, otkit only, any machine
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import harness
import otkit

jax.config.update("jax_default_matmul_precision", "highest")

SIZES = [(10_000, 2), (10_000, 64), (50_000, 2), (50_000, 64), (100_000, 2), (100_000, 64)]
SMOKE = [(300, 2)]
EPSILON = 0.01


def data(n: int, d: int):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (0.8 * rng.normal(size=(n, d)) + np.eye(d)[0]).astype(np.float32)
  scale = math.sqrt(float(np.mean(np.sum(x * x, 1)) + np.mean(np.sum(y * y, 1))
                         - 2 * np.dot(x.mean(0), y.mean(0))))  # mean ‖x − y‖² = 1 after this
  return jnp.asarray(x / scale), jnp.asarray(y / scale)


def device_peak_mb() -> float:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use", math.nan) / 2**20


def otkit_runs(x, y):
  fixed = jax.jit(lambda x, y: otkit.solve(otkit.PointCloud(x, y), epsilon=EPSILON,
                                           solver=otkit.Sinkhorn(fixed_iters=100, anneal=False)))
  to_tol = jax.jit(lambda x, y: otkit.solve(otkit.PointCloud(x, y), epsilon=EPSILON))
  return {"100 sweeps": lambda: fixed(x, y), "to 1e-3": lambda: to_tol(x, y)}


def ott_runs(x, y):
  try:
    from ott.geometry import pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn
  except ImportError:
    return {}
  def run(solver):
    geom = pointcloud.PointCloud(x, y, epsilon=EPSILON)
    return solver(linear_problem.LinearProblem(geom))

  fixed = jax.jit(lambda x, y: run(sinkhorn.Sinkhorn(min_iterations=100, max_iterations=100)))
  to_tol = jax.jit(lambda x, y: run(sinkhorn.Sinkhorn()))
  return {"100 sweeps": lambda: fixed(x, y), "to 1e-3": lambda: to_tol(x, y)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cpu-smoke", action="store_true",
                      help="tiny sizes, otkit only, for any machine")
  parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
  args = parser.parse_args(argv)
  sizes, repeats = (SMOKE, 1) if args.cpu_smoke else (SIZES, 3)
  device = jax.devices()[0]
  card = getattr(device, "device_kind", device.platform)
  rows, data_rows = [], []
  for n, d in sizes:
    x, y = data(n, d)
    # The smoke run checks otkit's path only (ott-jax's import and compilations double its time).
    peers = () if args.cpu_smoke else (("ott-jax", ott_runs(x, y)),)
    for library, runs in (("otkit", otkit_runs(x, y)), *peers):
      for task, fn in runs.items():
        try:
          timing = harness.timed(fn, repeats=repeats, memory=device.platform == "cpu")
        except Exception as err:  # e.g. out of device memory: reported, and the grid goes on
          data_rows.append({"n": n, "d": d, "library": library, "task": task,
                            "error": f"{type(err).__name__}: {str(err)[:200]}", "device": card})
          rows.append([n, d, library, task, f"failed ({type(err).__name__})", "–", "–"])
          continue
        memory = timing.peak_mb if device.platform == "cpu" else device_peak_mb()
        its = int(timing.result.n_iters)
        data_rows.append({"n": n, "d": d, "library": library, "task": task,
                          "seconds": timing.median_s, "compile_s": timing.first_s - timing.median_s,
                          "iterations": its, "peak_mb": memory, "device": card})
        rows.append([n, d, library, task, f"{timing.median_s:.3g}", its, f"{memory:.0f}"])
        table = "\n".join([
            f"Sinkhorn online, float32, ε = 0.01 (cost mean 1), on {card} ({harness.machine()}). "
            "Median seconds after compilation, iterations, peak memory (MB: device peak on an "
            "accelerator, resident-set growth on CPU).", "",
            *harness.markdown_table(["n", "d", "library", "task", "seconds", "iterations",
                                     "peak MB"], rows), ""])
        harness.write_results(args.out, "gpu" if not args.cpu_smoke else "gpu_smoke", data_rows,
                              table)
  print(table, flush=True)


if __name__ == "__main__":
  main()
