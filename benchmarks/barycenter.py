"""Fixed-support barycenters side by side: otkit, ott-jax and POT on the same histograms.

k = 10 histograms on one support of n points drawn uniformly in the unit square (squared
Euclidean cost, mean ≈ 1/3), each a Gaussian bump of random centre and width plus a floor of
1e-4, normalised; uniform λ; n = 1000 at ε ∈ {0.01, 0.001} and n = 10 000 at ε = 0.01:

* otkit: ``otkit.barycenter(x, hists, epsilon=ε, solver=Sinkhorn(tol=1e-4, anneal=True))``
  (ε-annealing as by default) twice: in float32 (log domain, online: no n × n matrix), and in
  float64, where its sweeps are matrix products with the stored kernel ``exp(−C/ε)`` (the
  kernel fits the memory budget at these sizes), falling back to the log domain for sweeps
  whose kernel products underflow.
* ott-jax: ``FixedBarycenter(threshold=1e-4)`` on ``PointCloud(x, epsilon=ε)`` (log domain),
  float32.
* POT: ``ot.bregman.barycenter(..., stopThr=1e-5)`` on the dense cost matrix, float64, with
  ``method="sinkhorn"`` (kernel space: matrix products) where its kernel ``exp(−C/ε)`` holds
  the problem, else ``method="sinkhorn_log"``.

Each solver stops by its own criterion, so the table reports, beside the time (median after
compilation; compile apart), the L1 distance of its barycenter to a reference (POT's kernel
iteration at ``stopThr=1e-12`` (1e-9 for n > 2000) where its kernel holds the problem, else otkit at ``tol=1e-5``) and
the growth of the resident memory during the call. A run longer than ``--cap`` seconds is
not repeated; POT's log domain is run only if as many iterations as otkit's fit in the cap, and
is otherwise reported by its time per iteration.

  python benchmarks/barycenter.py [--quick] [--cap 300] [--out benchmarks/results]

Writes ``barycenter.json`` and ``barycenter.md`` (``.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import harness
import otkit

jax.config.update("jax_enable_x64", True)  # float64 for the second otkit run; float32 stays

K = 10
# (n, ε) pairs; at n = 10 000 and ε = 0.001 one run of each log-domain solver takes many minutes
# on 2 cores.
FULL = ((1000, 0.01), (1000, 0.001), (10000, 0.01))
QUICK = ((1000, 0.01), (1000, 0.001))


def problem(n: int, seed: int = 0):
  """Support ``(n, 2)`` and ``K`` histograms ``(K, n)``, float32."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.0, 1.0, (n, 2))
  hists = []
  for _ in range(K):
    centre, width = rng.uniform(0.2, 0.8, 2), rng.uniform(0.05, 0.2)
    h = np.exp(-np.sum((x - centre) ** 2, 1) / (2 * width ** 2)) + 1e-4
    hists.append(h / h.sum())
  return x.astype(np.float32), np.stack(hists).astype(np.float32)


def run_otkit(x, hists, eps, tol=1e-4):
  solver = otkit.Sinkhorn(tol=tol, max_iters=20000, anneal=True)
  out = harness.timed(lambda: otkit.barycenter(x, hists, epsilon=eps, solver=solver),
                      repeats=2, budget_s=60, memory=True)
  res = out.result
  return out, np.asarray(res.weights, np.float64), int(res.n_iters), bool(res.converged)


def run_ott(x, hists, eps):
  from ott.geometry import pointcloud
  from ott.problems.linear import barycenter_problem
  from ott.solvers.linear import discrete_barycenter

  solver = discrete_barycenter.FixedBarycenter(threshold=1e-4, max_iterations=20000)
  uniform = jnp.full((K,), 1.0 / K, x.dtype)

  @jax.jit
  def fn(x, hists):
    geom = pointcloud.PointCloud(x, epsilon=eps)
    out = solver(barycenter_problem.FixedBarycenterProblem(geom, hists, uniform))
    return out.histogram, jnp.sum(out.errors[:, 0] >= 0)

  out = harness.timed(lambda: fn(jnp.asarray(x), jnp.asarray(hists)), repeats=2, budget_s=60,
                      memory=True)
  histogram, checks = out.result
  errors_checked = int(checks)  # errors are recorded every 10 iterations
  return out, np.asarray(histogram, np.float64), 10 * errors_checked, None


def run_pot(x, hists, eps, cap, min_iters, stop=1e-5):
  import ot

  cost = ot.dist(x.astype(np.float64), x.astype(np.float64))
  A = hists.T.astype(np.float64)
  kernel_ok = bool(np.exp(-cost.max() / eps) > 1e-300)
  method = "sinkhorn" if kernel_ok else "sinkhorn_log"
  if method == "sinkhorn_log":
    # One iteration costs 2K log-sum-exps over n × n in NumPy: time a few, and run to the
    # tolerance only if the iterations otkit needed would fit in the cap.
    start = time.perf_counter()
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      ot.bregman.barycenter(A, cost, eps, method=method, numItermax=3, stopThr=0.0)
    per_iter = (time.perf_counter() - start) / 3
    if per_iter * min_iters > cap:
      return None, None, None, dict(method=method, per_iteration=per_iter)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = harness.timed(lambda: ot.bregman.barycenter(A, cost, eps, method=method, stopThr=stop,
                                                      numItermax=20000, log=True),
                        repeats=2, budget_s=cap, warmup=False, memory=True)
  bary, log = out.result
  return out, np.asarray(bary), int(log["niter"]), dict(method=method)


def reference(x, hists, eps):
  """A tight barycenter: POT's kernel-space iteration in float64 where its kernel holds the
  problem, else otkit at ``tol=1e-5`` (the same fixed point: tests/solvers/test_barycenter.py)."""
  import ot

  cost = ot.dist(x.astype(np.float64), x.astype(np.float64))
  if np.exp(-cost.max() / eps) > 1e-300:
    stop = 1e-12 if x.shape[0] <= 2000 else 1e-9
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      bary = ot.bregman.barycenter(hists.T.astype(np.float64), cost, eps, method="sinkhorn",
                                   stopThr=stop, numItermax=5000)
    return bary, f"POT sinkhorn, stopThr {stop:g}"
  out = otkit.barycenter(x, hists, epsilon=eps, solver=otkit.Sinkhorn(tol=1e-5, max_iters=20000))
  return np.asarray(out.weights, np.float64), f"otkit, tol 1e-5 (error {float(out.error):.1e})"


def main():
  args = harness.grid_arguments(__doc__.splitlines()[0], "(n, ε)").parse_args()
  grid = harness.grid_rows(args, QUICK, FULL)
  rows, data = [], []
  for n, eps in grid:
    x, hists = problem(n)
    ref, ref_name = reference(x, hists, eps)
    entry = dict(n=n, k=K, epsilon=eps, reference=ref_name)
    cells = {}
    x64, hists64 = x.astype(np.float64), hists.astype(np.float64)
    hists64 = hists64 / hists64.sum(axis=1, keepdims=True)
    for name, run in (("otkit", lambda: run_otkit(x, hists, eps)),
                      ("otkit f64", lambda: run_otkit(x64, hists64, eps)),
                      ("ott-jax", lambda: run_ott(x, hists, eps)),
                      ("POT", lambda: run_pot(x, hists, eps, args.cap,
                                              cells["otkit"]["iters"]))):
      timing, bary, iters, extra = run()
      if timing is None:  # too slow to run: a lower bound at otkit's number of iterations
        cells[name] = dict(extra, time=math.nan,
                           lower_bound=extra["per_iteration"] * cells["otkit"]["iters"])
        continue
      cells[name] = dict(time=timing.median_s, compile=timing.compile_s, iters=iters,
                         peak_mb=timing.peak_mb, l1_to_reference=float(np.abs(bary - ref).sum()),
                         **({"converged": extra} if isinstance(extra, bool) else extra or {}))
      print(n, eps, name, cells[name], flush=True)
    entry.update(cells)
    data.append(entry)
    t = {name: cells[name]["time"] for name in cells}

    def show(name):
      c = cells[name]
      if math.isnan(c["time"]):
        return (f"{c['per_iteration']:.2f} s per iteration ({c['method']}): > cap at "
                f"otkit's {cells['otkit']['iters']} iterations")
      extra = f", {c['method']}" if "method" in c else ""
      return (f"{c['time']:.2f} s ({c['iters']} it.{extra}), L1 {c['l1_to_reference']:.1e}, "
              f"+{c['peak_mb']:.0f} MB")

    def ratio(peer, own="otkit"):
      if math.isnan(t[peer]):
        return f"≥ {cells[peer]['lower_bound'] / t[own]:.0f}×"
      return f"{t[peer] / t[own]:.1f}×"

    rows.append([n, eps, show("otkit"), show("otkit f64"), show("ott-jax"), show("POT"),
                 ratio("ott-jax"), ratio("POT"), ratio("POT", "otkit f64")])
  table = "\n".join([
      f"k = {K} histograms on n points in the unit square, {harness.machine()}. Time after "
      "compilation (median), iterations, L1 distance to the reference barycenter, growth of the "
      "resident memory during the call (POT's n × n float64 cost matrix, 8n² bytes, is built "
      "before it). otkit (float32) and ott-jax: float32, log domain; otkit f64: float64, kernel "
      "products; POT float64.", "",
      *harness.markdown_table(["n", "ε", "otkit", "otkit f64", "ott-jax", "POT",
                               "ott-jax / otkit", "POT / otkit", "POT / otkit f64"], rows)])
  stem = "barycenter.quick" if args.quick else "barycenter"
  print(harness.write_results(args.out, stem, data, table))


if __name__ == "__main__":
  main()
