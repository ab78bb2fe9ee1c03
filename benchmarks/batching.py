"""Batches of problems under ``vmap``: what k batched problems cost against one.

For k ∈ {1, 4, 16} problems of n float32 points in R^d (x ~ N(0, I), y ~ N(1, I)), times a fixed
number of sweeps (so that every problem does the same work) of

* ``otkit.solve`` on a ``PointCloud`` (online, ε = 0.05),
* ``otkit.sinkhorn_divergence`` (three problems, the two symmetric ones by the averaged update),

``vmap``-ed over the k problems, and reports the time of the batch divided by the time of one
problem called without ``vmap`` (ideal: k, or less when the batch fills the machine better). The geometry records the
size of the ``vmap`` it is validated in and divides its automatic block among the problems; the
"fixed block" column runs the same batch with the block of a single problem (``chunk_size``
set by hand), which is what every batch used before.

  python benchmarks/batching.py [--n 4000] [--d 2] [--sweeps 20] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import harness
import otkit
from otkit.geometry._geometry import auto_block_rows

BATCHES = (1, 4, 16)


def problems(k: int, n: int, d: int):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(k, n, d)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(k, n, d)) + 1.0, jnp.float32)
  return x, y


def functions(sweeps: int, chunk_size):
  """name -> a function of one problem ``(x, y)``."""
  solver = otkit.Sinkhorn(fixed_iters=sweeps, anneal=False)

  def solve(x, y):
    return otkit.solve(otkit.PointCloud(x, y, chunk_size=chunk_size), epsilon=0.05,
                       solver=solver).f

  def divergence(x, y):
    return otkit.sinkhorn_divergence(x, y, epsilon=0.05, chunk_size=chunk_size,
                                     solver=solver).value

  return {"solve": solve, "sinkhorn_divergence": divergence}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=4000)
  parser.add_argument("--d", type=int, default=2)
  parser.add_argument("--sweeps", type=int, default=20)
  parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
  args = parser.parse_args(argv)

  single_block = auto_block_rows(args.n, args.n, None)
  rows, data = [], []
  for name in functions(args.sweeps, None):
    one = None
    for k in BATCHES:
      x, y = problems(k, args.n, args.d)
      timings = {}
      for label, chunk in (("auto", None), ("fixed block", single_block)):
        if k == 1 and label != "auto":
          continue
        fn = functions(args.sweeps, chunk)[name]
        if k == 1:  # one problem, called as it is
          fn, x, y = jax.jit(fn), x[0], y[0]
        else:
          fn = jax.jit(jax.vmap(fn))
        timings[label] = harness.timed(lambda: fn(x, y), repeats=3)
      if k == 1:
        one = timings["auto"].median_s
      auto = timings["auto"].median_s / one
      fixed = timings["fixed block"].median_s / one if "fixed block" in timings else None
      data.append({"function": name, "k": k, "n": args.n, "d": args.d, "sweeps": args.sweeps,
                   "seconds": timings["auto"].median_s, "ratio": auto,
                   "seconds_fixed_block": None if fixed is None else timings["fixed block"].median_s,
                   "ratio_fixed_block": fixed,
                   "compile_s": timings["auto"].first_s - timings["auto"].median_s})
      rows.append([name, k, f"{timings['auto'].median_s:.3f}", f"{auto:.2f}×",
                   "–" if fixed is None else f"{fixed:.2f}×"])
      table = "\n".join([
          f"k problems of n = {args.n} float32 points in R^{args.d} under `jax.vmap`, "
          f"{args.sweeps} fixed sweeps each, {harness.machine()}. Time of the batch after "
          f"compilation (median of 3) and its ratio to one problem (ideal: k).", "",
          *harness.markdown_table(["function", "k", "batch s", "batch ÷ one", "fixed block ÷ one"],
                                  rows), ""])
      print(harness.write_results(args.out, "batching", data, table), flush=True)


if __name__ == "__main__":
  main()
