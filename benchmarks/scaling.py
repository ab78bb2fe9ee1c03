"""Weak scaling over a mesh of simulated CPU devices: the work per device fixed, 1 → 8 devices.

XLA is told to present 8 host devices (``--xla_force_host_platform_device_count=8``); a mesh of
the first D ∈ {1, 2, 4, 8} of them splits problems D times larger:

* ``solve``: ``otkit.solve`` on ``PointCloud(x, y, mesh=)``, x of D × n points split by rows, y of
  n points (each device: n × n costs per half-step), a fixed number of sweeps;
* ``sinkhorn_divergence``: the same clouds, three problems (the x–x problem has D × n columns
  too, so its work per device grows with D);
* ``sliced_wasserstein``: D × 256 directions over the devices, n points in R^16 each side
  (XLA's sort on both sides of the comparison: a split computation does not call the host);
* ``minibatch_ot``: D × 16 batch pairs of 64 points (exact assignments, in-graph on both sides);
* ``otdd``: a labelled source of D × n points split by rows against n target points (debiased:
  its source–source problem grows with D as the divergence's).

The simulated devices share this machine's cores, so a larger mesh cannot run faster than the
cores allow: the table reports, for each D, the time against D = 1 (``weak``; ideal on D real
devices: 1.0, here about D / cores once the mesh outgrows the cores) and the time of the split
problem against the same problem on one device without a mesh (``split/single``: the cost of
splitting, ideal ≤ 1). Ratios only: absolute times on shared machines mean little.

  python benchmarks/scaling.py [--n 2000] [--sweeps 20] [--out benchmarks/results]
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import harness  # noqa: E402
import otkit  # noqa: E402

DEVICES = (1, 2, 4, 8)


def workloads(n: int, sweeps: int):
  """name -> (inputs of a D-device problem, function of (mesh, *inputs))."""
  solver = otkit.Sinkhorn(fixed_iters=sweeps, anneal=False)
  key = jax.random.key(0)

  def clouds(devices, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(devices * n, d)), jnp.float32),
            jnp.asarray(rng.normal(size=(n, d)) + 1.0, jnp.float32))

  def solve(mesh, x, y):
    return otkit.solve(otkit.PointCloud(x, y, mesh=mesh), epsilon=0.05, solver=solver).f

  def divergence(mesh, x, y):
    return otkit.sinkhorn_divergence(otkit.PointCloud(x, y, mesh=mesh), epsilon=0.05,
                                     solver=solver).value

  def sliced(mesh, x, y):
    return otkit.sliced_wasserstein(key, x[:n], y, n_projections=256 * x.shape[0] // n,
                                    sort_impl="xla", mesh=mesh).value

  def minibatch(mesh, x, y):
    return otkit.minibatch_ot(key, x, y, batch_size=64, n_batches=16 * x.shape[0] // n,
                              exact_method="jax", mesh=mesh).value

  def otdd(mesh, x, y):
    labels_s, labels_t = np.arange(x.shape[0]) % 5, np.arange(y.shape[0]) % 5
    return otkit.otdd(x, labels_s, y, labels_t, epsilon=1.0, solver=solver, mesh=mesh).value

  return {
      "solve": (lambda devices: clouds(devices), solve),
      "sinkhorn_divergence": (lambda devices: clouds(devices), divergence),
      "sliced_wasserstein": (lambda devices: clouds(devices, d=16), sliced),
      "minibatch_ot": (lambda devices: clouds(devices), minibatch),
      "otdd": (lambda devices: clouds(devices, d=8), otdd),
  }


def mesh_of(devices: int) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.array(jax.devices()[:devices]), ("data",))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=2000)
  parser.add_argument("--sweeps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--functions", default=None,
                      help="comma-separated subset to measure again (the others' rows are kept)")
  parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
  args = parser.parse_args(argv)
  assert jax.device_count() >= max(DEVICES), jax.devices()
  meta = dict(machine=harness.machine(), n=args.n, sweeps=args.sweeps, simulated_devices=8)
  chosen = args.functions.split(",") if args.functions else list(workloads(1, 1))
  previous = Path(args.out) / "scaling.json"
  rows = []
  if args.functions and previous.exists():
    rows = [r for r in json.loads(previous.read_text())["rows"] if r["function"] not in chosen]
  for name, (inputs, fn) in workloads(args.n, args.sweeps).items():
    if name not in chosen:
      continue
    run = jax.jit(fn, static_argnums=0)
    base = None
    for devices in DEVICES:
      data = inputs(devices)
      split = harness.timed(lambda: run(mesh_of(devices), *data), repeats=args.repeats)
      single = harness.timed(lambda: run(None, *data), repeats=args.repeats)
      base = split.median_s if base is None else base
      rows.append(dict(function=name, devices=devices, split_s=split.median_s,
                       single_s=single.median_s, compile_s=split.compile_s,
                       weak=split.median_s / base, split_over_single=split.median_s / single.median_s))
      print(rows[-1], flush=True)
      harness.write_results(args.out, "scaling", dict(meta=meta, rows=rows), table(rows, meta))
  print(table(rows, meta))


def table(rows, meta) -> str:
  lines = [f"Weak scaling on {meta['simulated_devices']} simulated devices of {meta['machine']}: "
           f"per device {meta['n']} rows (solves: {meta['sweeps']} sweeps). `weak` = time on D "
           f"devices / time on 1 (work per device fixed); `split/single` = the split problem "
           f"against the same problem on one device without a mesh.", ""]
  header = ["function"] + [f"D = {d}: weak, split/single" for d in DEVICES]
  body = []
  for name in dict.fromkeys(r["function"] for r in rows):
    cells = [name]
    for devices in DEVICES:
      row = next((r for r in rows if r["function"] == name and r["devices"] == devices), None)
      cells.append("–" if row is None else f"{row['weak']:.2f}, {row['split_over_single']:.2f}")
    body.append(cells)
  return "\n".join(lines + harness.markdown_table(header, body)) + "\n"


if __name__ == "__main__":
  main()
