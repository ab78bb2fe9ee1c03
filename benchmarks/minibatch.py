"""Mini-batch OT and exact assignment: otkit against POT, ott-jax and scipy on the same batches.

Two parts, in one process:

* ``assignment``: ``otkit.assignment`` on a batch of square cost matrices (one call) against
  ``scipy.optimize.linear_sum_assignment`` and POT's ``ot.emd2`` looped in Python, for two kinds
  of costs: ``sqeuclid`` (``‖x_i − y_j‖²`` between two Gaussian clouds in 2-D, the mini-batch
  case; such low-rank costs are the harder ones for augmenting-path solvers) and ``uniform``
  (i.i.d. U[0, 1) entries).
* ``estimator``: the mini-batch estimator over ``k`` random pairs of batches of ``m`` points
  drawn from ``x ~ N(0, I_d)``, ``y ~ N(e₁, 0.64 I_d)`` (``n`` points each, float32):
  ``otkit.minibatch_ot(inner="exact")`` against POT's ``ot.emd2`` looped over the same batches
  (with ``ot.dist`` for the cost), and ``otkit.minibatch_ot(inner="sinkhorn")`` against ott-jax's
  Sinkhorn ``vmap``-ed over the same batches, both at the same ε (absolute, 5 % of the mean
  batch cost) and tolerance.

otkit's exact solver is timed three ways: the default (``method="auto"``: SciPy's solver on the
host through one callback per chunk on CPU, its loop split between threads), the same on one
thread, and the in-graph JAX search (``method="jax"``, the default on accelerators).

JAX timings (``benchmarks/harness.py``): the first call's extra time (tracing and compilation)
is reported as ``compile``; the time is the median of ``--repeats`` later calls (fewer once they
would add up to 30 s), each ended by ``block_until_ready``. Loops of
POT and scipy run once (they are long and have no warm-up); when a loop would exceed
``--peer-cap`` seconds it runs on the first pairs only and the time is scaled to all of them
(marked ``~``).

Usage::

  python benchmarks/minibatch.py           # the grid below (a few minutes on 2 CPU cores)
  python benchmarks/minibatch.py --quick   # a smaller grid (about a minute)

Writes ``benchmarks/results/minibatch.json`` and ``minibatch.md`` (``minibatch.quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import ot
from scipy.optimize import linear_sum_assignment

import harness
import otkit
from otkit import _host
from otkit.estimators import _minibatch
from otkit.solvers import _assignment

RESULTS = Path(__file__).resolve().parent / "results"
FULL = dict(
    assignment=[(64, 1000), (512, 100)],
    estimator=[(10_000, 2, 64, 1000), (10_000, 32, 64, 1000), (10_000, 2, 256, 200),
               (100_000, 2, 512, 100)],
)
QUICK = dict(assignment=[(64, 200), (256, 10)], estimator=[(10_000, 2, 64, 200)])
EPS_FRACTION = 0.05
REPEAT_BUDGET_S = 30.0
TOL = 1e-3


def _time_jax(fn, repeats):
  """``(median seconds, compile seconds, output)`` of a JAX computation (long calls: fewer
  repeats)."""
  timing = harness.timed(fn, repeats=repeats, budget_s=REPEAT_BUDGET_S)
  return timing.median_s, timing.compile_s, timing.result


def _time_loop(fn, items, cap):
  """Runs ``fn`` over ``items``; past ``cap`` seconds, stops and scales to all items."""
  seconds, scaled, values = harness.time_loop(fn, items, cap)
  return seconds, scaled, np.asarray(values)


def _costs(kind, n, count, rng):
  if kind == "uniform":
    return rng.random((count, n, n)).astype(np.float32)
  x = rng.standard_normal((count, n, 2)).astype(np.float32)
  y = (rng.standard_normal((count, n, 2)) * 0.8 + np.array([1.0, 0.0])).astype(np.float32)
  return np.sum((x[:, :, None] - y[:, None]) ** 2, axis=-1)


@contextlib.contextmanager
def _one_host_thread():
  """The host path's loop on one thread (no split between the pool's workers)."""
  saved = _assignment._PARALLEL_MIN_SIZE
  _assignment._PARALLEL_MIN_SIZE = np.inf
  try:
    yield
  finally:
    _assignment._PARALLEL_MIN_SIZE = saved


def _time_methods(fn, args):
  """``fn(method)`` timed for the default method, the host path on one thread and the in-graph
  search: ``{name: (seconds, compile seconds, output)}``."""
  times = dict(otkit=_time_jax(lambda: fn("auto"), args.repeats))
  with _one_host_thread():
    times["host1"] = _time_jax(lambda: fn("host"), args.repeats)
  times["jax"] = _time_jax(lambda: fn("jax"), args.repeats)
  return times


def bench_assignment(n, count, kind, args):
  rng = np.random.default_rng(0)
  costs = _costs(kind, n, count, rng)
  device = jnp.asarray(costs)
  solvers = {m: jax.jit(functools.partial(otkit.assignment, method=m)) for m in _assignment.METHODS}
  times = _time_methods(lambda m: solvers[m](device), args)

  def scipy_one(c):
    rows, cols = linear_sum_assignment(c)
    return c[rows, cols].sum(dtype=np.float64)

  w = np.full(n, 1.0 / n)
  t_scipy, scaled, values = _time_loop(scipy_one, costs, args.peer_cap)
  t_pot, pot_scaled, _ = _time_loop(lambda c: ot.emd2(w, w, c), costs, args.peer_cap)
  row = dict(part="assignment", kind=kind, n=n, problems=count, scipy_s=t_scipy,
             scipy_scaled=scaled, pot_s=t_pot, pot_scaled=pot_scaled,
             method=_assignment.resolve_method("auto"), host_threads=_host.pool()[1])
  for name, (t, t_compile, out) in times.items():
    got = np.asarray(out.cost, np.float64)[: len(values)]
    row[f"{name}_s"], row[f"{name}_compile_s"] = t, t_compile
    row[f"{name}_max_rel_diff"] = float(np.max(np.abs(got - values) / np.maximum(values, 1e-12)))
    row[f"{name}_converged"] = bool(np.all(np.asarray(out.converged)))
  row["jax_mean_steps"] = float(np.mean(np.asarray(times["jax"][2].n_iters)))
  return row


def _ott_sinkhorn(eps):
  from ott.geometry import pointcloud
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn

  solver = sinkhorn.Sinkhorn(threshold=TOL, max_iterations=2000)

  def one(xb, yb):
    geom = pointcloud.PointCloud(xb, yb, epsilon=eps)
    out = solver(linear_problem.LinearProblem(geom))
    return out.transport_cost_at_geom(geom), out.converged

  return jax.jit(jax.vmap(one))


def bench_estimator(n, d, m, k, args):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((n, d), dtype=np.float32)
  y = rng.standard_normal((n, d), dtype=np.float32) * 0.8
  y[:, 0] += 1.0
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  key = jax.random.key(0)
  key_x, key_y = jax.random.split(key)
  ix = np.asarray(_minibatch.sample_batches(key_x, n, None, m, k))
  iy = np.asarray(_minibatch.sample_batches(key_y, n, None, m, k))
  row = dict(part="estimator", n=n, d=d, m=m, k=k)

  exact = lambda method: otkit.minibatch_ot(key, xj, yj, batch_size=m, n_batches=k,
                                            exact_method=method)
  times = _time_methods(exact, args)
  w = np.full(m, 1.0 / m)
  pot_one = lambda pair: ot.emd2(w, w, ot.dist(x[pair[0]], y[pair[1]]))
  row["pot_s"], row["pot_scaled"], values = _time_loop(pot_one, list(zip(ix, iy)), args.peer_cap)
  for name, (t, t_compile, out) in times.items():
    got = np.asarray(out.costs, np.float64)[: len(values)]
    row[f"{name}_exact_s"], row[f"{name}_exact_compile_s"] = t, t_compile
    row[f"{name}_exact_max_rel_diff"] = float(np.max(np.abs(got - values) / values))
    row[f"{name}_exact_converged"] = bool(out.converged)
  row["exact_value"] = float(times["otkit"][2].value)

  eps = EPS_FRACTION * float(np.mean(values))
  row["epsilon"] = eps
  entropic = lambda: otkit.minibatch_ot(key, xj, yj, batch_size=m, n_batches=k, inner="sinkhorn",
                                        epsilon=eps, solver=otkit.Sinkhorn(tol=TOL))
  row["otkit_sinkhorn_s"], row["otkit_sinkhorn_compile_s"], out_s = _time_jax(entropic, args.repeats)
  row["otkit_sinkhorn_converged"] = bool(out_s.converged)
  ott_fn = _ott_sinkhorn(eps)
  xb, yb = jnp.asarray(x[ix]), jnp.asarray(y[iy])
  row["ott_s"], row["ott_compile_s"], (ott_costs, ott_conv) = _time_jax(lambda: ott_fn(xb, yb),
                                                                         args.repeats)
  row["ott_converged"] = float(np.mean(np.asarray(ott_conv)))
  row["sinkhorn_max_rel_diff"] = float(np.max(np.abs(np.asarray(out_s.costs) - np.asarray(ott_costs))
                                          / np.asarray(ott_costs)))
  return row


def _ratio(a, b, scaled=False):
  return f"{'~' if scaled else ''}{a / b:.1f}×"


def _times(r, prefix, suffix=""):
  return " / ".join(f"{r[f'{name}{suffix}_{prefix}s']:.3g}" for name in ("otkit", "host1", "jax"))


def markdown(rows, header):
  lines = [header, "", "otkit's exact solver three ways: **otkit** = the default "
           "(`method=\"auto\"`: the host's exact solver, an ε-scaling auction finished by exact "
           "augmenting paths compiled by Numba, through one `pure_callback` per chunk on CPU, its "
           "loop split between threads), **1 thread** = the same on one thread, "
           "**JAX** = the in-graph augmenting-path search (the default on GPU/TPU).", "",
           "### Exact assignment: one `otkit.assignment` call vs `scipy.optimize."
           "linear_sum_assignment` and POT's `ot.emd2` looped", "",
           "| costs | n | problems | otkit (s) | 1 thread (s) | JAX (s) | scipy (s) | POT (s) "
           "| scipy / otkit | POT / otkit | POT / 1 thread | compile otkit / 1 thread / JAX (s) "
           "| max rel. diff |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["part"] == "assignment":
      diff = max(r[f"{name}_max_rel_diff"] for name in ("otkit", "host1", "jax"))
      lines.append(
          f"| {r['kind']} | {r['n']} | {r['problems']} | {r['otkit_s']:.3g} | {r['host1_s']:.3g} "
          f"| {r['jax_s']:.3g} | {'~' if r['scipy_scaled'] else ''}{r['scipy_s']:.3g} | "
          f"{'~' if r['pot_scaled'] else ''}{r['pot_s']:.3g} | "
          f"{_ratio(r['scipy_s'], r['otkit_s'], r['scipy_scaled'])} | "
          f"{_ratio(r['pot_s'], r['otkit_s'], r['pot_scaled'])} | "
          f"{_ratio(r['pot_s'], r['host1_s'], r['pot_scaled'])} | {_times(r, 'compile_')} | "
          f"{diff:.1e} |")
  lines += ["", "### Mini-batch estimator over k pairs of batches of m points", "",
            "| n | d | m | k | otkit exact (s) | 1 thread (s) | JAX exact (s) | POT emd2 loop (s) "
            "| POT / otkit | POT / 1 thread | POT / JAX | otkit Sinkhorn (s) "
            "| ott-jax Sinkhorn vmap (s) | ott / otkit | compile exact otkit / 1 thread / JAX (s) "
            "| compile Sinkhorn otkit / ott (s) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["part"] == "estimator":
      lines.append(
          f"| {r['n']} | {r['d']} | {r['m']} | {r['k']} | {r['otkit_exact_s']:.3g} | "
          f"{r['host1_exact_s']:.3g} | {r['jax_exact_s']:.3g} | "
          f"{'~' if r['pot_scaled'] else ''}{r['pot_s']:.3g} | "
          f"{_ratio(r['pot_s'], r['otkit_exact_s'], r['pot_scaled'])} | "
          f"{_ratio(r['pot_s'], r['host1_exact_s'], r['pot_scaled'])} | "
          f"{_ratio(r['pot_s'], r['jax_exact_s'], r['pot_scaled'])} | {r['otkit_sinkhorn_s']:.3g} | "
          f"{r['ott_s']:.3g} | {_ratio(r['ott_s'], r['otkit_sinkhorn_s'])} | "
          f"{_times(r, 'compile_', '_exact')} | "
          f"{r['otkit_sinkhorn_compile_s']:.3g} / {r['ott_compile_s']:.3g} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="a small grid (about a minute)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--peer-cap", type=float, default=60.0,
                      help="seconds after which a POT/scipy loop is cut and scaled")
  args = parser.parse_args()
  grid = QUICK if args.quick else FULL
  stem = "minibatch.quick" if args.quick else "minibatch"
  RESULTS.mkdir(exist_ok=True)
  info = dict(machine=platform.machine(), jax=jax.__version__, backend=jax.default_backend(),
              pot=ot.__version__, cpus=_host.pool()[1])
  header = (f"float32, {info['machine']} ({info['cpus']} cores), jax {info['jax']} on "
            f"{info['backend']}, POT {info['pot']}. Times after compilation (median of up to "
            f"{args.repeats}); POT and scipy loops run once (~ = cut at {args.peer_cap:.0f} s and "
            "scaled).")
  rows = []

  def record(row):  # results are written as they come
    rows.append(row)
    print(json.dumps(row), flush=True)
    harness.write_results(RESULTS, stem, dict(info=info, rows=rows), markdown(rows, header))

  for n, count in grid["assignment"]:
    for kind in ("sqeuclid", "uniform"):
      record(bench_assignment(n, count, kind, args))
  for n, d, m, k in grid["estimator"]:
    record(bench_estimator(n, d, m, k, args))
  print(markdown(rows, header))


if __name__ == "__main__":
  main()
