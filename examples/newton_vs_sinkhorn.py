"""Sinkhorn–Newton–Sparse against Sinkhorn: marginal error against iterations and seconds.

Two entropic OT problems at small ε in float64: the random assignment problem of Tang et al.
(C ~ U[0, 1], n = 200, η = 1/ε = 1200) and two 2-D Gaussian point clouds (n = 500, cost
‖x − y‖² rescaled to mean 1, ε = 1e-3). Each solver runs to a sequence of tolerances (the
tolerance is traced, so each solver compiles once); every run gives a point (iterations, seconds
after compilation (the median of three runs below a second), L1 marginal error reached).
Sinkhorn stops at 5 000 sweeps; it needs tens of thousands for 1e-6 on both problems.

  python examples/newton_vs_sinkhorn.py [--max-sweeps 5000] [--out examples/newton_vs_sinkhorn.png]

References:
  Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil, Xiao, Ying, "Accelerating Sinkhorn
  Algorithm with Sparse Newton Iterations", ICLR 2024.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import otkit  # noqa: E402


def problems():
  rng = np.random.default_rng(0)
  yield "assignment, n = 200, η = 1200", otkit.CostMatrix(rng.uniform(size=(200, 200))), 1 / 1200
  x = rng.normal(size=(500, 2))
  y = rng.normal(size=(500, 2)) * 0.8 + [1.0, 0.0]
  scale = 1 / np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1).mean())
  yield "2-D clouds, n = 500, ε = 1e-3", otkit.PointCloud(x * scale, y * scale), 1e-3


def trace(solve, geom, tolerances):
  """(iterations, seconds, error) of ``solve(geom, tol)`` for each tolerance it reaches."""
  jax.block_until_ready(solve(geom, tolerances[0]).f)  # compile
  points = []
  for tol in tolerances:
    times = []
    while len(times) < 3 and sum(times) < 1.0:
      start = time.perf_counter()
      out = jax.block_until_ready(solve(geom, tol))
      times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    points.append((int(out.n_iters), seconds, float(out.error)))
    if not bool(out.converged):
      break
  return np.array(points)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--max-sweeps", type=int, default=5000)
  parser.add_argument("--out", default="examples/newton_vs_sinkhorn.png")
  args = parser.parse_args()

  tolerances = np.geomspace(1e-1, 1e-11, 21)
  fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
  for row, (name, geom, eps) in enumerate(problems()):
    sns = jax.jit(lambda geom, tol: otkit.sinkhorn_newton(geom, epsilon=eps, tol=tol))
    sinkhorn = jax.jit(lambda geom, tol: otkit.sinkhorn(geom, epsilon=eps, tol=tol,
                                                        max_iters=args.max_sweeps))
    for label, solve, style in (("Sinkhorn–Newton–Sparse", sns, "o-"),
                                ("Sinkhorn", sinkhorn, "s--")):
      points = trace(solve, geom, tolerances)
      print(f"{name} | {label}: reached {points[-1, 2]:.2g} after {int(points[-1, 0])} "
            f"iterations, {points[-1, 1]:.3g} s")
      axes[row, 0].loglog(points[:, 0], points[:, 2], style, ms=3, label=label)
      axes[row, 1].loglog(points[:, 1], points[:, 2], style, ms=3, label=label)
    axes[row, 0].set(title=name, xlabel="iterations (sweeps + Newton steps)",
                     ylabel="L1 marginal error")
    axes[row, 1].set(title=name, xlabel="seconds after compilation", ylabel="L1 marginal error")
    for ax in axes[row]:
      ax.grid(True, which="both", alpha=0.3)
      ax.legend()
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
