"""Blocked reductions over a geometry's cost, in the log domain.

Everything here walks over blocks of *rows* and reduces along the contiguous (column) axis.
Reductions along the other axis use the transposed geometry, so both Sinkhorn half-steps are
row reductions. Each block is wrapped in :func:`jax.checkpoint`, so reverse-mode derivatives
recompute a block instead of storing it: memory stays O(block · m) forward and backward.

A geometry split over a device mesh (``geom.mesh``) runs each reduction under ``shard_map``
(:func:`reduce_rows`): with its rows split, every device reduces its own rows and nothing is
communicated; with its columns split, every device reduces over its own columns and the partial
results are combined by one collective over the ``n`` outputs (a log-sum-exp of partial
log-sum-exps: a ``pmax`` and a ``psum``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from otkit import _sharding
from otkit.geometry import _geometry as G
from otkit.geometry._blocks import map_row_blocks  # noqa: F401  (shared with the solvers)

Array = jax.Array


def lse(z: Array, axis: int = -1) -> Array:
  """Log-sum-exp along ``axis``; ``-inf`` for an all ``-inf`` slice (no NaN)."""
  zmax = jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
  zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)
  return jnp.log(jnp.sum(jnp.exp(z - zmax), axis=axis)) + jnp.squeeze(zmax, axis)


def reduce_rows(geom, fn: Callable, combine: str, rows=(), cols=(), consts=()) -> Array:
  """``fn`` over the row blocks of ``geom``, split over its mesh if it has one.

  Args:
    geom: a geometry with shape ``(n, m)``.
    fn: ``fn(geom, row_data_block, rows_block, cols, consts)`` → a reduction over the columns of
      the block, leading dimension ``B``.
    combine: how partial reductions over parts of the columns add up: ``"lse"``, ``"sum"``,
      ``"max"`` or ``"min"``.
    rows: pytree of arrays with leading dimension ``n`` (cut into blocks with the rows).
    cols: pytree of arrays with leading dimension ``m`` (``fn`` sees them whole).
    consts: pytree of anything else (replicated).

  Returns:
    The outputs of ``fn`` concatenated along the rows, leading dimension ``n``.
  """
  def local(geom, rows, cols, consts):
    return map_row_blocks(lambda args: fn(geom, args[0], args[1], cols, consts),
                          (geom.row_data, rows), geom.block_rows)

  if getattr(geom, "mesh", None) is None:
    return local(geom, rows, cols, consts)
  axes = geom.mesh.axis_names
  split, whole = PartitionSpec(axes), PartitionSpec()
  rows_split = "x" in geom.split_fields()

  def on_device(geom, rows, cols, consts):
    out = local(G.replace_fields(geom, mesh=None), rows, cols, consts)
    return out if rows_split else _COMBINE[combine](out, axes)

  specs = (G.split_specs(geom), split if rows_split else whole, whole if rows_split else split,
           whole)
  return _sharding.split_call(on_device, geom.mesh, specs, split if rows_split else whole,
                             geom, rows, cols, consts)


def _combine_lse(out: Array, axes) -> Array:
  top = jax.lax.pmax(jax.lax.stop_gradient(out), axes)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  return jnp.log(jax.lax.psum(jnp.exp(out - top), axes)) + top


_COMBINE = {"lse": _combine_lse, "sum": jax.lax.psum, "max": jax.lax.pmax, "min": jax.lax.pmin}


def lse_rows(geom, h: Array, epsilon: Array) -> Array:
  """Row-wise soft-minimum: ``out_i = log Σ_j exp(h_j − C_ij / ε)``.

  Args:
    geom: a geometry with shape ``(n, m)``.
    h: shape ``(m,)``, log-weights of the columns (``-inf`` allowed).
    epsilon: scalar entropic regularisation.

  Returns:
    shape ``(n,)``.
  """
  def block(geom, rows, _, h, epsilon):
    return lse(h[None, :] - geom.block_cost(rows) / epsilon)

  return reduce_rows(geom, block, "lse", cols=h, consts=epsilon)


def apply_kernel_rows(geom, log_u: Array, log_v: Array, epsilon: Array, vec: Array) -> Array:
  """``out_i = Σ_j exp(log_u_i + log_v_j − C_ij / ε) · vec_j`` without forming the matrix.

  Args:
    geom: a geometry with shape ``(n, m)``.
    log_u: shape ``(n,)``; log_v: shape ``(m,)``.
    epsilon: scalar.
    vec: shape ``(m,)`` or ``(m, k)``.

  Returns:
    shape ``(n,)`` or ``(n, k)``.
  """
  squeeze = vec.ndim == 1
  mat = vec[:, None] if squeeze else vec

  def block(geom, rows, lu, cols, epsilon):
    log_v, mat = cols
    kernel = jnp.exp(lu[:, None] + log_v[None, :] - geom.block_cost(rows) / epsilon)
    return jnp.matmul(kernel, mat, precision=jax.lax.Precision.HIGHEST)

  out = reduce_rows(geom, block, "sum", rows=log_u, cols=(log_v, mat), consts=epsilon)
  return out[:, 0] if squeeze else out


def max_cost(geom) -> Array:
  """``max_ij C_ij``, one pass over the blocks (the scale for ε-annealing)."""
  per_row = reduce_rows(geom, lambda geom, rows, *_: jnp.max(geom.block_cost(rows), axis=1), "max")
  return jnp.max(per_row)


def mean_cost(geom, a: Array, b: Array) -> Array:
  """``Σ_ij a_i b_j C_ij / (Σa Σb)``, one pass over the blocks."""
  def block(geom, rows, a, b, _):
    return geom.block_cost(rows) @ b * a

  per_row = reduce_rows(geom, block, "sum", rows=a, cols=b)
  return jnp.sum(per_row) / (jnp.sum(a) * jnp.sum(b))
