"""Blocked reductions over a geometry's cost, in the log domain.

Everything here walks over blocks of *rows* and reduces along the contiguous (column) axis.
Reductions along the other axis use the transposed geometry, so both Sinkhorn half-steps are
row reductions. Each block is wrapped in :func:`jax.checkpoint`, so reverse-mode derivatives
recompute a block instead of storing it: memory stays O(block · m) forward and backward.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def map_row_blocks(fn: Callable, rows, block: int):
  """Applies ``fn`` to consecutive blocks of ``block`` rows of the pytree ``rows``.

  Args:
    fn: maps a pytree of row blocks (leading dimension ``B``) to a pytree with leading ``B``.
    rows: pytree of arrays sharing the leading dimension ``n``.
    block: static block size; a last, shorter block handles ``n % block`` rows.

  Returns:
    The outputs of ``fn`` concatenated along the leading dimension ``n``.
  """
  n = jax.tree.leaves(rows)[0].shape[0]
  fn = jax.checkpoint(fn)
  if block >= n:
    return fn(rows)
  n_blocks, rest = divmod(n, block)
  main = jax.tree.map(lambda r: r[: n_blocks * block].reshape(n_blocks, block, *r.shape[1:]), rows)
  out = jax.lax.map(fn, main)
  out = jax.tree.map(lambda o: o.reshape(n_blocks * block, *o.shape[2:]), out)
  if rest:
    tail = fn(jax.tree.map(lambda r: r[n_blocks * block:], rows))
    out = jax.tree.map(lambda o, t: jnp.concatenate([o, t]), out, tail)
  return out


def lse(z: Array, axis: int = -1) -> Array:
  """Log-sum-exp along ``axis``; ``-inf`` for an all ``-inf`` slice (no NaN)."""
  zmax = jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
  zmax = jnp.where(jnp.isfinite(zmax), zmax, 0.0)
  return jnp.log(jnp.sum(jnp.exp(z - zmax), axis=axis)) + jnp.squeeze(zmax, axis)


def lse_rows(geom, h: Array, epsilon: Array) -> Array:
  """Row-wise soft-minimum: ``out_i = log Σ_j exp(h_j − C_ij / ε)``.

  Args:
    geom: a geometry with shape ``(n, m)``.
    h: shape ``(m,)``, log-weights of the columns (``-inf`` allowed).
    epsilon: scalar entropic regularisation.

  Returns:
    shape ``(n,)``.
  """
  def block(rows):
    return lse(h[None, :] - geom.block_cost(rows) / epsilon)

  return map_row_blocks(block, geom.row_data, geom.block_rows)


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

  def block(args):
    rows, lu = args
    kernel = jnp.exp(lu[:, None] + log_v[None, :] - geom.block_cost(rows) / epsilon)
    return jnp.matmul(kernel, mat, precision=jax.lax.Precision.HIGHEST)

  out = map_row_blocks(block, (geom.row_data, log_u), geom.block_rows)
  return out[:, 0] if squeeze else out


def max_cost(geom) -> Array:
  """``max_ij C_ij``, one pass over the blocks (the scale for ε-annealing)."""
  per_row = map_row_blocks(lambda rows: jnp.max(geom.block_cost(rows), axis=1),
                           geom.row_data, geom.block_rows)
  return jnp.max(per_row)


def mean_cost(geom, a: Array, b: Array) -> Array:
  """``Σ_ij a_i b_j C_ij / (Σa Σb)``, one pass over the blocks."""
  per_row = map_row_blocks(lambda args: geom.block_cost(args[0]) @ b * args[1],
                           (geom.row_data, a), geom.block_rows)
  return jnp.sum(per_row) / (jnp.sum(a) * jnp.sum(b))
