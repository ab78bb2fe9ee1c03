"""Exact optimal transport between weighted measures on the real line.

On the line the optimal plan is monotone, so ``W_p^p(μ, ν) = ∫₀¹ |F⁻¹(t) − G⁻¹(t)|^p dt`` with
``F⁻¹, G⁻¹`` the quantile functions. Both are step functions that change value only at the
cumulative weights, so the integral is a finite sum over the merged breakpoints.

The merged breakpoints also give the plan: the ``k``-th interval pairs one atom of each measure,
in sorted order, and moves the mass ``δ_k`` between them (the north-west corner rule on the
sorted supports). Consecutive pairs differ in exactly one index, so the ``n + m`` pairs form a
staircase through the sorted cost matrix, a spanning tree of the transportation problem. The
cost ``|x − y|^p`` (``p ≥ 1``) is a Monge matrix on sorted supports, for which this basis is
optimal (Hoffman 1963): potentials that are tight on the staircase
(``f_i + g_j = C_ij`` along it, one cumulative sum) are dual feasible everywhere, so they are
optimal dual potentials.

References:
  Santambrogio, "Optimal Transport for Applied Mathematicians", Birkhäuser 2015, §2.2.
  Peyré, Cuturi, "Computational Optimal Transport", Found. Trends Mach. Learn. 2019, Remark 2.30
  and §3.4 (the north-west corner rule).
  Hoffman, "On simple linear programming problems", Proc. Symp. Pure Math. 1963 (Monge arrays).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.closed_form import _sorting
from otkit.solvers._output import Result, finite_result

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
  """The sorting permutation of ``x`` and the cumulative normalised weights in that order."""
  perm = _sorting.argsort(x, impl)
  cum = jnp.cumsum(w[perm]) / jnp.sum(w)
  return perm, cum.at[-1].set(1.0)


def monotone_pairs(u: Array, v: Array, a: Array, b: Array, impl: str) -> tuple[Array, Array, Array]:
  """The monotone plan between the normalised weighted measures on ``u (n,)`` and ``v (m,)``:
  for each of the ``n + m`` merged quantile intervals, the atoms it pairs (``rows``, ``cols``)
  and its length ``δ`` (the mass it moves; ``Σ δ = 1``)."""
  perm_a, cum_a = _sorted_cumweights(u, a, impl)
  perm_b, cum_b = _sorted_cumweights(v, b, impl)
  delta, ia, ib = quantile_grid(cum_a, cum_b, impl)
  return perm_a[ia], perm_b[ib], delta


def w1d_weighted(u: Array, v: Array, a: Array, b: Array, p: float, impl: str) -> Array:
  """``W_p^p`` between the normalised measures ``Σ a_i δ_{u_i} / Σa`` and ``Σ b_j δ_{v_j} / Σb``
  (mass 1; callers scale by the common mass of the measures as given)."""
  rows, cols, delta = monotone_pairs(u, v, a, b, impl)
  return jnp.sum(delta * abs_pow(u[rows] - v[cols], p))


def weights_and_mass(u: Array, v: Array, a: Array | None,
                     b: Array | None) -> tuple[Array, Array, Array]:
  """``a``, ``b`` (``None``: uniform of mass 1) and their common mass ``(Σa + Σb) / 2``."""
  a = jnp.full(u.shape, 1.0 / u.shape[-1], u.dtype) if a is None else a
  b = jnp.full(v.shape, 1.0 / v.shape[-1], v.dtype) if b is None else b
  return a, b, 0.5 * (jnp.sum(a) + jnp.sum(b))


def w1d(u: Array, v: Array, a: Array | None, b: Array | None, p: float, impl: str) -> Array:
  """The 1-D kernel for one problem: uniform weights of mass 1 when both ``a`` and ``b`` are
  ``None``; otherwise weights of equal mass ``M = (Σa + Σb) / 2``, used as given (the value is
  ``M`` times that of the normalised measures; ``None`` is uniform of mass 1)."""
  if a is None and b is None:
    return w1d_uniform(u, v, p, impl, uniform_grid(u.shape[-1], v.shape[-1], u.dtype))
  a, b, mass = weights_and_mass(u, v, a, b)
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
  u, v, a, b, p, impl = check_problem(u, v, a, b, p, sort_impl)
  return _wasserstein_1d(u, v, a, b, p, impl)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OT1DOutput:
  """Result of :func:`ot_1d` (a pytree; leading batch axes under ``vmap``).

  Attributes:
    value: ``W_p^p`` between the measures as given (mass ``M``), the same number as
      :func:`otkit.wasserstein_1d`.
    rows, cols: ``(n + m,)`` int32, the atoms paired by each entry of the sparse plan, in the
      order of the monotone (north-west corner) staircase. Entries may carry zero mass (at
      zero weights, ties of cumulative weights, and the last entry); a pair may repeat with
      zero mass.
    mass: ``(n + m,)``, the mass moved between ``u[rows[k]]`` and ``v[cols[k]]``; it sums to
      ``a`` over ``rows`` and to ``b`` over ``cols``.
    f, g: ``(n,)`` and ``(m,)`` optimal dual potentials: ``f_i + g_j ≤ |u_i − v_j|^p`` for every
      pair, with equality on the plan, and ``⟨a, f⟩ + ⟨b, g⟩ = value``; gauge
      ``⟨a, f⟩ = ⟨b, g⟩`` (the potentials are unique up to this gauge when the plan is
      non-degenerate; zero-weight atoms get the value that keeps them tight on the staircase).
    result: ``CONVERGED``, or ``NON_FINITE`` if a value overflowed.
  """

  value: Array
  rows: Array
  cols: Array
  mass: Array
  f: Array
  g: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED

  @property
  def plan(self) -> Array:
    """The dense plan ``(..., n, m)`` (for small problems: it stores ``n × m`` numbers)."""
    n, m = self.f.shape[-1], self.g.shape[-1]
    dense = lambda r, c, w: jnp.zeros((n, m), w.dtype).at[r, c].add(w)  # noqa: E731
    for _ in range(self.mass.ndim - 1):
      dense = jax.vmap(dense)
    return dense(self.rows, self.cols, self.mass)


def staircase_potentials(cost: Array, rows: Array) -> tuple[Array, Array]:
  """Potentials tight along a staircase of cells ``(rows[k], cols[k])`` of costs ``cost (K,)``.

  A step that moves to a new row changes only ``f`` (the column is shared), one that moves to a
  new column only ``g``: ``f`` along the path is a cumulative sum of the cost increments on row
  steps (``f = cost[0]`` and ``g = 0`` at the first cell), and ``g = cost − f``.
  """
  row_step = jnp.diff(rows, prepend=rows[:1]) != 0
  increments = jnp.where(row_step, jnp.diff(cost, prepend=cost[:1]), 0.0)
  f_path = cost[0] + jnp.cumsum(increments)
  return f_path, cost - f_path


def ot1d(u: Array, v: Array, a: Array | None, b: Array | None, p: float,
         impl: str) -> OT1DOutput:
  """The 1-D kernel of :func:`ot_1d` for one problem (weights as in :func:`w1d`)."""
  a, b, mass_total = weights_and_mass(u, v, a, b)
  rows, cols, delta = monotone_pairs(u, v, a, b, impl)
  cost = abs_pow(u[rows] - v[cols], p)
  mass = mass_total * delta
  value = jnp.sum(mass * cost)
  f_path, g_path = staircase_potentials(cost, rows)
  # Every atom is on the staircase; repeated cells carry the same potential.
  f = jnp.zeros(u.shape, cost.dtype).at[rows].set(f_path)
  g = jnp.zeros(v.shape, cost.dtype).at[cols].set(g_path)
  shift = (jnp.sum(b * g) - jnp.sum(a * f)) / (jnp.sum(a) + jnp.sum(b))
  f, g = f + shift, g - shift
  return OT1DOutput(value=value, rows=rows.astype(jnp.int32), cols=cols.astype(jnp.int32),
                    mass=mass, f=f, g=g, result=finite_result(value, f, g))


@functools.partial(jax.jit, static_argnames=("p", "impl"))
def _ot_1d(u, v, a, b, p, impl):
  return ot1d(u, v, a, b, p, impl)


def check_problem(u, v, a, b, p, sort_impl):
  """The eager checks shared by :func:`wasserstein_1d` and :func:`ot_1d`."""
  dtype = V.common_dtype(u, v, a, b)
  u, v = _check_line("u", u, dtype), _check_line("v", v, dtype)
  a = None if a is None else V.check_weights("a", a, u.shape[0], dtype)
  b = None if b is None else V.check_weights("b", b, v.shape[0], dtype)
  if a is not None or b is not None:
    uniform = lambda n: jnp.full((n,), 1.0 / n, dtype)  # noqa: E731
    V.check_equal_mass(uniform(u.shape[0]) if a is None else a,
                       uniform(v.shape[0]) if b is None else b)
  return u, v, a, b, check_order(p), V.check_choice("sort_impl", sort_impl, _sorting.IMPLS)


def ot_1d(u, v, a=None, b=None, *, p=2, sort_impl="auto") -> OT1DOutput:
  """Exact optimal transport on the real line: the value, the plan and the dual potentials.

  The plan is the monotone coupling, built by the north-west corner rule on the sorted
  supports, kept sparse: ``n + m`` entries ``(rows, cols, mass)`` (``.plan`` gives the dense
  ``n × m`` matrix for small problems). The potentials are tight along it and feasible for
  every pair, so they certify optimality (strong duality ``⟨a, f⟩ + ⟨b, g⟩ = value``).
  ``O((n + m) log(n + m))`` time, ``O(n + m)`` memory; runs under ``jit``; batch problems with
  ``jax.vmap``. ``value`` and ``mass`` are differentiable in the positions and weights, ``f``
  and ``g`` in the positions (the derivatives of the current staircase; one-sided at ties).

  Args:
    u: positions of the first measure, shape ``(n,)``.
    v: positions of the second measure, shape ``(m,)``.
    a: weights ``(n,)`` of ``u``, non-negative (zeros allowed); ``None``: uniform ``1/n``.
    b: weights ``(m,)`` of ``v``, as ``a``; the same total mass ``M`` as ``a`` (a
      ``ValueError`` otherwise). The plan moves mass ``M``.
    p: exponent ``>= 1`` of the ground cost ``|x − y|^p`` (static).
    sort_impl: ``"auto"``, ``"numpy"`` or ``"xla"`` (static), as in
      :func:`otkit.wasserstein_1d`.

  Returns:
    :class:`OT1DOutput` with ``value``, the sparse plan ``rows, cols, mass`` (``n + m``
    entries), the potentials ``f (n,)``, ``g (m,)`` and ``result``.

  References:
    Peyré, Cuturi, "Computational Optimal Transport", 2019, Remark 2.30 and §3.4.
    Hoffman, "On simple linear programming problems", 1963.

  Example:
    >>> import jax.numpy as jnp, numpy as np, otkit
    >>> out = otkit.ot_1d(jnp.array([0.0, 1.0, 3.0]), jnp.array([0.5, 2.0]),
    ...                   jnp.array([0.2, 0.3, 0.5]), p=2)
    >>> float(out.value)
    0.625
    >>> np.asarray(out.plan, np.float64).round(2).tolist()
    [[0.2, 0.0], [0.3, 0.0], [0.0, 0.5]]
    >>> float(jnp.sum(out.f * jnp.array([0.2, 0.3, 0.5])) + jnp.sum(out.g * 0.5))
    0.625
  """
  u, v, a, b, p, impl = check_problem(u, v, a, b, p, sort_impl)
  return _ot_1d(u, v, a, b, p, impl)
