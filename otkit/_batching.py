"""Batches of large problems solved one after another under ``vmap``.

On a CPU, ``jax.vmap`` of an iterative solver over point clouds that each already fill the
machine's blocks gains nothing from batching: every sweep does ``k`` times the work in blocks
``k`` times smaller, and a batched ``while_loop`` runs every problem until the slowest has
converged. :func:`one_at_a_time` gives such a function a batching rule
(``jax.custom_batching.custom_vmap``) that runs the batch as a ``lax.map``: each problem with the
blocks and the number of sweeps it would have alone, and ``k`` problems in ``k`` times the time
of one (16 problems of 4 000 points: 15.5–15.7× one, against 16.4–16.6× for the batched
sweeps; benchmarks/batching.py).

The rule is for forward computations only (``custom_vmap`` has no reverse-mode rule): callers
wrap the solve that an implicit or envelope derivative rule stands in front of.
"""

from __future__ import annotations

from typing import Callable

import jax


def one_at_a_time(fn: Callable) -> Callable:
  """``fn(*args)`` unchanged, except that under ``vmap`` it runs one problem at a time.

  Args:
    fn: a function of pytrees of arrays, traced for one problem; every output is batched.

  Arguments that the ``vmap`` does not batch are shared by every problem, and nested ``vmap``
  transformations stay sequential at every level.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = one_at_a_time(lambda x, y: jnp.sum(x * y))
    >>> jax.vmap(f, in_axes=(0, None))(jnp.ones((3, 2)), jnp.arange(2.0)).tolist()
    [1.0, 1.0, 1.0]
  """

  @jax.custom_batching.custom_vmap
  def wrapped(*args):
    return fn(*args)

  @wrapped.def_vmap
  def rule(axis_size, in_batched, *args):
    del axis_size
    leaves, treedef = jax.tree.flatten(args)
    flags = jax.tree.leaves(in_batched)
    mapped = [leaf for leaf, batched in zip(leaves, flags) if batched]
    if not mapped:  # nothing batched at this level (a forward-mode rule can ask for that)
      out = fn(*args)
      return out, jax.tree.map(lambda _: False, out)

    def one(problem_leaves):
      it = iter(problem_leaves)
      merged = [next(it) if batched else leaf for leaf, batched in zip(leaves, flags)]
      return wrapped(*jax.tree.unflatten(treedef, merged))

    out = jax.lax.map(one, mapped)
    return out, jax.tree.map(lambda _: True, out)

  return wrapped
