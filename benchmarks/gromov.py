"""Entropic Gromov–Wasserstein side by side: otkit, ott-jax and POT on the same point clouds,
time to a given accuracy of the GW value; and the sorting-based lower bound.

Two clouds of n points: ``x ~ N(0, I_d)`` and ``y ~ N(0, diag(1 … 2))``, each centred and scaled
to diameter at most 1, squared Euclidean intra-costs, uniform weights, square loss, the product
initial coupling; ε = 0.005 at d = 2 and 0.001 at d = 32 (in POT's units: the linearised cost
``2 (constC − 2 A T B)``; ott-jax runs at ε / 2, its linearisation has no factor 2, which gives
the same iteration).

* otkit: ``gromov_wasserstein(PointCloud(x), PointCloud(y), epsilon=ε)`` in float32 (factored
  costs, online linearised cost), with ``outer_tol`` and the inner ``Sinkhorn(tol=…)`` taken
  from a ladder of increasing accuracy.
* ott-jax: ``GromovWasserstein(Sinkhorn(threshold=t), epsilon=ε/2, threshold=t)`` on
  ``QuadraticProblem(PointCloud(x), PointCloud(y))`` in float32 (jitted), ``t`` from a ladder.
* POT: ``ot.gromov.entropic_gromov_wasserstein2`` on the dense float64 cost matrices (its
  kernel-space Sinkhorn needs float64 at these ε), ``tol`` from a ladder.

Each library runs its ladder from the loosest setting and stops at the first whose value is
within ``--target`` (default 1e-3) relative of the reference value, a float64 otkit run at
``outer_tol=1e-5`` and inner ``tol=1e-6``; that setting's time (median after compilation) is its
time to accuracy. A run longer than ``--cap`` seconds ends the library's ladder. The table also
reports the growth of the resident memory during that run and, for the lower bound
(:func:`otkit.gw_lower_bound`, both signatures), its time and its ratio to the reference value.

  python benchmarks/gromov.py [--quick] [--cap 300] [--target 1e-3] [--out benchmarks/results]

Writes ``gromov.json`` and ``gromov.md`` (``.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import harness
import otkit

FULL = ((500, 2), (500, 32), (2000, 2), (2000, 32), (10000, 2), (10000, 32))
QUICK = ((500, 2), (500, 32))
EPSILON = {2: 0.005, 32: 0.001}
OTKIT_LADDER = ((1e-2, 1e-3), (3e-3, 1e-3), (1e-3, 1e-3), (3e-4, 1e-4), (1e-4, 1e-5))
OTT_LADDER = (1e-2, 1e-3, 1e-4, 1e-5)
POT_LADDER = (1e-5, 1e-7, 1e-9)
POT_MAX_N = 2000  # one outer step of POT at n = 10 000 is two dense 10⁴ × 10⁴ matrix products


def problem(n: int, d: int, seed: int = 0):
  rng = np.random.default_rng(seed)

  def cloud(scale):
    z = rng.normal(size=(n, d)) * scale
    z -= z.mean(0)
    return (z / (2.0 * np.sqrt(np.max(np.sum(z * z, 1))))).astype(np.float32)

  return cloud(np.ones(d)), cloud(np.linspace(1.0, 2.0, d))


def reference(x, y, eps):
  out = otkit.gromov_wasserstein(otkit.PointCloud(x.astype(np.float64)),
                                 otkit.PointCloud(y.astype(np.float64)), epsilon=eps,
                                 outer_tol=1e-5, max_outer_iters=5000,
                                 solver=otkit.Sinkhorn(tol=1e-6, max_iters=100000))
  return float(out.value), int(out.n_outer), bool(out.converged)


def otkit_runs(x, y, eps):
  fn = jax.jit(lambda x, y, outer, inner: otkit.gromov_wasserstein(
      otkit.PointCloud(x), otkit.PointCloud(y), epsilon=eps, outer_tol=outer,
      max_outer_iters=2000, solver=otkit.Sinkhorn(tol=inner, max_iters=20000)))
  for outer, inner in OTKIT_LADDER:
    timing = harness.timed(lambda: fn(x, y, outer, inner), repeats=2, budget_s=60, memory=True)
    out = timing.result
    yield (f"outer_tol {outer:g}, tol {inner:g}", timing, float(out.value), int(out.n_outer),
           bool(out.converged))


def ott_runs(x, y, eps):
  from ott.geometry import pointcloud
  from ott.problems.quadratic import quadratic_problem
  from ott.solvers.linear import sinkhorn
  from ott.solvers.quadratic import gromov_wasserstein

  @jax.jit
  def fn(x, y, threshold):
    prob = quadratic_problem.QuadraticProblem(pointcloud.PointCloud(x), pointcloud.PointCloud(y))
    solver = gromov_wasserstein.GromovWasserstein(
        sinkhorn.Sinkhorn(threshold=threshold, max_iterations=20000), epsilon=eps / 2,
        threshold=threshold, max_iterations=500)
    out = solver(prob)
    return out.primal_cost, jnp.sum(out.costs != -1), out.converged

  for t in OTT_LADDER:
    timing = harness.timed(lambda: fn(jnp.asarray(x), jnp.asarray(y), t), repeats=2,
                           budget_s=60, memory=True)
    value, iters, converged = timing.result
    yield f"threshold {t:g}", timing, float(value), int(iters), bool(converged)


def pot_runs(x, y, eps):
  import ot

  C1 = ot.dist(x.astype(np.float64), x.astype(np.float64))
  C2 = ot.dist(y.astype(np.float64), y.astype(np.float64))
  for tol in POT_LADDER:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      timing = harness.timed(lambda: ot.gromov.entropic_gromov_wasserstein2(
          C1, C2, epsilon=eps, tol=tol, max_iter=1000, log=True), repeats=1, warmup=False,
          memory=True)
    value, log = timing.result
    yield f"tol {tol:g}", timing, float(value), 10 * len(log["err"]), None


def to_accuracy(runs, ref: float, target: float, cap: float) -> dict:
  """The first run of a ladder within ``target`` of ``ref`` (or the last one tried)."""
  cell = {}
  for setting, timing, value, iters, converged in runs:
    error = abs(value - ref) / abs(ref)
    cell = dict(setting=setting, time=timing.median_s, compile=timing.compile_s,
                outer_iters=iters, value=value, rel_error=error, converged=converged,
                peak_mb=timing.peak_mb, reached=bool(error <= target))
    print("   ", cell, flush=True)
    if error <= target or timing.median_s > cap:
      break
  return cell


def lower_bounds(x, y, ref: float) -> dict:
  cells = {}
  for signature in ("eccentricity", "strength"):
    fn = jax.jit(lambda x, y: otkit.gw_lower_bound(otkit.PointCloud(x), otkit.PointCloud(y),
                                                   signature=signature))
    timing = harness.timed(lambda: fn(x, y), repeats=5)
    cells[signature] = dict(time=timing.median_s, ratio=float(timing.result) / ref)
  return cells


def main():
  parser = harness.grid_arguments(__doc__.splitlines()[0], "(n, d)")
  parser.add_argument("--target", type=float, default=1e-3)
  args = parser.parse_args()
  grid = harness.grid_rows(args, QUICK, FULL)
  stem = "gromov.quick" if args.quick else "gromov"
  rows, data = [], []
  for n, d in grid:
    eps = EPSILON[d]
    x, y = problem(n, d)
    start = time.perf_counter()
    ref, ref_iters, ref_converged = reference(x, y, eps)
    print(n, d, "reference", ref, ref_iters, ref_converged, time.perf_counter() - start,
          flush=True)
    entry = dict(n=n, d=d, epsilon=eps, reference=ref, reference_outer_iters=ref_iters,
                 reference_converged=ref_converged, target=args.target)
    for name, runs in (("otkit", otkit_runs), ("ott-jax", ott_runs), ("POT", pot_runs)):
      if name == "POT" and n > POT_MAX_N:
        entry[name] = dict(skipped=f"n > {POT_MAX_N}: dense n × n products per outer step")
        continue
      print(n, d, name, flush=True)
      entry[name] = to_accuracy(runs(x, y, eps), ref, args.target, args.cap)
    entry["lower_bound"] = lower_bounds(x, y, ref)
    data.append(entry)

    def show(name):
      c = entry[name]
      if "skipped" in c:
        return "not run"
      mark = "" if c["reached"] else f" (target not reached: {c['rel_error']:.0e})"
      return (f"{c['time']:.2f} s, {c['outer_iters']} outer, {c['setting']}, "
              f"+{c['peak_mb']:.0f} MB{mark}")

    def ratio(peer):
      c = entry[peer]
      if "skipped" in c:
        return "–"
      sign = "" if c["reached"] else "≥ "
      return f"{sign}{c['time'] / entry['otkit']['time']:.1f}×"

    lb = entry["lower_bound"]
    rows.append([n, d, eps, show("otkit"), show("ott-jax"), show("POT"), ratio("ott-jax"),
                 ratio("POT"),
                 f"{1e3 * lb['eccentricity']['time']:.1f} ms, {lb['eccentricity']['ratio']:.2f}"
                 f" / {lb['strength']['ratio']:.2f}"])
    table = "\n".join([
        f"Entropic GW between two Gaussian clouds of n points (diameter ≤ 1), {harness.machine()}. "
        f"Time (median after compilation) to a GW value within {args.target:g} relative of a "
        "float64 reference, outer iterations and setting of the first run of each library's "
        "ladder that reaches it, growth of the resident memory during that run. otkit and "
        "ott-jax float32, POT float64 (dense matrices). Lower bound: time of the eccentricity "
        "bound, and both bounds (eccentricity / strength) as fractions of the GW value.", "",
        *harness.markdown_table(["n", "d", "ε", "otkit", "ott-jax", "POT", "ott-jax / otkit",
                                 "POT / otkit", "lower bound"], rows)])
    print(harness.write_results(args.out, stem, data, table), flush=True)


if __name__ == "__main__":
  main()
