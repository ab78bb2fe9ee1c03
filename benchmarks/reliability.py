"""Reliability report: every public entry point against bad input, and thousands of random valid
problems checked independently.

Two parts, both built from ``tests/reliability`` (the same catalogue and problems as the tests):

* **Bad input.** Each public entry point (otkit, otkit.flows, otkit.flows.dataset, otkit.nn,
  otkit.flow_matching and the command line) is called with its valid arguments and with every bad input of the catalogue
  (wrong rank, mismatched dimensions, NaN, inf, bad weights, empty, wrong dtype, non-array types,
  wrong static options). Outcomes: a named error (``ValueError``/``TypeError`` naming the
  argument), a right answer (legitimate input: finite and equal to its reference), a reported
  failure (the result code says so, where that is the stated behaviour), a *silent* wrong output,
  or an *internal crash* (any other exception, or an error not naming the argument).
* **Fuzzed valid problems.** Random balanced and unbalanced problems for ``otkit.solve`` (sizes 1
  to 1000, dimensions 1 to 16, float16 to float64, scales 1e-20 to 1e20, ε from 1e-5 to 1e3 ×
  the mean cost, τ in (0, 1], zero and near-zero weights, duplicated points), each judged against
  its plan's marginals and primal value recomputed in float64 NumPy; and random 1-D problems for
  ``otkit.wasserstein_1d`` against POT's exact ``ot.wasserstein_1d``.

Target: 0 silent wrong outputs and 0 internal crashes.

Usage::

  python benchmarks/reliability.py               # 3 000 solver problems, 600 1-D problems
  python benchmarks/reliability.py --quick       # 300 and 100

Writes ``benchmarks/results/reliability.json`` and ``.md`` (``--quick``: ``reliability.quick.*``).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the oracles' data is float64; problems cast their own

import numpy as np  # noqa: E402

import harness  # noqa: E402

_TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(_TESTS / "reliability"), str(_TESTS)]  # the catalogue, problems and helpers
import catalogue  # noqa: E402
import problems  # noqa: E402

import otkit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OUTCOMES = ("named", "right", "reported", "silent", "crash")


def bad_input_matrix() -> tuple[list[dict], list[str]]:
  rows, failures = [], []
  for entry in catalogue.entries():
    counts = collections.Counter()
    cells = catalogue.cells(entry)
    for cell in cells:
      outcome, detail = catalogue.judge(entry, cell)
      counts[outcome] += 1
      if outcome not in catalogue.ACCEPTED:
        failures.append(f"{entry.name} / {cell.category} / {cell.label}: {outcome} ({detail})")
    categories = sorted({c.category for c in cells} - {"valid"})
    rows.append(dict(entry=entry.name, categories=len(categories), cells=len(cells), **{
        o: counts[o] for o in OUTCOMES}))
    print(f"{entry.name:32s} {dict(counts)}", flush=True)
  return rows, failures


def _group(entry: str) -> str:
  for prefix, group in (("flows.dataset.", "otkit.flows.dataset"), ("flows.", "otkit.flows"),
                        ("nn.", "otkit.nn"), ("flow_matching.", "otkit.flow_matching"),
                        ("cli ", "command line")):
    if entry.startswith(prefix):
      return group
  return "otkit"


def _judge_solve(p: problems.Params) -> tuple[str, str]:
  problem = problems.make(p)
  try:
    out = problems.solve(problem)
    tol = float(problems.SOLVER.tol_for(jax.numpy.dtype(p.dtype)))
    return problems.judge(problem, out, tol)
  except (ValueError, TypeError) as err:
    named = "`" in str(err)
    return ("named" if named else "crash"), str(err).splitlines()[0]
  except Exception as err:  # noqa: BLE001 - an internal crash
    return "crash", f"{type(err).__name__}: {err}"


def _judge_1d(rng: np.random.Generator) -> tuple[str, str, str]:
  import ot

  n, m = (int(rng.choice([1, 2, 5, 17, 100, 300])) for _ in range(2))
  dtype = str(rng.choice(["float64", "float32"]))
  p = int(rng.choice([1, 2]))
  scale = 10.0 ** rng.uniform(-3, 3)
  u = np.round(rng.normal(size=n) * 4) / 4 * scale  # ties
  v = np.round(rng.normal(size=m) * 4) / 4 * scale + scale
  a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, m)
  a[rng.integers(0, n)] = 0.0 if n > 1 else a[0]
  a, b = a / a.sum(), b / b.sum()
  cast = [np.asarray(w, dtype) for w in (u, v, a, b)]
  try:
    ours = float(otkit.wasserstein_1d(*cast, p=p))
  except (ValueError, TypeError) as err:
    return dtype, ("named" if "`" in str(err) else "crash"), str(err).splitlines()[0]
  except Exception as err:  # noqa: BLE001
    return dtype, "crash", f"{type(err).__name__}: {err}"
  ref = float(ot.wasserstein_1d(*(np.asarray(w, float) for w in cast), p=p))
  ulp = float(np.finfo(dtype).eps)
  size = (2 * max(np.abs(u).max(), np.abs(v).max())) ** p
  if np.isfinite(ours) and abs(ours - ref) <= 8 * ulp * (n + m) * size + 1e-12 * size:
    return dtype, "right", ""
  return dtype, "silent", f"{ours!r} vs POT {ref!r} (n={n}, m={m}, p={p})"


def fuzz(n_solve: int, n_1d: int, seed: int) -> tuple[dict, list[str]]:
  rng = np.random.default_rng(seed)
  counts, failures = collections.defaultdict(collections.Counter), []
  start = time.time()
  for i in range(n_solve):
    p = problems.draw(rng)
    outcome, detail = _judge_solve(p)
    key = f"solve {p.dtype} {'balanced' if p.tau == 1.0 else 'unbalanced'}"
    counts[key][outcome] += 1
    if outcome in ("silent", "crash"):
      failures.append(f"{p}: {outcome} ({detail})")
    if (i + 1) % 250 == 0:
      print(f"  {i + 1} solver problems, {time.time() - start:.0f} s", flush=True)
  for _ in range(n_1d):
    dtype, outcome, detail = _judge_1d(rng)
    counts[f"wasserstein_1d {dtype}"][outcome] += 1
    if outcome in ("silent", "crash"):
      failures.append(f"wasserstein_1d: {outcome} ({detail})")
  return {k: dict(v) for k, v in sorted(counts.items())}, failures


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="300 + 100 fuzzed problems")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  n_solve, n_1d = (300, 100) if args.quick else (3000, 600)

  start = time.time()
  rows, failures = bad_input_matrix()
  matrix_s = time.time() - start
  header = ["entry point", "categories", "cells", "named errors", "right answers",
            "reported", "silent wrong", "internal crashes"]
  table = harness.markdown_table(header, [[r["entry"], r["categories"], r["cells"], r["named"],
                                           r["right"], r["reported"], r["silent"], r["crash"]]
                                          for r in rows])
  totals = {o: sum(r[o] for r in rows) for o in OUTCOMES}
  table.append(f"| **all {len(rows)}** | ≥ {min(r['categories'] for r in rows)} | "
               f"{sum(r['cells'] for r in rows)} | {totals['named']} | {totals['right']} | "
               f"{totals['reported']} | {totals['silent']} | {totals['crash']} |")

  groups = collections.defaultdict(lambda: collections.Counter())
  for r in rows:
    group = _group(r["entry"])
    groups[group].update({k: r[k] for k in ("cells", *OUTCOMES)})
    groups[group]["entry points"] += 1
    groups[group]["min categories"] = min(groups[group]["min categories"] or 99, r["categories"])
  summary = harness.markdown_table(
      ["module", "entry points", "categories each", "cells", "named errors", "right answers",
       "reported", "silent wrong", "internal crashes"],
      [[g, c["entry points"], f"≥ {c['min categories']}", c["cells"], c["named"], c["right"],
        c["reported"], c["silent"], c["crash"]] for g, c in groups.items()])

  start = time.time()
  fuzzed, fuzz_failures = fuzz(n_solve, n_1d, args.seed)
  fuzz_s = time.time() - start
  fuzz_table = harness.markdown_table(
      ["fuzzed problems", "total", "right", "reported (not converged)", "refused (named)",
       "silent wrong", "internal crashes"],
      [[k, sum(v.values()), v.get("right", 0), v.get("reported", 0), v.get("named", 0),
        v.get("silent", 0), v.get("crash", 0)] for k, v in fuzzed.items()])
  fuzz_totals = {o: sum(v.get(o, 0) for v in fuzzed.values()) for o in OUTCOMES}
  fuzz_table.append(f"| **all** | {sum(fuzz_totals.values())} | {fuzz_totals['right']} | "
                    f"{fuzz_totals['reported']} | {fuzz_totals['named']} | "
                    f"{fuzz_totals['silent']} | {fuzz_totals['crash']} |")
  bad = fuzz_totals["silent"] + fuzz_totals["crash"]

  text = "\n".join([f"Machine: {harness.machine()}; bad-input matrix {matrix_s:.0f} s, fuzzing "
                    f"{fuzz_s:.0f} s (seed {args.seed}).", "", *summary, "", *fuzz_table, "",
                    "Per entry point:", "", *table, ""])
  if failures or fuzz_failures:
    text += "\nFailures:\n" + "\n".join(f"- {f}" for f in failures + fuzz_failures) + "\n"
  stem = "reliability.quick" if args.quick else "reliability"
  harness.write_results(RESULTS, stem, dict(matrix=rows, fuzz=fuzzed, failures=failures,
                                            fuzz_failures=fuzz_failures, seed=args.seed), text)
  print(text)
  return 1 if (totals["silent"] or totals["crash"] or bad) else 0


if __name__ == "__main__":
  sys.exit(main())
