"""Row blocks: the loop that every online reduction, and the storing of a cost matrix, runs."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


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

  # Blocks are sliced in place from `rows` (a stored cost matrix is not copied into a stack of
  # blocks first; its reverse-mode accumulation is as fast).
  def one_block(start):
    return fn(jax.tree.map(lambda r: jax.lax.dynamic_slice_in_dim(r, start, block), rows))

  out = jax.lax.map(one_block, jnp.arange(n_blocks) * block)
  out = jax.tree.map(lambda o: o.reshape(n_blocks * block, *o.shape[2:]), out)
  if rest:
    tail = fn(jax.tree.map(lambda r: r[n_blocks * block:], rows))
    out = jax.tree.map(lambda o, t: jnp.concatenate([o, t]), out, tail)
  return out
