"""Runs the split functions with and without a mesh of 8 host devices and prints, as JSON, the
largest relative difference of each checked quantity (and a few facts on memory and errors).

It needs its own process, since the device count is fixed when JAX starts:
``XLA_FLAGS=--xla_force_host_platform_device_count=8 python sharded_checks.py GROUP... [--dtypes float32,float64]``.
"""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import otkit  # noqa: E402

MESH = None  # the mesh of 8 devices, made when run as a script
KEY = jax.random.key(1)


def rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def compare(fn, *args) -> list[float]:
  """``fn(mesh, *args)`` jitted, with the mesh against without: a difference per output."""
  run = jax.jit(fn, static_argnums=0)
  return [rel(s, w) for s, w in zip(run(MESH, *args), run(None, *args))]


def clouds(dtype, n=64, m=48, d=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(dtype)
  y = (rng.normal(size=(m, d)) * 0.8 + 0.5).astype(dtype)
  return jnp.asarray(x), jnp.asarray(y)


def solver_for(dtype, **options):
  # float64: to convergence; float32: the same fixed number of sweeps on both sides.
  if dtype == np.float64:
    return otkit.Sinkhorn(tol=1e-10, max_iters=5000, **options)
  return otkit.Sinkhorn(fixed_iters=200, max_iters=200, **options)


def solve(dtype):
  x, y = clouds(dtype)
  solver, out = solver_for(dtype), {}
  for side in ("x", "y"):
    def run(mesh, x, y, side=side):
      def value(x):
        o = otkit.solve(otkit.PointCloud(x, y, mesh=mesh, sharded=side), epsilon=0.5,
                        solver=solver)
        return o.value, (o.f, o.g)
      (v, (f, g)), grad = jax.value_and_grad(value, has_aux=True)(x)
      return v, f, g, grad
    for name, diff in zip(("value", "f", "g", "grad"), compare(run, x, y)):
      out[f"{side}_{name}"] = diff
  return out


def divergence(dtype):
  x, y = clouds(dtype)
  solver = solver_for(dtype)

  def run(mesh, x, y):
    return jax.value_and_grad(lambda x: otkit.sinkhorn_divergence(
        x, y, epsilon=0.5, solver=solver, mesh=mesh).value)(x)
  return dict(zip(("value", "grad"), compare(run, x, y)))


def sliced(dtype):
  x, y = clouds(dtype)

  def run(mesh, x, y):  # 20 directions: not a multiple of 8
    return jax.value_and_grad(lambda x: otkit.sliced_wasserstein(
        KEY, x, y, n_projections=20, control_variate="upper", mesh=mesh).value)(x)
  return dict(zip(("value", "grad"), compare(run, x, y)))


def minibatch(dtype):
  x, y = clouds(dtype)
  out = {}
  for inner in ("exact", "sinkhorn"):
    options = dict(epsilon=0.5, solver=solver_for(dtype)) if inner == "sinkhorn" else {}

    def run(mesh, x, y, options=options, inner=inner):  # 12 pairs: not a multiple of 8
      return jax.value_and_grad(lambda x: otkit.minibatch_ot(
          KEY, x, y, batch_size=8, n_batches=12, inner=inner, mesh=mesh, **options).value)(x)
    out[f"{inner}_value"], out[f"{inner}_grad"] = compare(run, x, y)

  def bounds(mesh, x, y):
    o = otkit.minibatch_bounds(KEY, x, y, batch_size=8, budget=20, mesh=mesh)
    return o.upper, o.lower
  out["bounds_upper"], out["bounds_lower"] = compare(bounds, x[:48], y)
  return out


def otdd(dtype):
  x, y = clouds(dtype)
  labels_s, labels_t = np.arange(64) % 3, np.arange(48) % 2
  solver = solver_for(dtype, anneal=True)
  split, whole = (otkit.otdd(x, labels_s, y, labels_t, epsilon=1.0, solver=solver, mesh=mesh)
                  for mesh in (MESH, None))
  return {"value": rel(split.value, whole.value), "mesh_used": split.geom.mesh is MESH}


def memory(_):
  """Bytes per device of the compiled solves: rows 8 × 8192 split over 8 devices, against 8192
  and 8 × 8192 rows on one (512 columns, same blocks)."""
  def compiled_bytes(n, mesh):
    x = jax.ShapeDtypeStruct((n, 8), jnp.float32)
    y = jax.ShapeDtypeStruct((512, 8), jnp.float32)

    def run(x, y):
      geom = otkit.PointCloud(x, y, chunk_size=128, mesh=mesh)
      return otkit.solve(geom, epsilon=1.0, solver=otkit.Sinkhorn(fixed_iters=3, max_iters=3)).f
    stats = jax.jit(run).lower(x, y).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
  return {"split_8x": compiled_bytes(8 * 8192, MESH), "single_1x": compiled_bytes(8192, None),
          "single_8x": compiled_bytes(8 * 8192, None)}


def errors(_):
  """The messages of the bad uses of a mesh."""
  x, y = clouds(np.float32, n=63)
  out = {}
  for name, call in (("indivisible", lambda: otkit.solve(otkit.PointCloud(x, y, mesh=MESH),
                                                         epsilon=1.0)),
                     ("side", lambda: otkit.solve(otkit.PointCloud(y, y, mesh=MESH, sharded="z"),
                                                  epsilon=1.0)),
                     ("self_pairs", lambda: otkit.sinkhorn_divergence(y, x, epsilon=1.0,
                                                                      mesh=MESH))):
    try:
      call()
      out[name] = None
    except ValueError as error:
      out[name] = str(error)
  return out


GROUPS = dict(solve=solve, divergence=divergence, sliced=sliced, minibatch=minibatch, otdd=otdd,
              memory=memory, errors=errors)

if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("groups", nargs="+", choices=sorted(GROUPS))
  parser.add_argument("--dtypes", default="float64,float32")
  args = parser.parse_args()
  assert jax.device_count() == 8, jax.devices()
  MESH = jax.make_mesh((8,), ("data",))
  results = {}
  for group in args.groups:
    dtypes = args.dtypes.split(",") if group not in ("memory", "errors") else ["-"]
    for dtype in dtypes:
      for name, value in GROUPS[group](None if dtype == "-" else np.dtype(dtype).type).items():
        results[f"{group}/{name}/{dtype}"] = value
  print(json.dumps(results))
