"""Sinkhorn side by side: otkit, ott-jax, POT and GeomLoss on the same point clouds.

For each (n, d, ε) of the grid: x ~ N(0, I_d), y ~ N(e₁, 0.64 I_d) in float32, squared-Euclidean
cost rescaled to mean 1, uniform weights. Each solver runs until the L1 marginal error (rows plus
columns, recomputed here from its potentials or plan by one common online reduction) is at most
1e-3, or until a time cap:

* otkit: ``otkit.sinkhorn`` with its defaults (tol 1e-3).
* ott-jax: ``ott.solvers.linear.sinkhorn.Sinkhorn()`` with its defaults (threshold 1e-3,
  max_iterations 2000); if the default cap is not enough, the row says so (not converged).
* POT: ``ot.sinkhorn(..., method="sinkhorn_log")`` run in blocks of 10 iterations with warm
  starts until the error is reached (the error check is not timed).
* GeomLoss: ``SamplesLoss("sinkhorn", p=2, debias=False, potentials=True)`` (tensorized backend),
  whose ε-scaling runs a fixed schedule; the scaling is raised (0.5, 0.7, 0.9, 0.95, 0.98, 0.99)
  until the error is reached and the time of the first one that reaches it is reported. When the
  next schedule would exceed the time cap, the row reports its predicted time (iterations ×
  measured time per iteration) as a lower bound.

A peer's time cap is ``--cap`` seconds, raised to 3× otkit's time at that point for ott-jax and
1.5× for POT and GeomLoss, so that a capped peer is slower than otkit by at least that factor.

Times are medians after compilation (compilation reported apart); peak memory is the growth of
the resident set size during the call, sampled every 2 ms. Also times the value and gradient of
the Sinkhorn divergence at n = 4000, d = 2.

  python benchmarks/sinkhorn.py [--quick] [--cap 30] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import harness
import otkit
from otkit.geometry import _reductions as R

TOL = 1e-3
# The common error is recomputed here in float32, a few per cent away from each solver's own
# measure near its stop: an error within 10 % of the tolerance counts as reached, for every solver.
REACHED = 1.1 * TOL
# A peer runs for at least this multiple of otkit's time before it is declared capped.
PEER_CAP_FACTOR = {"ott-jax": 3.0, "POT": 1.5, "GeomLoss": 1.5}


# ----------------------------------------------------------------------------- measurement


def timed(fn, repeats: int, budget: float) -> harness.Timing:
  """``fn`` compiled by a first call, then run up to ``repeats`` times within ``budget`` seconds
  (none if the first call already took that long). The peak memory is that of the first run
  after compilation (of the compiling run if the budget allows no other)."""
  return harness.timed(fn, repeats=repeats, budget_s=budget, min_repeats=0, memory=True)


# ----------------------------------------------------------------------------- data and error


def point_clouds(n: int, d: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = rng.normal(size=(n, d)) * 0.8
  y[:, 0] += 1.0
  mean_cost = np.mean(np.sum(x**2, 1)) + np.mean(np.sum(y**2, 1)) - 2 * x.mean(0) @ y.mean(0)
  scale = 1.0 / math.sqrt(mean_cost)
  return (x * scale).astype(np.float32), (y * scale).astype(np.float32)


@jax.jit
def _marginal_error(x, y, f, g, epsilon):
  """L1 error of both marginals of ``P = a b e^{(f + g − C)/ε}`` with uniform a, b (online)."""
  geom = otkit.PointCloud(x, y)
  n, m = geom.shape
  log_a, log_b = -jnp.log(n), -jnp.log(m)
  rows = jnp.exp(log_a + f / epsilon + R.lse_rows(geom, log_b + g / epsilon, epsilon))
  cols = jnp.exp(log_b + g / epsilon + R.lse_rows(geom.transpose(), log_a + f / epsilon, epsilon))
  return jnp.sum(jnp.abs(rows - 1.0 / n)) + jnp.sum(jnp.abs(cols - 1.0 / m))


def marginal_error(x, y, f, g, epsilon) -> float:
  f, g = (jnp.asarray(np.asarray(v, np.float32).reshape(-1)) for v in (f, g))
  return float(_marginal_error(jnp.asarray(x), jnp.asarray(y), f, g, jnp.float32(epsilon)))


# ----------------------------------------------------------------------------- solvers


def run_otkit(x, y, eps, cap):
  solve = jax.jit(lambda x, y: otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=eps, tol=TOL,
                                              max_iters=20000))
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  t = timed(lambda: solve(xj, yj), 5, cap)
  out = t.result
  error = marginal_error(x, y, out.f, out.g, eps)
  return dict(time=t.median_s, compile=t.compile_s, iters=int(out.n_iters), memory=t.peak_mb,
              error=error, converged=error <= REACHED)


def run_ott(x, y, eps, cap):
  from ott.geometry import pointcloud
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn

  xj, yj = jnp.asarray(x), jnp.asarray(y)

  def solver(max_iterations):
    solver = sinkhorn.Sinkhorn() if max_iterations is None else sinkhorn.Sinkhorn(
        max_iterations=max_iterations)
    fn = jax.jit(lambda x, y: solver(linear_problem.LinearProblem(
        pointcloud.PointCloud(x, y, epsilon=eps))))
    return lambda: fn(xj, yj)

  # Per-iteration time from a short run decides whether the default cap of 2000 fits the budget.
  per_iter = timed(solver(50), 1, cap).median_s / 50
  max_iterations = None
  if 2000 * per_iter > cap:
    max_iterations = max(10, int(cap / per_iter) // 10 * 10)
  t = timed(solver(max_iterations), 3, cap)
  out = t.result
  n = x.shape[0]
  # ott's potentials include the weights: P = e^{(f + g − C)/ε}; otkit's: P = a b e^{(f + g − C)/ε}.
  f = np.asarray(out.f) + eps * math.log(n)
  g = np.asarray(out.g) + eps * math.log(n)
  error = marginal_error(x, y, f, g, eps)
  return dict(time=t.median_s, compile=t.compile_s, iters=int(out.n_iters), memory=t.peak_mb,
              error=error, converged=error <= REACHED, capped=max_iterations is not None)


def run_pot(x, y, eps, cap):
  import ot

  n = x.shape[0]
  a = np.full(n, 1.0 / n, np.float32)
  M = ot.dist(x, y)  # squared Euclidean
  elapsed, iters, warm, error = 0.0, 0, None, np.inf
  peak = 0.0
  while error > REACHED and elapsed < cap:
    with warnings.catch_warnings(), harness.PeakMemory() as memory:
      warnings.simplefilter("ignore")
      seconds, (P, log) = harness.clock(lambda: ot.sinkhorn(
          a, a, M, eps, method="sinkhorn_log", numItermax=10, stopThr=0.0, warmstart=warm,
          log=True))
      elapsed += seconds
    peak = max(peak, memory.growth)
    iters += 10
    warm = (log["log_u"], log["log_v"])
    error = float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - a).sum())
    if not np.isfinite(error):
      break
  return dict(time=elapsed, compile=0.0, iters=iters, memory=peak, error=error,
              converged=error <= REACHED)


def run_geomloss(x, y, eps, cap):
  import torch
  from geomloss import SamplesLoss
  from geomloss._legacy.sinkhorn_divergence import epsilon_schedule

  torch.set_num_threads(os.cpu_count() or 1)
  xt, yt = torch.from_numpy(x), torch.from_numpy(y)
  diameter = float(torch.cdist(xt, yt).max())
  blur = math.sqrt(eps / 2)  # GeomLoss's p = 2 cost is ‖x − y‖²/2 and its ε is blur²
  result = None
  for scaling in (0.5, 0.7, 0.9, 0.95, 0.98, 0.99):
    iters = len(epsilon_schedule(2, diameter, blur, scaling))
    predicted = None if result is None else result["time"] / result["iters"] * iters
    if predicted is not None and predicted > cap:
      # The next schedule would not fit in the time cap. Each of its iterations costs what the
      # last run's did, so reaching the tolerance takes at least its predicted time: reported
      # (as a lower bound, `predicted=True`) instead of the shorter failed run.
      result.update(time=predicted, predicted=True, next_scaling=scaling)
      break
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=False,
                       potentials=True, backend="tensorized")
    with harness.PeakMemory() as memory, torch.no_grad():
      elapsed, (F, G) = harness.clock(lambda: loss(xt, yt))
    # Potentials for the half cost at ε/2 are half of those for ‖x − y‖² at ε.
    error = marginal_error(x, y, 2 * F.numpy(), 2 * G.numpy(), eps)
    result = dict(time=elapsed, compile=0.0, iters=iters, memory=memory.growth, error=error,
                  converged=error <= REACHED, scaling=scaling)
    if error <= REACHED:
      break
  return result


SOLVERS = {"otkit": run_otkit, "ott-jax": run_ott, "POT": run_pot, "GeomLoss": run_geomloss}


def available(name: str) -> bool:
  module = {"otkit": "otkit", "ott-jax": "ott", "POT": "ot", "GeomLoss": "geomloss"}[name]
  try:
    __import__(module)
    return True
  except ImportError:
    return False


# ----------------------------------------------------------------------------- divergence


def divergence_timings(n: int, d: int, epsilons, cap):
  x, y = point_clouds(n, d, seed=1)
  rows = []
  for eps in epsilons:
    with jax.enable_x64(True):
      reference = float(otkit.sinkhorn_divergence(
          x.astype(np.float64), y.astype(np.float64), epsilon=eps,
          solver=otkit.Sinkhorn(tol=1e-7, max_iters=50000, grad_mode="envelope")).value)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    # The divergence's default gradients (envelope: no linear solve), with the benchmark's tol.
    solver = otkit.Sinkhorn(tol=TOL, max_iters=20000, grad_mode="envelope")
    ours = jax.jit(jax.value_and_grad(
        lambda x: otkit.sinkhorn_divergence(x, yj, epsilon=eps, solver=solver).value))
    t = timed(lambda: ours(xj), 3, cap)
    rows.append(dict(solver="otkit", epsilon=eps, time=t.median_s, compile=t.compile_s,
                     memory=t.peak_mb, value=float(t.result[0]), reference=reference))
    if available("ott-jax"):
      from ott.geometry import pointcloud
      from ott.tools import sinkhorn_divergence as ott_div

      theirs = jax.jit(jax.value_and_grad(lambda x: ott_div.sinkhorn_divergence(
          pointcloud.PointCloud, x, yj, epsilon=eps)[1].divergence))
      t = timed(lambda: theirs(xj), 3, cap)
      rows.append(dict(solver="ott-jax", epsilon=eps, time=t.median_s, compile=t.compile_s,
                       memory=t.peak_mb, value=float(t.result[0]), reference=reference))
    if available("GeomLoss"):
      import torch
      from geomloss import SamplesLoss

      loss = SamplesLoss("sinkhorn", p=2, blur=math.sqrt(eps / 2), backend="tensorized")
      yt = torch.from_numpy(y)

      def geomloss_value_and_grad():
        xt = torch.from_numpy(x).requires_grad_(True)
        value = loss(xt, yt)
        value.backward()
        return 2 * float(value)  # half cost → ‖x − y‖²

      t = timed(geomloss_value_and_grad, 3, cap)
      rows.append(dict(solver="GeomLoss", epsilon=eps, time=t.median_s, compile=0.0,
                       memory=t.peak_mb, value=t.result, reference=reference))
  return rows


# ----------------------------------------------------------------------------- report


geometric_mean = harness.geometric_mean


def markdown(results, divergence, meta) -> str:
  solvers = [s for s in SOLVERS if any(r["solver"] == s for r in results)]
  lines = [f"Sinkhorn to L1 marginal error ≤ {TOL:g}, float32, {meta['machine']}. Time after "
           "compilation (s), iterations, peak RSS growth (MB); ✗ = stopped before the tolerance "
           "(default iteration cap or the time cap; common error above 1.1 × tolerance), its "
           "time is then a lower bound; (predicted) = the time GeomLoss's next ε-schedule would "
           "take at its measured time per iteration.", "",
           "| n | d | ε/mean C | " + " | ".join(solvers) + " | ott-jax / otkit | POT / otkit | GeomLoss / otkit |",
           "|---|---|---|" + "---|" * (len(solvers) + 3)]
  keys = sorted({(r["n"], r["d"], r["epsilon"]) for r in results}, key=lambda k: (k[1], k[0], -k[2]))
  by = {(r["n"], r["d"], r["epsilon"], r["solver"]): r for r in results}
  for key in keys:
    cells = []
    for s in solvers:
      r = by.get((*key, s))
      if r is None:
        cells.append("—")
        continue
      mark = "" if r["converged"] else (" ✗ (predicted)" if r.get("predicted") else " ✗")
      cells.append(f"{r['time']:.3g}{mark} / {r['iters']} it / {r['memory']:.0f} MB")
    ratios = []
    for peer in ("ott-jax", "POT", "GeomLoss"):
      mine, theirs = by.get((*key, "otkit")), by.get((*key, peer))
      if mine and theirs:
        sign = "" if theirs["converged"] else "≥ "
        ratios.append(f"{sign}{theirs['time'] / mine['time']:.2g}×")
      else:
        ratios.append("—")
    lines.append(f"| {key[0]} | {key[1]} | {key[2]:g} | " + " | ".join(cells + ratios) + " |")
  lines += ["", "Geometric-mean speed-up of otkit (peer time / otkit time):", ""]
  for peer in ("ott-jax", "POT", "GeomLoss"):
    for label, keep in (("all ε", lambda e: True), ("ε ≤ 0.01", lambda e: e <= 0.01)):
      ratios = [by[(*k, peer)]["time"] / by[(*k, "otkit")]["time"] for k in keys
                if keep(k[2]) and (*k, peer) in by and (*k, "otkit") in by]
      if ratios:
        lines.append(f"- {peer}, {label}: {geometric_mean(ratios):.2f}× "
                     f"(min {min(ratios):.2f}×, {len(ratios)} points)")
  if divergence:
    lines += ["", f"Sinkhorn divergence, value and gradient, n = {meta['divergence_n']}, d = 2 "
              "(time after compilation, s; value vs a float64 reference at tol 1e-7):", "",
              "| ε | solver | time | compile | value | reference |", "|---|---|---|---|---|---|"]
    for r in divergence:
      lines.append(f"| {r['epsilon']:g} | {r['solver']} | {r['time']:.3g} | {r['compile']:.3g} | "
                   f"{r['value']:.5g} | {r['reference']:.5g} |")
  return "\n".join(lines) + "\n"


def write_results(out: Path, name: str, results, divergence, meta) -> str:
  """Writes ``{name}.json`` and ``{name}.md`` (called after every grid point, so a stopped run
  keeps what it measured); returns the Markdown table."""
  return harness.write_results(out, name, dict(meta=meta, grid=results, divergence=divergence),
                               markdown(results, divergence, meta))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a small grid (n ≤ 1000)")
  parser.add_argument("--cap", type=float, default=30.0,
                      help="seconds per peer and grid point (raised with otkit's time)")
  parser.add_argument("--solvers", default=",".join(SOLVERS), help="comma-separated subset")
  parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
  parser.add_argument("--resume", action="store_true",
                      help="keep the grid points (and divergence timings) already in the JSON "
                           "file and measure the rest")
  args = parser.parse_args(argv)

  sizes = (500, 1000) if args.quick else (1000, 4000, 10000)
  solvers = [s for s in args.solvers.split(",") if available(s)]
  divergence_n = 1000 if args.quick else 4000
  meta = dict(machine=harness.machine(), divergence_n=divergence_n, quick=args.quick, cap_s=args.cap)
  backend = "" if jax.default_backend() == "cpu" else f"_{jax.default_backend()}"
  name = f"sinkhorn{backend}{'_quick' if args.quick else ''}"
  out = Path(args.out)
  results, divergence = [], []
  if args.resume and (out / f"{name}.json").exists():
    previous = json.loads((out / f"{name}.json").read_text())
    results, divergence = previous["grid"], previous.get("divergence", [])
  done = {(r["n"], r["d"], r["epsilon"], r["solver"]) for r in results}
  for d in (2, 64):
    for n in sizes:
      x, y = point_clouds(n, d)
      for eps in (0.1, 0.01, 0.001):
        ours = next((r for r in results if (r["n"], r["d"], r["epsilon"], r["solver"])
                     == (n, d, eps, "otkit")), None)
        for solver in solvers:
          if (n, d, eps, solver) in done:
            continue
          cap = args.cap
          if ours is not None:
            cap = max(cap, PEER_CAP_FACTOR[solver] * ours["time"])
          row = SOLVERS[solver](x, y, eps, cap)
          if solver == "otkit":
            ours = row
          row.update(solver=solver, n=n, d=d, epsilon=eps)
          results.append(row)
          print(json.dumps(row), flush=True)
          write_results(out, name, results, divergence, meta)
  for row in [] if divergence else divergence_timings(divergence_n, 2, (0.1, 0.01), args.cap):
    divergence.append(row)
    print(json.dumps(row), flush=True)
  print(write_results(out, name, results, divergence, meta))


if __name__ == "__main__":
  main()
