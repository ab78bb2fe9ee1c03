"""Gradient flows: one compiled scan against a Python loop over a jitted step.

The flow: ``n`` float32 particles in R² (``x_0 ~ N(0, 0.25 I)``) flowing onto ``m = 1.5 n``
points on a circle of radius 1.5 under the Sinkhorn divergence ``S_ε`` (cost ‖x − y‖², ε = 0.01, about
0.004 × the mean cost),
forward Euler with step τ = 0.005 (each step moves a particle about 1 % of the way to its
target), ``n_steps`` steps.

Three ways to run the same flow:

- ``scan``: ``otkit.flows.gradient_flow``, the whole flow as one compiled program; the Sinkhorn
  potentials of one step warm-start the next.
- ``loop``: the flow as users write it without otkit.flows, a Python loop over
  ``jax.jit(lambda x: x − τ n ∇S_ε(x))`` with ``S_ε = otkit.sinkhorn_divergence`` (each step
  solves from scratch; this is the "Python loop over a jitted step").
- ``loop (warm)``: a Python loop over a jitted step that carries the warm starts by hand
  (``energy.evaluate(x, state)``), to separate the gain of warm starts from that of removing
  per-step dispatch (each of its starts first takes one untimed step, so that it runs warm).

(With ``m = n`` the particles end on the target points one to one, where a cold Sinkhorn solve
converges in a sweep or two; ``--m-equals-n`` runs that case.)

Times are medians of repeated runs after a first call; the first call's extra time (tracing and
compilation) is reported apart as ``compile`` (the scan is compiled ahead of time, then timed;
one run of the full flow already averages 1000 steps). The loops are timed on ``loop_steps`` steps
started from frames of the scan's trajectory (beginning, middle and end), because a step's cost
depends on where the flow is; their per-step time is the median over those starts. ``vmap``
times four flows from different starting points in one program.

Usage::

  python benchmarks/flows.py            # n = 2000, 1000 steps
  python benchmarks/flows.py --quick     # n = 400, 100 steps (a minute or two)

Writes ``benchmarks/results/flows.json`` and ``flows.md`` (``flows.quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import harness
import otkit
import otkit.flows as fl

RESULTS = Path(__file__).resolve().parent / "results"
EPSILON = 0.01
TAU = 0.005


def data(n: int, m: int):
  rng = np.random.default_rng(0)
  x0 = (0.5 * rng.standard_normal((n, 2))).astype(np.float32)
  theta = np.linspace(0.0, 2 * np.pi, m, endpoint=False)
  y = (1.5 * np.stack([np.cos(theta), np.sin(theta)], 1)).astype(np.float32)
  return jnp.asarray(x0), jnp.asarray(y)


def timed(fn, repeats: int) -> harness.Timing:
  """A first call (tracing, compilation) and the median of ``repeats`` more."""
  return harness.timed(fn, repeats=repeats)


def scan_flow(energy, x0, n_steps, repeats):
  """The public flow as one program: compiled ahead of time (timed apart), then run ``repeats``
  times. The energy (and its target points) is an argument, not a constant of the program."""
  flow = jax.jit(lambda energy, x0: fl.gradient_flow(energy, x0, step_size=TAU, n_steps=n_steps,
                                                     save_every=max(1, n_steps // 10)))
  compiled, compile_s = harness.compile_ahead(flow, energy, x0)
  run = harness.timed(lambda: compiled(energy, x0), repeats=repeats, warmup=False)
  median = run.median_s
  return dict(compile_s=compile_s, total_s=median, per_step_s=median / n_steps), run.result


def cold_loop(y, starts, loop_steps, repeats):
  @jax.jit
  def step(x, y):  # y is an argument, not a constant of the program
    loss = lambda x: otkit.sinkhorn_divergence(x, y, epsilon=EPSILON).value  # noqa: E731
    return x - TAU * x.shape[0] * jax.grad(loss)(x)

  def run(x):
    for _ in range(loop_steps):
      x = step(x, y)
    return x

  return _loop_times(run, starts, loop_steps, repeats)


def warm_loop(energy, starts, loop_steps, repeats):
  @jax.jit
  def step(energy, x, state):
    (_, state), grad = jax.value_and_grad(energy.evaluate, has_aux=True)(x, state)
    return x - TAU * x.shape[0] * grad, state

  init = jax.jit(lambda energy, x: energy.init(x))

  def run(start):
    x, state = start
    for _ in range(loop_steps):
      x, state = step(energy, x, state)
    return x

  # Each start comes with the potentials of one (untimed) step there: the loop is timed warm.
  warmed = [step(energy, x, init(energy, x)) for x in starts]
  return _loop_times(run, warmed, loop_steps, repeats)


def _loop_times(run, starts, loop_steps, repeats):
  compile_s, per_step = None, []
  for x in starts:
    timing = timed(lambda: run(x), repeats)
    if compile_s is None:
      compile_s = timing.compile_s
    per_step.append(timing.median_s / loop_steps)
  return dict(compile_s=compile_s, per_step_s=statistics.mean(per_step),
              median_per_step_s=statistics.median(per_step), per_step_by_start_s=per_step)


def vmap_flows(energy, x0, n_steps, repeats):
  """Four flows from shifted starts in one vmapped program, against the four flows run one after
  another (each its own call; the shifted starts take more sweeps than the first)."""
  starts = jnp.stack([x0 + jnp.asarray(shift, x0.dtype)
                      for shift in ([0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [-0.5, -0.5])])
  flow = lambda x: fl.gradient_flow(energy, x, step_size=TAU, n_steps=n_steps,  # noqa: E731
                                    save_every=n_steps)
  batched = jax.jit(jax.vmap(flow))  # built once: a new jit object would compile again
  timing = timed(lambda: batched(starts), repeats)
  median, out = timing.median_s, timing.result
  singles = [timed(lambda: flow(start), repeats).median_s for start in starts]
  return dict(compile_s=timing.compile_s, total_s=median, per_step_s=median / n_steps,
              single_flows_s=singles, vmap_over_singles=median / sum(singles), flows=4,
              failed=bool(jnp.any(out.failed)),
              final_over_initial=[float(v) for v in out.values[:, -1] / out.values[:, 0]])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--m-equals-n", action="store_true", help="as many target points as particles")
  args = parser.parse_args()
  # The full scan is timed once after its compiling call: one run already averages 1000 steps.
  n, n_steps, loop_steps, repeats, scan_repeats, vmap_steps = (
      (400, 100, 4, 1, 2, 20) if args.quick else (2000, 1000, 3, 1, 1, 10))
  m = n if args.m_equals_n else 3 * n // 2
  x0, y = data(n, m)
  energy = fl.sinkhorn_divergence_to(y, epsilon=EPSILON)
  print(f"n = {n}, m = {m}, {n_steps} steps, ε = {EPSILON}, τ = {TAU}", flush=True)

  scan, out = scan_flow(energy, x0, n_steps, scan_repeats)
  print("scan", scan, flush=True)
  frames = out.frames
  starts = list(frames[:-1])  # steps 0, n/10, …, 9n/10
  cold = cold_loop(y, starts, loop_steps, repeats)
  print("loop", cold, flush=True)
  warm = warm_loop(energy, starts, loop_steps, repeats)
  print("loop (warm)", warm, flush=True)
  batched = vmap_flows(energy, x0, vmap_steps, scan_repeats)
  print("vmap", batched, flush=True)

  result = dict(
      setting=dict(n=n, m=m, d=2, n_steps=n_steps, epsilon=EPSILON, step_size=TAU,
                   loop_steps=loop_steps, repeats=repeats, scan_repeats=scan_repeats,
                   vmap_steps=vmap_steps, dtype="float32"),
      machine=dict(platform=platform.platform(), processor=platform.machine(),
                   backend=jax.default_backend(), jax=jax.__version__),
      values=dict(initial=float(out.values[0]), final=float(out.values[-1]),
                  max_relative_increase=float(np.max(np.diff(np.asarray(out.values))
                                                     / np.abs(np.asarray(out.values[:-1]))))),
      scan=scan, loop=cold, loop_warm=warm, vmap=batched,
      speedup_vs_loop=cold["per_step_s"] / scan["per_step_s"],
      speedup_vs_warm_loop=warm["per_step_s"] / scan["per_step_s"],
  )
  suffix = (".quick" if args.quick else "") + (".m_equals_n" if args.m_equals_n else "")
  print(harness.write_results(RESULTS, f"flows{suffix}", result, markdown(result)))


def markdown(r) -> str:
  s, m = r["setting"], r["machine"]
  rows = [
      ("otkit.flows.gradient_flow (one scan, warm starts)", r["scan"]),
      ("Python loop over a jitted step (otkit.sinkhorn_divergence)", r["loop"]),
      ("Python loop over a jitted step, warm starts by hand", r["loop_warm"]),
  ]
  lines = [
      f"Sinkhorn-divergence flow of n = {s['n']} float32 particles in R² onto m = {s['m']} "
      "points of a circle, "
      f"ε = {s['epsilon']}, τ = {s['step_size']}, {s['n_steps']} steps; {m['processor']} "
      f"{m['backend']}, jax {m['jax']}. Scans: {s['scan_repeats']} timed run(s) after the "
      f"compiling call (vmap: {s['vmap_steps']} steps); loops: {s['repeats']} timed run(s) of "
      f"{s['loop_steps']} steps from each of ten evenly spaced frames of the trajectory, "
      "averaged. "
      "`compile` is the first call's extra time.",
      "",
      "| how | s / step | compile s | × vs loop |",
      "|---|---|---|---|",
  ]
  loop = r["loop"]["per_step_s"]
  for name, row in rows:
    per_step = row["per_step_s"] / (row.get("flows", 1))
    note = " (per flow)" if "flows" in row else ""
    lines.append(f"| {name} | {per_step:.4g}{note} | {row['compile_s']:.3g} | "
                 f"{loop / per_step:.1f}× |")
  b = r["vmap"]
  singles = ", ".join(f"{t:.3g}" for t in b["single_flows_s"])
  lines += ["", f"vmap: {b['flows']} flows of {s['vmap_steps']} steps in {b['total_s']:.3g} s; the "
                f"same flows one call each: {singles} s, {b['vmap_over_singles']:.2f}× their sum "
                "(on CPU each batched solve runs its problems one after another, each with its "
                "own number of sweeps)."]
  v = r["values"]
  rise = v["max_relative_increase"]
  lines += ["", f"S_ε fell from {v['initial']:.4g} to {v['final']:.4g}; "
                + (f"it never rose from one step to the next (the smallest relative fall was "
                   f"{-rise:.2g})." if rise <= 0 else
                   f"its largest relative rise between steps was {rise:.2g}.")]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  main()
