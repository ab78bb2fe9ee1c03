"""Exact optimal transport between weighted measures on the real line.

On the line the optimal plan is monotone, so ``W_p^p(μ, ν) = ∫₀¹ |F⁻¹(t) − G⁻¹(t)|^p dt`` with
``F⁻¹, G⁻¹`` the quantile functions. Both are step functions that change value only at the
cumulative weights, so the integral is a finite sum over the merged breakpoints.

References:
  Santambrogio, "Optimal Transport for Applied Mathematicians", Birkhäuser 2015, §2.2.
  Peyré, Cuturi, "Computational Optimal Transport", Found. Trends Mach. Learn. 2019, Remark 2.30.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.closed_form import _sorting

Array = jax.Array


def check_order(p) -> float:
  """Validates the exponent ``p >= 1`` of the ground cost ``|x − y|^p`` (a static number)."""
  if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
    raise ValueError(f"`p` must be a Python number >= 1 (it is static); got {p!r}.")
  if not (np.isfinite(p) and p >= 1):
    raise ValueError(f"`p` must be a finite number >= 1; got {p!r}.")
  return float(p)


def abs_pow(d: Array, p: float) -> Array:
  """``|d|^p`` with a finite derivative at ``d = 0`` for every ``p >= 1``."""
  if p == 1.0:
    return jnp.abs(d)
  if p == 2.0:
    return d * d
  ad = jnp.abs(d)
  positive = ad > 0
  return jnp.where(positive, jnp.where(positive, ad, 1) ** p, 0)


def quantile_grid(cum_a: Array, cum_b: Array, impl: str) -> tuple[Array, Array, Array]:
  """Merges two nondecreasing cumulative-weight vectors ending at 1 (shapes ``(n,)``, ``(m,)``).

  The interval ``(q_{k−1}, q_k]`` of the merged breakpoints ``q`` belongs to the first atom whose
  cumulative weight reaches ``q_k``, i.e. to the atom whose index is the number of that
  measure's breakpoints strictly before position ``k``. ``delta`` is differentiable in the weights.
  """
  n, m = cum_a.shape[-1], cum_b.shape[-1]
  q_all = jnp.concatenate([cum_a, cum_b])
  perm = _sorting.argsort(q_all, impl, stable=True)
  q = q_all[perm]
  delta = jnp.diff(q, prepend=jnp.zeros((1,), q.dtype))
  from_a = (perm < n).astype(perm.dtype)
  ia = jnp.clip(jnp.cumsum(from_a) - from_a, 0, n - 1)
  ib = jnp.clip(jnp.cumsum(1 - from_a) - (1 - from_a), 0, m - 1)
  return delta, ia, ib


@functools.lru_cache(maxsize=64)
def _uniform_grid_np(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  cum_a, cum_b = np.arange(1, n + 1) / n, np.arange(1, m + 1) / m
  order = np.argsort(np.concatenate([cum_a, cum_b]), kind="stable")
  q = np.concatenate([cum_a, cum_b])[order]
  from_a = (order < n).astype(np.int64)
  ia = np.clip(np.cumsum(from_a) - from_a, 0, n - 1)
  ib = np.clip(np.cumsum(1 - from_a) - (1 - from_a), 0, m - 1)
  return np.diff(q, prepend=0.0), ia.astype(np.int32), ib.astype(np.int32)


def uniform_grid(n: int, m: int, dtype) -> tuple[Array, Array, Array] | None:
  """The merged grid of two uniform measures, computed once at trace time (``None`` if ``n = m``:
  then the atoms are simply paired in order)."""
  if n == m:
    return None
  delta, ia, ib = _uniform_grid_np(n, m)
  return jnp.asarray(delta, dtype), jnp.asarray(ia), jnp.asarray(ib)


def w1d_uniform(u: Array, v: Array, p: float, impl: str, grid) -> Array:
  """``W_p^p`` between uniform measures on the atoms ``u (n,)`` and ``v (m,)``."""
  us, vs = _sorting.sort(u, impl), _sorting.sort(v, impl)
  if grid is None:
    return jnp.mean(abs_pow(us - vs, p))
  delta, ia, ib = grid
  return jnp.sum(delta * abs_pow(us[ia] - vs[ib], p))


def _sorted_cumweights(x: Array, w: Array, impl: str) -> tuple[Array, Array]:
  perm = _sorting.argsort(x, impl)
  cum = jnp.cumsum(w[perm]) / jnp.sum(w)
  return x[perm], cum.at[-1].set(1.0)


def w1d_weighted(u: Array, v: Array, a: Array, b: Array, p: float, impl: str) -> Array:
  """``W_p^p`` between the normalised measures ``Σ a_i δ_{u_i} / Σa`` and ``Σ b_j δ_{v_j} / Σb``
  (mass 1; callers scale by the common mass of the measures as given)."""
  us, cum_a = _sorted_cumweights(u, a, impl)
  vs, cum_b = _sorted_cumweights(v, b, impl)
  delta, ia, ib = quantile_grid(cum_a, cum_b, impl)
  return jnp.sum(delta * abs_pow(us[ia] - vs[ib], p))


def w1d(u: Array, v: Array, a: Array | None, b: Array | None, p: float, impl: str) -> Array:
  """The 1-D kernel for one problem: uniform weights of mass 1 when both ``a`` and ``b`` are
  ``None``; otherwise weights of equal mass ``M = (Σa + Σb) / 2``, used as given (the value is
  ``M`` times that of the normalised measures; ``None`` is uniform of mass 1)."""
  if a is None and b is None:
    return w1d_uniform(u, v, p, impl, uniform_grid(u.shape[-1], v.shape[-1], u.dtype))
  a = jnp.full(u.shape, 1.0 / u.shape[-1], u.dtype) if a is None else a
  b = jnp.full(v.shape, 1.0 / v.shape[-1], v.dtype) if b is None else b
  mass = 0.5 * (jnp.sum(a) + jnp.sum(b))
  return mass * w1d_weighted(u, v, a, b, p, impl)


def _check_line(name: str, x, dtype) -> Array:
  arr = V.as_float_array(name, x, dtype)
  if arr.ndim != 1:
    hint = " Use `jax.vmap` to batch problems." if arr.ndim > 1 else ""
    raise ValueError(f"`{name}` must be a 1-D array of positions, shape (n,); got shape "
                     f"{arr.shape}.{hint}")
  if arr.shape[0] == 0:
    raise ValueError(f"`{name}` is empty; a measure needs at least one atom.")
  V.check_finite(name, arr)
  return arr


@functools.partial(jax.jit, static_argnames=("p", "impl"))
def _wasserstein_1d(u, v, a, b, p, impl):
  return w1d(u, v, a, b, p, impl)


def wasserstein_1d(u, v, a=None, b=None, *, p=2, sort_impl="auto") -> Array:
  """Exact ``W_p^p`` between two weighted measures on the real line.

  Sorts both supports, merges the cumulative weights and integrates ``|F⁻¹ − G⁻¹|^p`` over the
  merged breakpoints: ``O((n + m) log(n + m))`` time, ``O(n + m)`` memory. The cost is
  ``|x − y|^p`` (for ``p = 2``: ``|x − y|²``, no ½). Differentiable in the positions and in the
  weights (the derivative is the one of the current monotone plan; at ties it is one-sided).
  Batch problems with ``jax.vmap``.

  Args:
    u: positions of the first measure, shape ``(n,)``.
    v: positions of the second measure, shape ``(m,)``.
    a: weights ``(n,)`` of ``u``, non-negative; ``None`` means uniform ``1/n`` (mass 1).
    b: weights ``(m,)`` of ``v``, as ``a``. ``a`` and ``b`` must have the same total mass ``M``
      (a ``ValueError`` otherwise); they are used as given, so the value is the OT cost between
      measures of mass ``M``, ``M`` times ``W_p^p`` of the normalised measures.
    p: exponent ``>= 1`` of the ground cost (static).
    sort_impl: ``"auto"`` (NumPy's sort on CPU through a host callback, XLA's elsewhere),
      ``"numpy"`` or ``"xla"`` (static).

  Returns:
    ``W_p^p``, a scalar of the inputs' floating dtype.

  See Also:
    :func:`otkit.sliced_wasserstein` (averages this over random 1-D projections).

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> u, v = jnp.array([0.0, 1.0, 3.0]), jnp.array([0.5, 2.0])
    >>> float(otkit.wasserstein_1d(u, v, p=1))
    0.75
    >>> float(otkit.wasserstein_1d(u, v, jnp.array([0.2, 0.3, 0.5]), p=2))
    0.625
  """
  dtype = V.common_dtype(u, v, a, b)
  u, v = _check_line("u", u, dtype), _check_line("v", v, dtype)
  a = None if a is None else V.check_weights("a", a, u.shape[0], dtype)
  b = None if b is None else V.check_weights("b", b, v.shape[0], dtype)
  if a is not None or b is not None:
    uniform = lambda n: jnp.full((n,), 1.0 / n, dtype)  # noqa: E731
    V.check_equal_mass(uniform(u.shape[0]) if a is None else a,
                       uniform(v.shape[0]) if b is None else b)
  p = check_order(p)
  impl = V.check_choice("sort_impl", sort_impl, _sorting.IMPLS)
  return _wasserstein_1d(u, v, a, b, p, impl)
