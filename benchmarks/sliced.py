"""Sliced Wasserstein: otkit against POT and ott-jax (time, peak memory), and the variance of the
plain and control-variate estimators.

Each (library, n, d, L) runs in a fresh Python process, so that its peak resident memory
(``resource.getrusage``, and ``VmHWM`` on Linux) is its own: imports, the data (float32, generated in the process),
compilation and the computation. Times are medians over repeated calls after a first call, which
for the JAX libraries includes tracing and compilation and is reported apart as ``compile``.
``otkit`` sorts with NumPy on CPU (through a host callback); ``otkit-xla`` forces XLA's sort, the
path used on GPU and TPU. Data: ``x ~ N(0, I_d)``, ``y ~ N(1, 0.64 I_d)``, drawn with NumPy in
the measuring process (and copied to the device for the JAX libraries).

Usage::

  python benchmarks/sliced.py           # n ∈ {1e4, 1e5}, d ∈ {3, 64, 784}, L ∈ {128, 1024}
  python benchmarks/sliced.py --quick    # a small grid (a minute or two)

Writes ``benchmarks/results/sliced.json`` and ``benchmarks/results/sliced.md`` (with ``--quick``:
``sliced.quick.json`` and ``sliced.quick.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
from pathlib import Path

import harness

RESULTS = Path(__file__).resolve().parent / "results"
LIBRARIES = ("otkit", "otkit-xla", "pot", "ott")
FULL_GRID = dict(n=(10_000, 100_000), d=(3, 64, 784), L=(128, 1024))
QUICK_GRID = dict(n=(2_000,), d=(3, 64), L=(128,))
# XLA's CPU sort needs ~20 s per call at n = 1e5, L = 1024: the forced-XLA path is timed at n = 1e4.
XLA_MAX_N = 10_000
TIMEOUT_S = 1200


# ---------------------------------------------------------------------------------------------
# One measurement (runs in its own process)


def _ru_maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _data(n: int, d: int, to_device):
  """``x ~ N(0, I_d)`` and ``y ~ N(1, 0.64 I_d)`` in float32, each handed to ``to_device`` as soon
  as it is drawn, so that at most one cloud exists twice (host and device copy) at a time."""
  import numpy as np

  rng = np.random.default_rng(0)
  x = to_device(rng.standard_normal((n, d), dtype=np.float32))
  y = rng.standard_normal((n, d), dtype=np.float32)
  y *= 0.8
  y += 1.0
  return x, to_device(y)


def _runner(library: str, n_projections: int):
  """``run(i)`` computing SW₂² with seed/key ``i``, returning a float (synchronised)."""
  if library == "pot":
    import ot

    def run(i, x, y):
      return float(ot.sliced_wasserstein_distance(x, y, n_projections=n_projections, seed=i)) ** 2

    return run, lambda cloud: cloud

  import jax
  import jax.numpy as jnp

  if library == "ott":
    from ott.tools import sliced

    fn = jax.jit(lambda key, x, y: sliced.sliced_wasserstein(x, y, n_proj=n_projections,
                                                              rng=key)[0])
  else:
    import otkit

    impl = "xla" if library == "otkit-xla" else "auto"

    def fn(key, x, y):
      return otkit.sliced_wasserstein(key, x, y, n_projections=n_projections,
                                      sort_impl=impl).value

  def run(i, x, y):
    return float(jax.block_until_ready(fn(jax.random.key(i), x, y)))

  # an owned, aligned device copy (``jnp.asarray`` may alias the NumPy buffer, and XLA then
  # copies a misaligned one at every call)
  return run, lambda cloud: jnp.array(cloud, copy=True)


def measure(library: str, n: int, d: int, n_projections: int) -> dict:
  run, to_device = _runner(library, n_projections)
  x, y = _data(n, d, to_device)
  baseline = harness.peak_rss_mb()
  first, value = harness.clock(lambda: run(0, x, y))  # key 0; tracing and compilation
  repeats = 5 if first < 3 else 3 if first < 30 else 2
  keys = iter(range(1, repeats + 1))  # a new key for every timed call
  timing = harness.timed(lambda: run(next(keys), x, y), repeats=repeats, warmup=False)
  median = timing.median_s
  return dict(library=library, n=n, d=d, L=n_projections, value=value, first_call_s=first,
              median_s=median, runs=timing.times, compile_s=max(first - median, 0.0),
              peak_rss_mb=harness.peak_rss_mb(), ru_maxrss_mb=_ru_maxrss_mb(),
              rss_before_call_mb=baseline)


def _spawn(library: str, n: int, d: int, n_projections: int) -> dict:
  return harness.spawn(__file__, (library, n, d, n_projections), timeout_s=TIMEOUT_S,
                       describe=dict(library=library, n=n, d=d, L=n_projections))


# ---------------------------------------------------------------------------------------------
# Variance of the estimators


def _variance_datasets(quick: bool):
  import numpy as np

  rng = np.random.default_rng(0)
  gauss_x = rng.normal(size=(1000, 50))
  gauss_y = rng.normal(size=(1000, 50)) * np.linspace(0.5, 2, 50) + np.linspace(-1, 1, 50)
  rng = np.random.default_rng(0)
  blob = 0.3 * rng.normal(size=(1024, 3))
  u, xi = rng.uniform(0, 2 * np.pi, 1024), rng.normal(size=1024)
  ring = 2 * np.stack([np.cos(u), np.sin(u), 0.1 * xi], axis=1) + np.array([1.0, 0.0, 0.0])
  data = {"Gaussian (d=50, n=1000)": (gauss_x, gauss_y),
          "point cloud: blob vs ring (d=3, n=1024)": (blob, ring)}
  try:
    from sklearn.datasets import load_digits
  except ImportError:
    return data
  digits = load_digits()
  images = digits.data / 16.0
  data["images: digits 0–4 vs 5–9 (8×8, d=64)"] = (images[digits.target < 5],
                                                    images[digits.target >= 5])
  return data


def variance_study(quick: bool) -> list[dict]:
  import jax
  import numpy as np

  import otkit

  n_keys = 20 if quick else 100
  rows = []
  for name, (x, y) in _variance_datasets(quick).items():
    x, y = np.float32(x), np.float32(y)
    ref = otkit.sliced_wasserstein(jax.random.key(10**6), x, y, n_projections=100_000)
    for n_projections in (10, 100):
      keys = jax.random.split(jax.random.key(0), n_keys)
      values = {}
      for cv in (None, "lower", "upper"):
        fn = jax.jit(jax.vmap(lambda k, cv=cv: otkit.sliced_wasserstein(
            k, x, y, n_projections=n_projections, control_variate=cv).value))
        values[cv] = np.asarray(fn(keys), dtype=np.float64)
      var = {cv: float(v.var(ddof=1)) for cv, v in values.items()}
      rows.append(dict(dataset=name, L=n_projections, keys=n_keys, reference=float(ref.value),
                       mean={str(k): float(v.mean()) for k, v in values.items()},
                       var={str(k): v for k, v in var.items()},
                       ratio_lower=var[None] / var["lower"], ratio_upper=var[None] / var["upper"]))
      print(f"  variance {name} L={n_projections}: ×{rows[-1]['ratio_lower']:.1f} (lower) "
            f"×{rows[-1]['ratio_upper']:.1f} (upper)", flush=True)
  return rows


# ---------------------------------------------------------------------------------------------
# Report


def _fmt_time(r):
  if r is None:
    return "—"
  if "median_s" not in r:
    return "timeout" if "timeout" in r.get("error", "") else "failed"
  return f"{r['median_s']:.3g}"


def _fmt_mem(r):
  return "—" if r is None or "peak_rss_mb" not in r else f"{r['peak_rss_mb']:.0f}"


def markdown(results: list[dict], variance: list[dict], meta: dict) -> str:
  index = {(r["library"], r["n"], r["d"], r["L"]): r for r in results}
  configs = sorted({(r["n"], r["d"], r["L"]) for r in results})
  lines = [
      f"Sliced W₂² between two clouds of n float32 points in R^d with L projections, "
      f"{meta['machine']}: median seconds per call after a first call (for otkit the first "
      "call's extra time, tracing and compilation, is `compile`), and the peak resident memory "
      "of a fresh process in MB (imports and the data included).",
      "",
      "| n | d | L | otkit s | otkit (XLA sort) s | POT s | ott-jax s | POT / otkit | "
      "otkit compile s | otkit MB | POT MB | ott-jax MB |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for n, d, n_proj in configs:
    row = {lib: index.get((lib, n, d, n_proj)) for lib in LIBRARIES}
    ours, pot = row["otkit"], row["pot"]
    ratio = (f"{pot['median_s'] / ours['median_s']:.1f}×" if ours and pot and "median_s" in ours
             and "median_s" in pot else "—")
    compile_s = f"{ours['compile_s']:.2f}" if ours and "compile_s" in ours else "—"
    lines.append(f"| {n:,} | {d} | {n_proj} | {_fmt_time(ours)} | {_fmt_time(row['otkit-xla'])} | "
                 f"{_fmt_time(pot)} | {_fmt_time(row['ott'])} | {ratio} | {compile_s} | "
                 f"{_fmt_mem(ours)} | {_fmt_mem(pot)} | {_fmt_mem(row['ott'])} |")
  if variance:
    lines += [
        "",
        f"Variance of the SW₂² estimators over {variance[0]['keys']} keys: "
        "Var(plain) / Var(control variate) (higher is better).",
        "",
        "| data | L | Var(plain) | ÷ lower CV | ÷ upper CV |",
        "|---|---|---|---|---|",
    ]
    for v in variance:
      lines.append(f"| {v['dataset']} | {v['L']} | {v['var']['None']:.3g} | "
                   f"{v['ratio_lower']:.1f}× | {v['ratio_upper']:.1f}× |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small grid, 20 keys")
  parser.add_argument("--out", type=Path, default=RESULTS, help="output folder")
  parser.add_argument("--libraries", default=",".join(LIBRARIES), help="comma-separated subset")
  parser.add_argument("--n", help="comma-separated sizes replacing the grid's n")
  parser.add_argument("--d", help="comma-separated dimensions replacing the grid's d")
  parser.add_argument("--skip-variance", action="store_true")
  parser.add_argument("--update", action="store_true",
                      help="merge into the existing results: re-measured rows replace old ones, "
                           "the others (and the variance study, with --skip-variance) are kept")
  parser.add_argument("--worker", nargs=4, metavar=("LIB", "N", "D", "L"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.worker:
    lib, n, d, n_proj = args.worker
    print(json.dumps(measure(lib, int(n), int(d), int(n_proj))), flush=True)
    return
  grid = dict(QUICK_GRID if args.quick else FULL_GRID)
  for axis in ("n", "d"):
    if getattr(args, axis):
      grid[axis] = tuple(int(float(v)) for v in getattr(args, axis).split(","))
  libraries = args.libraries.split(",")
  unknown = sorted(set(libraries) - set(LIBRARIES))
  if unknown:
    parser.error(f"unknown libraries {unknown}; choose from {', '.join(LIBRARIES)}")
  results = []
  for n in grid["n"]:
    for d in grid["d"]:
      for n_proj in grid["L"]:
        for lib in libraries:
          if lib == "otkit-xla" and n > XLA_MAX_N:
            continue
          r = _spawn(lib, n, d, n_proj)
          results.append(r)
          print(f"{lib:>9} n={n:>6} d={d:>3} L={n_proj:>4}: "
                f"{r.get('median_s', float('nan')):8.3f} s  "
                f"{r.get('peak_rss_mb', float('nan')):7.0f} MB {r.get('error', '')}", flush=True)
  variance = [] if args.skip_variance else variance_study(args.quick)
  meta = dict(machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, {platform.system()}",
              quick=args.quick, python=platform.python_version())
  stem = "sliced.quick" if args.quick else "sliced"
  if args.update and (args.out / f"{stem}.json").exists():
    old = json.loads((args.out / f"{stem}.json").read_text())
    fresh = {(r["library"], r["n"], r["d"], r["L"]) for r in results}
    results = [r for r in old["timing"] if (r["library"], r["n"], r["d"], r["L"]) not in fresh] + \
        results
    variance = variance or old.get("variance", [])
  print(harness.write_results(args.out, stem, dict(meta=meta, timing=results, variance=variance),
                              markdown(results, variance, meta)))


if __name__ == "__main__":
  main()
