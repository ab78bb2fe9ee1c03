"""Batches of problems under ``vmap``: what k batched problems cost against one.

For k ∈ {4, 16} problems of n float32 points in R^d (x ~ N(0, I), y ~ N(1, I)), times a fixed
number of sweeps (so that every problem does the same work) of

* ``otkit.solve`` on a ``PointCloud`` (online, ε = 0.05),
* ``otkit.sinkhorn_divergence`` (three problems, the two symmetric ones by the averaged update),

``vmap``-ed over the k problems, and reports the time of the batch divided by the time of one
problem called without ``vmap`` (ideal: k, or less when the batch fills the machine better). The
two are timed in alternation (``--rounds`` pairs after compilation) and the median ratio is
reported with its range, so that a slow stretch of a shared machine falls on both. A third
column times a ``lax.map`` over the same k problems in one program, the batch run one problem at a
time by hand: on CPU, problems that fill the machine's blocks alone are solved that way under
``vmap`` too.

  python benchmarks/batching.py [--n 4000] [--d 2] [--sweeps 20] [--rounds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import harness
import otkit

BATCHES = (4, 16)


def problems(k: int, n: int, d: int):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(k, n, d)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(k, n, d)) + 1.0, jnp.float32)
  return x, y


def functions(sweeps: int, chunk_size=None):
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
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
  args = parser.parse_args(argv)

  rows, data = [], []
  for name, fn in functions(args.sweeps).items():
    one = jax.jit(fn)
    batched = jax.jit(jax.vmap(fn))
    looped = jax.jit(lambda x, y, fn=fn: jax.lax.map(lambda p: fn(*p), (x, y)))
    for k in BATCHES:
      x, y = problems(k, args.n, args.d)
      seconds = lambda fn, *args: harness.clock(lambda: fn(*args))[0]  # noqa: E731
      first = seconds(batched, x, y)
      seconds(one, x[0], y[0])
      seconds(looped, x, y)
      singles, batches, ratios, loop_ratios = [], [], [], []
      for r in range(args.rounds):
        x_r, y_r = x[r % k], y[r % k]
        single = seconds(one, x_r, y_r)
        singles.append(single)
        batches.append(seconds(batched, x, y))
        ratios.append(batches[-1] / single)
        loop_ratios.append(seconds(looped, x, y) / single)
      ratio = statistics.median(ratios)
      loop_ratio = statistics.median(loop_ratios)
      data.append({"function": name, "k": k, "n": args.n, "d": args.d, "sweeps": args.sweeps,
                   "one_s": statistics.median(singles), "ratio": ratio, "ratios": ratios,
                   "loop_ratio": loop_ratio, "loop_ratios": loop_ratios,
                   "compile_s": first - statistics.median(batches)})
      rows.append([name, k, f"{statistics.median(singles):.3f}", f"{ratio:.2f}×",
                   f"{min(ratios):.2f}–{max(ratios):.2f}×", f"{loop_ratio:.2f}×"])
      table = "\n".join([
          f"k problems of n = {args.n} float32 points in R^{args.d} under `jax.vmap`, "
          f"{args.sweeps} fixed sweeps each, {harness.machine()}. One problem and the batch "
          f"timed in alternation after compilation, {args.rounds} rounds: the median ratio "
          "batch ÷ one (ideal: k) and its range; the last column is a `lax.map` over the same "
          "problems in one program.", "",
          *harness.markdown_table(["function", "k", "one s", "vmap ÷ one", "range",
                                   "lax.map ÷ one"], rows), ""])
      print(harness.write_results(args.out, "batching", data, table), flush=True)


if __name__ == "__main__":
  main()
