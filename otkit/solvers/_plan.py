"""Quantities derived from dual potentials: the plan, its action on vectors, its linear cost.

The plan of a :class:`otkit.SinkhornOutput` is ``P_ij = a_i b_j exp((f_i + g_j − C_ij) / ε)``.
:func:`apply_plan` and :func:`transport_cost` never form it (online, O(block·m) memory);
:func:`transport_plan` returns it densely, for small problems.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from otkit import _validation as V
from otkit.geometry import _geometry as G
from otkit.geometry import _reductions as R
from otkit.solvers._dual import safe_log
from otkit.solvers._output import SinkhornOutput

Array = jax.Array


def log_scalings(a: Array, b: Array, f: Array, g: Array, epsilon: Array) -> tuple[Array, Array]:
  """``(log a + f/ε, log b + g/ε)``: the plan is ``exp(log_u ⊕ log_v − C/ε)``."""
  return safe_log(a) + f / epsilon, safe_log(b) + g / epsilon


def plan_matrix(cost: Array, log_u: Array, log_v: Array, epsilon: Array) -> Array:
  """The dense plan ``exp(log_u ⊕ log_v − C/ε)`` of a cost matrix ``(n, m)``."""
  return jnp.exp(log_u[:, None] + log_v[None, :] - cost / epsilon)


def apply_scaled(geom, log_u: Array, log_v: Array, epsilon: Array, vec: Array, axis: int) -> Array:
  """``P vec`` (``axis=1``) or ``Pᵀ vec`` (``axis=0``) for ``P = exp(log_u ⊕ log_v − C/ε)`` on
  ``geom``, online (no check of the arguments)."""
  if axis == 1:
    return R.apply_kernel_rows(geom, log_u, log_v, epsilon, vec)
  return R.apply_kernel_rows(geom.transpose(), log_v, log_u, epsilon, vec)


def _log_scalings(out: SinkhornOutput) -> tuple[Array, Array]:
  return log_scalings(out.a, out.b, out.f, out.g, out.epsilon)


def _check_shape(geom, out: SinkhornOutput) -> None:
  """Checks that ``out`` was solved on ``geom``: its shape always, its fingerprint when both are
  concrete (a few entries; a different geometry of the same shape is caught without a pass)."""
  if not isinstance(out, SinkhornOutput):
    raise ValueError(f"`out` must be an otkit.SinkhornOutput (from otkit.solve or otkit.sinkhorn); "
                     f"got {type(out).__name__}.")
  if not hasattr(geom, "block_cost"):
    raise ValueError(f"`geom` must be an otkit geometry; got {type(geom).__name__}.")
  if (out.f.shape[-1], out.g.shape[-1]) != tuple(geom.shape):
    raise ValueError(f"`out` has potentials of sizes {(out.f.shape[-1], out.g.shape[-1])} but `geom` "
                     f"has shape {tuple(geom.shape)}; pass the geometry the problem was solved on.")
  for name in ("f", "g"):
    if V.is_concrete(getattr(out, name)):
      try:
        V.check_finite(f"out.{name}", getattr(out, name))
      except ValueError as err:
        raise ValueError(f"`out` has non-finite potentials ({err}); the solve failed, see "
                         "otkit.check(out).") from None
  leaves = [out.fingerprint, *jax.tree.leaves(geom)]
  if out.fingerprint.ndim or not all(V.is_concrete(v) for v in leaves):
    return
  with jax.ensure_compile_time_eval():
    mine = float(G.fingerprint(geom.validate()))
  theirs = float(out.fingerprint)
  if not math.isclose(mine, theirs, rel_tol=1e-4, abs_tol=1e-4 * (1.0 + abs(theirs))):
    raise ValueError("`geom` is not the geometry `out` was solved on (same shape, different "
                     "data); pass the geometry the problem was solved on.")


def _unpack(geom, out):
  """``(geom, out)``, also for a composite output that carries its linear problem (a
  :class:`otkit.GWOutput` passed alone, in place of ``geom``)."""
  if out is None and hasattr(geom, "linear_output") and hasattr(geom, "geom"):
    return geom.geom, geom.linear_output
  if out is None:
    raise ValueError("`out` must be an otkit.SinkhornOutput (with the geometry it was solved on), "
                     "or pass an otkit.GWOutput alone; got None.")
  return geom, out


def _check_vector(name: str, vec, size: int, axis: int):
  vec = V.as_float_array(name, vec)
  if vec.ndim not in (1, 2) or vec.shape[0] != size:
    raise ValueError(f"`{name}` must have shape ({size},) or ({size}, k) for axis={axis}; got "
                     f"shape {vec.shape}.")
  V.check_finite(name, vec)
  return vec


def transport_plan(geom, out: SinkhornOutput | None = None) -> Array:
  """The dense transport plan, shape ``(n, m)``.

  Args:
    geom: the geometry the problem was solved on, shape ``(n, m)``; or an
      :class:`otkit.GWOutput` alone (its coupling).
    out: a :class:`otkit.SinkhornOutput` (``None`` with a ``GWOutput``).

  Returns:
    ``P`` of shape ``(n, m)``: its rows sum to ``a`` and columns to ``b`` when balanced.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> geom = otkit.PointCloud(jnp.arange(4.0)[:, None], jnp.arange(4.0)[:, None] + 0.1)
    >>> plan = otkit.transport_plan(geom, otkit.sinkhorn(geom, epsilon=0.01))
    >>> bool(jnp.allclose(plan.sum(1), 1 / 4, atol=1e-3))
    True
  """
  geom, out = _unpack(geom, out)
  _check_shape(geom, out)
  return plan_matrix(geom.cost_matrix, *_log_scalings(out), out.epsilon)


def apply_plan(geom, out, vec: Array | None = None, *, axis: int = 1) -> Array:
  """Multiplies the plan with a vector or matrix without forming it.

  ``apply_plan(geom, out, vec)``, or ``apply_plan(gw_out, vec)`` for an :class:`otkit.GWOutput`.

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
  if vec is None and hasattr(geom, "linear_output"):
    geom, out, vec = geom.geom, geom.linear_output, out
  _check_shape(geom, out)
  if axis not in (0, 1) or isinstance(axis, bool):
    raise ValueError(f"`axis` must be 0 or 1; got {axis!r}.")
  vec = _check_vector("vec", vec, geom.shape[axis], axis).astype(out.f.dtype)
  return apply_scaled(geom, *_log_scalings(out), out.epsilon, vec, axis)


def transport_cost(geom, out: SinkhornOutput | None = None) -> Array:
  """The linear transport cost ``⟨C, P⟩ = Σ_ij C_ij P_ij``, computed online (a scalar).

  For an :class:`otkit.GWOutput` passed alone, ``C`` is its last linearised cost.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> x = jnp.arange(4.0)[:, None]
    >>> geom = otkit.PointCloud(x, x + 1.0)
    >>> round(float(otkit.transport_cost(geom, otkit.sinkhorn(geom, epsilon=1e-3))), 2)
    1.0
  """
  geom, out = _unpack(geom, out)
  _check_shape(geom, out)
  log_u, log_v = _log_scalings(out)

  def block(geom, rows, lu, log_v, epsilon):
    cost = geom.block_cost(rows)
    return jnp.sum(jnp.exp(lu[:, None] + log_v[None, :] - cost / epsilon) * cost, axis=1)

  return jnp.sum(R.reduce_rows(geom, block, "sum", rows=log_u, cols=log_v, consts=out.epsilon))
