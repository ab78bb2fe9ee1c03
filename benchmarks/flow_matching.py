"""Flow matching: otkit against torchcfm on torchcfm's 2-D task (8 Gaussians → moons).

Same model and training on both sides: torchcfm's MLP (3 hidden layers of 64, SELU, ``t``
appended), Adam (1e-3), path noise σ = 0.01, batches of ``batch`` points per side drawn afresh
every step (the 8 Gaussians sampled in the step, the moons drawn from a fixed pool of 20 000).
torchcfm runs its notebook's loop on CPU PyTorch (``torch.set_num_threads`` = the cores):
``ConditionalFlowMatcher`` (I-CFM) and ``ExactOptimalTransportConditionalFlowMatcher`` (OT-CFM:
POT's ``ot.emd`` on each batch, then pairs drawn from the plan). otkit runs
``otkit.flow_matching.fit`` with ``coupling="independent"`` and ``"exact"`` (the optimal
assignment of each batch; a block of 100 steps per compiled call).

Reported, per batch size and method:

* training steps per second (after compilation; otkit's compile time apart);
* the coupling alone per batch: torchcfm's ``OTPlanSampler.sample_plan`` against
  ``otkit.flow_matching.couple`` on one batch and per batch of a ``vmap`` over 100 batches (how
  ``fit`` solves them);
* quality after the same number of steps: W₂ between 2 000 generated points (Euler, 2 and 10
  steps) and 2 000 fresh moons (exact, ``otkit.flow_matching.wasserstein2``).

Usage::

  python benchmarks/flow_matching.py           # batches 256 and 1024 (about 10 minutes)
  python benchmarks/flow_matching.py --quick   # batch 256, fewer steps (about 2 minutes)

Writes ``benchmarks/results/flow_matching.json`` and ``flow_matching.md`` (``.quick.*`` with
``--quick``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn.datasets import make_moons

import harness
from otkit import flow_matching as fm

RESULTS = Path(__file__).resolve().parent / "results"
FULL = dict(batches=(256, 1024), steps={256: 1000, 1024: 100}, quality_steps=2000)
QUICK = dict(batches=(256,), steps={256: 300}, quality_steps=500)
METHODS = {"I-CFM": "independent", "OT-CFM": "exact"}
SIGMA = 0.01
N_EVAL = 2000


def eight_gaussians_np(rng, n):
  angle = rng.integers(0, 8, n) * (np.pi / 4)
  centres = 5.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
  return (centres + np.sqrt(0.1) * rng.normal(size=(n, 2))).astype(np.float32)


def eight_gaussians(key, n):
  k_mode, k_noise = jax.random.split(key)
  angle = jax.random.randint(k_mode, (n,), 0, 8) * (jnp.pi / 4)
  centres = 5.0 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
  return centres + jnp.sqrt(0.1) * jax.random.normal(k_noise, (n, 2))


def moons(n, seed):
  return (make_moons(n, noise=0.2, random_state=seed)[0] * 3 - 1).astype(np.float32)


# ----------------------------------------------------------------------------- torchcfm


def torch_trainer(method, batch, pool):
  import torch
  from torchcfm.conditional_flow_matching import (ConditionalFlowMatcher,
                                                  ExactOptimalTransportConditionalFlowMatcher)

  torch.manual_seed(0)
  width = 64
  net = torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.SELU(),
                            torch.nn.Linear(width, width), torch.nn.SELU(),
                            torch.nn.Linear(width, width), torch.nn.SELU(),
                            torch.nn.Linear(width, 2))
  opt = torch.optim.Adam(net.parameters(), 1e-3)
  matcher = (ExactOptimalTransportConditionalFlowMatcher if method == "OT-CFM"
             else ConditionalFlowMatcher)(sigma=SIGMA)
  rng = np.random.default_rng(0)
  pool = torch.from_numpy(pool)

  def step():
    opt.zero_grad()
    x0 = torch.from_numpy(eight_gaussians_np(rng, batch))
    x1 = pool[torch.from_numpy(rng.integers(0, len(pool), batch))]
    t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
    loss = torch.mean((net(torch.cat([xt, t[:, None]], -1)) - ut) ** 2)
    loss.backward()
    opt.step()
    return loss.detach()

  def sample(x0, n_steps):
    x = torch.from_numpy(x0)
    with torch.no_grad():
      for k in range(n_steps):
        t = torch.full((len(x), 1), k / n_steps)
        x = x + net(torch.cat([x, t], -1)) / n_steps
    return x.numpy()

  return step, sample, matcher


def time_torch(step, n_steps):
  for _ in range(5):
    step()
  start = time.perf_counter()
  for _ in range(n_steps):
    step()
  return (time.perf_counter() - start) / n_steps


# ----------------------------------------------------------------------------- otkit


SOURCES = {}


def source(batch):
  """One sampling function per batch size: the same function object reuses the compiled block."""
  return SOURCES.setdefault(batch, lambda key: eight_gaussians(key, batch))


def otkit_fit(coupling, batch, pool, n_steps, model=None, seed=0):
  model = model or fm.VelocityMLP(2, rngs=nnx.Rngs(0))
  return fm.fit(model, source(batch), pool, key=jax.random.key(seed),
                n_steps=n_steps, batch_size=batch, coupling=coupling, sigma=SIGMA,
                steps_per_call=min(100, n_steps))


def time_otkit(coupling, batch, pool, n_steps):
  start = time.perf_counter()
  model, losses = otkit_fit(coupling, batch, pool, min(100, n_steps))
  losses.block_until_ready()
  first = time.perf_counter() - start
  runs = []
  for seed in range(1, 3):
    start = time.perf_counter()
    _, losses = otkit_fit(coupling, batch, pool, n_steps, model, seed)
    losses.block_until_ready()
    runs.append((time.perf_counter() - start) / n_steps)
  per_step = statistics.median(runs)
  return per_step, max(first - per_step * min(100, n_steps), 0.0)


def time_couplings(batch, matcher, repeats=20):
  rng = np.random.default_rng(1)
  x0, x1 = eight_gaussians_np(rng, batch), moons(batch, 2)
  import torch
  t0, t1 = torch.from_numpy(x0), torch.from_numpy(x1)
  start = time.perf_counter()
  for _ in range(repeats):
    matcher.ot_sampler.sample_plan(t0, t1)
  torch_s = (time.perf_counter() - start) / repeats
  one = jax.jit(lambda a, b: fm.couple(jax.random.key(0), a, b))
  single = harness.timed(lambda: one(x0, x1), repeats=repeats).median_s
  xs = jnp.stack([eight_gaussians(k, batch) for k in jax.random.split(jax.random.key(3), 100)])
  ys = jnp.asarray(np.stack([moons(batch, 10 + i) for i in range(100)]))
  many = jax.jit(jax.vmap(lambda a, b: fm.couple(jax.random.key(0), a, b)))
  block = harness.timed(lambda: many(xs, ys), repeats=3).median_s / 100
  return torch_s, single, block


def w2_of(samples, target):
  return float(fm.wasserstein2(samples, target))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  grid = QUICK if args.quick else FULL
  stem = "flow_matching.quick" if args.quick else "flow_matching"
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
  pool = moons(20_000, 0)
  x_eval, y_eval = eight_gaussians_np(np.random.default_rng(7), N_EVAL), moons(N_EVAL, 8)
  rows, data = [], dict(machine=harness.machine(), jax=jax.__version__,
                        torch=torch.__version__, runs=[])
  for batch in grid["batches"]:
    for name, coupling in METHODS.items():
      step, sample, matcher = torch_trainer(name, batch, pool)
      torch_s = time_torch(step, grid["steps"][batch])
      otkit_s, compile_s = time_otkit(coupling, batch, pool, grid["steps"][batch])
      run = dict(batch=batch, method=name, torch_step_s=torch_s, otkit_step_s=otkit_s,
                 otkit_compile_s=compile_s)
      if name == "OT-CFM":
        run["torch_coupling_s"], run["otkit_coupling_s"], run["otkit_coupling_block_s"] = \
            time_couplings(batch, matcher)
      if batch == grid["batches"][0]:
        n = grid["quality_steps"]
        for _ in range(n):
          step()
        model, _ = otkit_fit(coupling, batch, pool, n)
        for k in (2, 10):
          run[f"torch_w2_{k}"] = w2_of(sample(x_eval, k), y_eval)
          run[f"otkit_w2_{k}"] = w2_of(fm.sample(model, x_eval, n_steps=k), y_eval)
        run["quality_steps"] = n
      data["runs"].append(run)
      table = markdown(data)
      harness.write_results(RESULTS, stem, data, table)
      print(table, flush=True)


def markdown(data) -> str:
  """The Markdown table of the runs in ``data``."""
  rows = []
  for run in data["runs"]:
    coupling = ("—", "—")
    if "torch_coupling_s" in run:
      coupling = (f"{run['torch_coupling_s'] * 1e3:.2f} ms",
                  f"{run['otkit_coupling_s'] * 1e3:.2f} / {run['otkit_coupling_block_s'] * 1e3:.2f} ms")
    quality = ("—", "—")
    if "otkit_w2_2" in run:
      quality = (f"{run['torch_w2_2']:.3f} / {run['torch_w2_10']:.3f}",
                 f"{run['otkit_w2_2']:.3f} / {run['otkit_w2_10']:.3f}")
    rows.append((run["batch"], run["method"], f"{1 / run['torch_step_s']:.0f}",
                 f"{1 / run['otkit_step_s']:.0f}", f"{run['torch_step_s'] / run['otkit_step_s']:.1f}×",
                 f"{run['otkit_compile_s']:.1f} s", *coupling, *quality))
  steps = next((run["quality_steps"] for run in data["runs"] if "quality_steps" in run), "—")
  caption = (f"8 Gaussians → moons, float32, {data['machine']}, torch {data['torch']}. Training steps per second after compilation (median of 2 runs for "
             f"otkit), the coupling of one batch (otkit: alone, and per batch of a vmap over 100 "
             f"as in fit), and W₂ to 2 000 fresh moons after {steps} steps (Euler, 2 / 10 steps).")
  header = ("batch", "method", "torchcfm steps/s", "otkit steps/s", "otkit / torchcfm",
            "otkit compile", "coupling: torchcfm", "coupling: otkit one / in a block",
            "W₂: torchcfm", "W₂: otkit")
  return caption + "\n\n" + "\n".join(harness.markdown_table(header, rows)) + "\n"


if __name__ == "__main__":
  main()
