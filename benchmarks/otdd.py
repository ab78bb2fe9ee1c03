"""OTDD: otkit against a POT reference at small n, and otkit alone at n = 1e4–5e4 (time, memory).

The reference is built from POT: the label-distance table (Bures–Wasserstein between the class
Gaussians with SciPy's ``sqrtm``, or exact ``ot.emd2`` between the class samples), the dense
augmented cost ``‖x − x'‖² + W²[y, y']`` and exact outer OT (``ot.emd2``): OTDD² with ε = 0.
otkit solves the debiased entropic problem online; its gap to the reference shrinks with ε.
Microsoft's PyTorch ``otdd`` is not on the package index this machine can reach (and there is no
network), so it is reported as unavailable rather than timed.

Every measurement runs in a fresh Python process, so its peak resident memory (``VmHWM``) is
its own: imports, the data (float32), compilation and the computation. otkit is first called on
the same shapes with a loose tolerance (compilation plus the passes of a loose solve, reported
as ``first call``); the timed call that follows reuses the compiled code. Data: ``k`` classes with centres ``2·N(0, I_d)`` and unit
within-class spread; the target dataset is drawn the same way and shifted by 0.5 in every
coordinate. ε is given relative to the mean squared distance between the features.

Usage::

  python benchmarks/otdd.py            # reference n ∈ {200, 500, 1000}; scale n ∈ {1e4, 2e4, 5e4}
  python benchmarks/otdd.py --quick    # a small grid (a couple of minutes)

Writes ``benchmarks/results/otdd.json`` and ``benchmarks/results/otdd.md`` (``otdd.quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
from pathlib import Path

import harness

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT_S = 3600
REFERENCE_GRID = dict(n=(200, 500, 1000), d=16, k=5, eps=(0.01, 0.001))
SCALE_GRID = dict(n=(10_000, 20_000, 50_000), d=64, k=10, eps=0.01, exact_max_n=10_000)
QUICK_REFERENCE = dict(n=(200,), d=16, k=5, eps=(0.01,))
QUICK_SCALE = dict(n=(2_000,), d=64, k=10, eps=0.01, exact_max_n=2_000)
# Sweeps allowed at the largest size: enough to measure memory and the time per sweep.
CAPPED_N, CAPPED_ITERS = 50_000, 3


# ---------------------------------------------------------------------------------------------
# One measurement (runs in its own process)


def datasets(n: int, d: int, k: int):
  """Two labelled float32 datasets of ``n`` points in ``k`` classes (see the module notes)."""
  import numpy as np

  rng = np.random.default_rng(0)

  def one(shift):
    centres = 2.0 * rng.standard_normal((k, d), dtype=np.float32)
    labels = rng.integers(0, k, n)
    x = centres[labels] + rng.standard_normal((n, d), dtype=np.float32) + np.float32(shift)
    return x, labels

  return (*one(0.0), *one(0.5))


def mean_sq_distance(xs, xt) -> float:
  import numpy as np

  a, b = xs[:1000].astype(np.float64), xt[:1000].astype(np.float64)
  return float(((a[:, None] - b[None]) ** 2).sum(-1).mean())


def reference_otdd(xs, labels_s, xt, labels_t, label_distance: str) -> float:
  """POT brute force: label table, dense augmented cost, exact ``ot.emd2``."""
  import numpy as np
  import ot
  import scipy.linalg

  xs, xt = xs.astype(np.float64), xt.astype(np.float64)

  def bures(a, b):
    ca, cb = np.cov(a.T, bias=True), np.cov(b.T, bias=True)
    root = scipy.linalg.sqrtm(ca).real
    return (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb)
            - 2 * np.trace(scipy.linalg.sqrtm(root @ cb @ root).real))

  def emd(a, b):
    return ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), ot.dist(a, b))

  inner = bures if label_distance == "gaussian" else emd
  cs, ct = np.unique(labels_s), np.unique(labels_t)
  table = np.array([[inner(xs[labels_s == i], xt[labels_t == j]) for j in ct] for i in cs])
  cost = ot.dist(xs, xt) + table[np.searchsorted(cs, labels_s)][:, np.searchsorted(ct, labels_t)]
  return float(ot.emd2(np.full(len(xs), 1 / len(xs)), np.full(len(xt), 1 / len(xt)), cost,
                       numItermax=10**8))


def measure(library: str, n: int, d: int, k: int, label_distance: str, eps_rel: float) -> dict:
  xs, labels_s, xt, labels_t = datasets(n, d, k)
  row = dict(library=library, n=n, d=d, k=k, label_distance=label_distance, eps_rel=eps_rel)
  if library == "pot":
    import ot  # noqa: F401  (imports are not timed)
    import scipy.linalg  # noqa: F401

    row["time_s"], row["value"] = harness.clock(
        lambda: reference_otdd(xs, labels_s, xt, labels_t, label_distance))
    row["peak_rss_mb"] = harness.peak_rss_mb()
    return row
  import otkit

  epsilon = eps_rel * mean_sq_distance(xs, xt)
  max_iters = CAPPED_ITERS if n >= CAPPED_N else 20_000

  def run(tol):
    # otkit.otdd's default solver (annealed, envelope gradients) with the benchmark's tol and cap;
    # the "exact" label distances use the same tol and cap.
    solver = otkit.Sinkhorn(tol=tol, max_iters=max_iters, anneal=True, grad_mode="envelope")
    return otkit.otdd(xs, labels_s, xt, labels_t, epsilon=epsilon, label_distance=label_distance,
                      solver=solver)

  # The first call compiles everything the timed call uses (the solver's tol is traced).
  row["compile_s"], _ = harness.clock(lambda: run(1e9))
  baseline = harness.peak_rss_mb()
  row["time_s"], out = harness.clock(lambda: run(1e-3))
  row.update(value=float(out.value), epsilon=epsilon,
             converged=bool(out.converged), iterations=int(out.ot.n_iters),
             iterations_self=[int(out.ot_s.n_iters), int(out.ot_t.n_iters)],
             capped=max_iters == CAPPED_ITERS, peak_rss_mb=harness.peak_rss_mb(),
             rss_before_call_mb=baseline)
  return row


def _spawn(*config) -> dict:
  keys = ("library", "n", "d", "k", "label_distance", "eps_rel")
  return harness.spawn(__file__, config, timeout_s=TIMEOUT_S, describe=dict(zip(keys, config)))


# ---------------------------------------------------------------------------------------------
# Report


def microsoft_otdd() -> str:
  try:  # the distribution, not a module: this script is itself importable as `otdd`
    version = importlib.metadata.version("otdd")
  except importlib.metadata.PackageNotFoundError:
    version = None
  if version is not None:
    return f"otdd {version} is installed, but not timed by this script"
  return ("not installed: Microsoft's `otdd` is not on the package index this machine can reach "
          "and there is no network, so it is not compared here")


def _f(value, fmt="{:.3g}"):
  return "—" if value is None else fmt.format(value)


def markdown(reference: list[dict], scale: list[dict], meta: dict) -> str:
  pot = {(r["n"], r["label_distance"]): r for r in reference if r["library"] == "pot"}
  lines = [
      f"OTDD² between two labelled float32 datasets, {meta['machine']}, jax {meta['jax']}. "
      "otkit: debiased entropic OTDD (tol 1e-3 on the L1 marginal error), seconds after "
      "compilation; the reference: POT's exact `ot.emd2` on the dense augmented cost with the "
      "label table computed in NumPy/SciPy (ε = 0). Peak resident memory of a fresh process (MB). "
      f"Microsoft `otdd`: {meta['microsoft_otdd']}.",
      "",
      "| n per dataset | d | classes | label distance | ε / mean ‖x−x'‖² | otkit s | otkit iters | "
      "POT reference s | POT / otkit | rel. gap to exact | otkit MB | POT MB |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in (r for r in reference if r["library"] == "otkit"):
    ref = pot.get((r["n"], r["label_distance"]), {})
    if "error" in r:
      lines.append(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['label_distance']} | {r['eps_rel']:g} "
                   f"| {r['error']} | | | | | | |")
      continue
    ratio = ref["time_s"] / r["time_s"] if "time_s" in ref else None
    gap = abs(r["value"] - ref["value"]) / ref["value"] if "value" in ref else None
    conv = "" if r["converged"] else " ✗"
    lines.append(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['label_distance']} | {r['eps_rel']:g} | "
                 f"{_f(r['time_s'])}{conv} | {r['iterations']} | {_f(ref.get('time_s'))} | "
                 f"{_f(ratio, '{:.2g}×')} | {_f(gap, '{:.1e}')} | {_f(r['peak_rss_mb'], '{:.0f}')} | "
                 f"{_f(ref.get('peak_rss_mb'), '{:.0f}')} |")
  lines += [
      "",
      "otkit alone at scale (no n×m matrix is stored; a dense float32 cost would take "
      "4·n² bytes per problem, and the debiased form solves three).",
      "",
      "`first call` is the compiling call (compilation plus a solve at a loose tolerance, "
      "whose passes over the data dominate at this size); `time` is the timed call after it.",
      "",
      "| n per dataset | d | classes | label distance | ε / mean ‖x−x'‖² | first call s | time s | "
      "sweeps (xy; xx, yy) | converged | peak MB |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in scale:
    if "error" in r:
      lines.append(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['label_distance']} | {r['eps_rel']:g} "
                   f"| {r['error']} | | | | |")
      continue
    sweeps = f"{r['iterations']}; {r['iterations_self'][0]}, {r['iterations_self'][1]}"
    conv = ("capped at " + str(CAPPED_ITERS) + " sweeps" if r["capped"] and not r["converged"]
            else str(r["converged"]))
    lines.append(f"| {r['n']:,} | {r['d']} | {r['k']} | {r['label_distance']} | {r['eps_rel']:g} | "
                 f"{_f(r['compile_s'])} | {_f(r['time_s'])} | {sweeps} | {conv} | "
                 f"{r['peak_rss_mb']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small grids")
  parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
  parser.add_argument("--skip-scale", action="store_true")
  parser.add_argument("--skip-reference", action="store_true")
  parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    lib, n, d, k, label_distance, eps_rel = args.worker
    print(json.dumps(measure(lib, int(n), int(d), int(k), label_distance, float(eps_rel))),
          flush=True)
    return
  ref_grid = QUICK_REFERENCE if args.quick else REFERENCE_GRID
  scale_grid = QUICK_SCALE if args.quick else SCALE_GRID
  reference, scale = [], []

  def report(r):
    print(f"{r['library']:>6} n={r['n']:>6} d={r['d']:>3} {r['label_distance']:>8} "
          f"eps={r['eps_rel']:g}: {r.get('time_s', float('nan')):8.3f} s "
          f"{r.get('peak_rss_mb', float('nan')):7.0f} MB {r.get('error', '')}", flush=True)

  if not args.skip_reference:
    for n in ref_grid["n"]:
      for label_distance in ("gaussian", "exact"):
        reference.append(_spawn("pot", n, ref_grid["d"], ref_grid["k"], label_distance, 0.0))
        report(reference[-1])
        for eps_rel in ref_grid["eps"]:
          reference.append(_spawn("otkit", n, ref_grid["d"], ref_grid["k"], label_distance,
                                  eps_rel))
          report(reference[-1])
  if not args.skip_scale:
    for n in scale_grid["n"]:
      for label_distance in ("gaussian", "exact"):
        if label_distance == "exact" and n > scale_grid["exact_max_n"]:
          continue
        scale.append(_spawn("otkit", n, scale_grid["d"], scale_grid["k"], label_distance,
                            scale_grid["eps"]))
        report(scale[-1])
  import jax

  meta = dict(machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, {platform.system()}",
              jax=jax.__version__, quick=args.quick, python=platform.python_version(),
              microsoft_otdd=microsoft_otdd())
  stem = "otdd.quick" if args.quick else "otdd"
  print(harness.write_results(args.out, stem, dict(meta=meta, reference=reference, scale=scale),
                              markdown(reference, scale, meta)))


if __name__ == "__main__":
  main()
