"""Quantities derived from dual potentials: the plan, its action on vectors, its linear cost.

The plan of a :class:`otkit.SinkhornOutput` is ``P_ij = a_i b_j exp((f_i + g_j − C_ij) / ε)``.
:func:`apply_plan` and :func:`transport_cost` never form it (online, O(block·m) memory);
:func:`transport_plan` returns it densely, for small problems.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from otkit.geometry import _reductions as R
from otkit.solvers._dual import safe_log
from otkit.solvers._output import SinkhornOutput

Array = jax.Array


def _log_scalings(out: SinkhornOutput) -> tuple[Array, Array]:
  return safe_log(out.a) + out.f / out.epsilon, safe_log(out.b) + out.g / out.epsilon


def _check_shape(geom, out: SinkhornOutput) -> None:
  if (out.f.shape[-1], out.g.shape[-1]) != tuple(geom.shape):
    raise ValueError(f"`out` has potentials of sizes {(out.f.shape[-1], out.g.shape[-1])} but `geom` "
                     f"has shape {tuple(geom.shape)}; pass the geometry the problem was solved on.")


def transport_plan(geom, out: SinkhornOutput) -> Array:
  """The dense transport plan, shape ``(n, m)``.

  Args:
    geom: the geometry the problem was solved on, shape ``(n, m)``.
    out: a :class:`otkit.SinkhornOutput`.

  Returns:
    ``P`` of shape ``(n, m)``: its rows sum to ``a`` and columns to ``b`` when balanced.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> geom = otkit.PointCloud(jnp.arange(3.0)[:, None], jnp.arange(3.0)[:, None] + 0.1)
    >>> plan = otkit.transport_plan(geom, otkit.sinkhorn(geom, epsilon=0.01))
    >>> bool(jnp.allclose(plan.sum(1), 1 / 3, atol=1e-3))
    True
  """
  _check_shape(geom, out)
  log_u, log_v = _log_scalings(out)
  cost = geom.cost_matrix
  return jnp.exp(log_u[:, None] + log_v[None, :] - cost / out.epsilon)


def apply_plan(geom, out: SinkhornOutput, vec: Array, *, axis: int = 1) -> Array:
  """Multiplies the plan with a vector or matrix without forming it.

  Args:
    geom: the geometry the problem was solved on, shape ``(n, m)``.
    out: a :class:`otkit.SinkhornOutput`.
    vec: for ``axis=1``, shape ``(m,)`` or ``(m, k)``; for ``axis=0``, ``(n,)`` or ``(n, k)``.
    axis: the axis of ``P`` summed over: ``1`` gives ``P @ vec`` (shape ``(n, …)``), ``0`` gives
      ``Pᵀ @ vec`` (shape ``(m, …)``).

  Returns:
    The product, as above.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> x = jnp.arange(4.0)[:, None]
    >>> geom = otkit.PointCloud(x, x + 1.0)
    >>> out = otkit.sinkhorn(geom, epsilon=0.01)
    >>> barycentric = otkit.apply_plan(geom, out, geom.y) / out.a[:, None]  # ≈ x + 1
  """
  _check_shape(geom, out)
  log_u, log_v = _log_scalings(out)
  if axis == 1:
    return R.apply_kernel_rows(geom, log_u, log_v, out.epsilon, jnp.asarray(vec))
  if axis == 0:
    return R.apply_kernel_rows(geom.transpose(), log_v, log_u, out.epsilon, jnp.asarray(vec))
  raise ValueError(f"`axis` must be 0 or 1; got {axis!r}.")


def transport_cost(geom, out: SinkhornOutput) -> Array:
  """The linear transport cost ``⟨C, P⟩ = Σ_ij C_ij P_ij``, computed online (a scalar).

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> x = jnp.arange(4.0)[:, None]
    >>> geom = otkit.PointCloud(x, x + 1.0)
    >>> round(float(otkit.transport_cost(geom, otkit.sinkhorn(geom, epsilon=1e-3))), 2)
    1.0
  """
  _check_shape(geom, out)
  log_u, log_v = _log_scalings(out)

  def block(args):
    rows, lu = args
    cost = geom.block_cost(rows)
    return jnp.sum(jnp.exp(lu[:, None] + log_v[None, :] - cost / out.epsilon) * cost, axis=1)

  return jnp.sum(R.map_row_blocks(block, (geom.row_data, log_u), geom.block_rows))
