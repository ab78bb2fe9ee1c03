"""Independent work split over a device mesh: the leading axis of some arrays is divided among
all the devices of a ``jax.sharding.Mesh`` (along all its axes) under ``shard_map``.

The estimators whose work is a set of independent problems (the directions of sliced
Wasserstein, the batch pairs of mini-batch OT) split that set; the points themselves are then
replicated, which the compiler does by gathering them once per call when they arrive split.
Geometries split their points instead (``PointCloud(..., mesh=)``, see ``geometry._reductions``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def check_mesh(mesh) -> Mesh | None:
  """``mesh`` if it is a ``jax.sharding.Mesh`` or ``None``; a ``ValueError`` otherwise."""
  if mesh is not None and not isinstance(mesh, Mesh):
    raise ValueError(f"`mesh` must be a jax.sharding.Mesh or None; got {type(mesh).__name__}.")
  return mesh


def is_explicit(mesh: Mesh) -> bool:
  """Whether ``mesh`` has axes of JAX's explicit sharding mode (``jax.make_mesh``'s default),
  whose arrays carry their sharding in their type."""
  return any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ()))


def split_call(fn: Callable, mesh: Mesh, in_specs, out_specs, *args, typed: bool = True):
  """``jax.shard_map(fn)(*args)`` over all the devices of ``mesh``, on either kind of mesh.

  With explicit axes (arrays typed with their sharding) the arguments are first placed as
  ``in_specs`` says and the outputs are returned replicated; with automatic axes the compiler
  moves the data. ``typed=False`` turns off the per-device variance types of ``shard_map``
  (``check_vma``), for bodies (whole solvers, host callbacks) that never communicate.
  """
  call = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=typed)
  if not is_explicit(mesh):
    return call(*args)

  def place(spec, arg):
    return jax.tree.map(lambda v: jax.reshard(jnp.asarray(v), NamedSharding(mesh, spec)), arg)

  args = [jax.tree.map(place, spec, arg, is_leaf=lambda s: isinstance(s, PartitionSpec))
          for spec, arg in zip(in_specs, args)]
  return jax.tree.map(lambda v: jax.reshard(v, NamedSharding(mesh, PartitionSpec())),
                      call(*args))


def map_split(fn: Callable, mesh: Mesh | None, split, whole=()):
  """``fn(split, whole)`` with the leading axis of the pytree ``split`` divided among the devices
  of ``mesh`` and ``whole`` replicated on each; the outputs share ``split``'s leading axis.

  The axis is padded to a multiple of ``mesh.size`` by repeating its first entry, and the padded
  outputs are dropped, so any length works. ``mesh=None`` calls ``fn`` directly.

  Args:
    fn: ``fn(split, whole)`` → pytree of arrays with the leading axis of ``split``; must treat
      its entries independently (each device sees a slice).
    mesh: a ``jax.sharding.Mesh`` or ``None``.
    split: pytree of arrays with a common leading axis ``k``.
    whole: pytree of anything else.

  Returns:
    ``fn``'s outputs, leading axis ``k``.
  """
  if mesh is None:
    return fn(split, whole)
  k = jax.tree.leaves(split)[0].shape[0]
  pad = -k % mesh.size
  if pad:
    split = jax.tree.map(lambda v: jnp.concatenate([v, jnp.repeat(v[:1], pad, axis=0)]), split)
  spec = PartitionSpec(mesh.axis_names)
  out = split_call(fn, mesh, (spec, PartitionSpec()), spec, split, whole, typed=False)
  return jax.tree.map(lambda o: o[:k], out)
