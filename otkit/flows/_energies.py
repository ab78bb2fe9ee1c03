"""Functionals of particle systems, composable with ``+`` and scalar ``*``.

A measure ``ρ = (1/n) Σ_i δ_{x_i}`` is represented by its particles ``x (n, d)``. An
:class:`Energy` is a weighted sum of terms, each an empirical functional ``F̂(x_1..x_n)``:

- potential ``(1/n) Σ_i V(x_i)`` (:func:`potential_energy`);
- interaction ``(1/2n²) Σ_ij W(x_i − x_j)`` (:func:`interaction_energy`);
- internal energy ``∫ ρ log ρ`` by a kernel density estimate (:func:`kde_entropy`), or by
  Langevin noise in :func:`otkit.flows.gradient_flow` (``temperature``);
- a distance to a fixed reference measure: the Sinkhorn divergence
  (:func:`sinkhorn_divergence_to`, warm-started along a flow), sliced Wasserstein
  (:func:`sliced_wasserstein_to`) or OTDD to a labelled dataset (:func:`otdd_to`).

Every term is a frozen dataclass registered as a pytree (arrays are leaves, functions and
options static), so an energy passes through ``jit``, ``vmap`` and ``scan`` as an argument.
A term has ``value(x)`` and ``check(x)``; a term that carries solver state from one step of a
flow to the next (warm starts) also has ``init(x) -> state`` and
``evaluate(x, state) -> (value, state)``.

References:
  Santambrogio, "{Euclidean, metric, and Wasserstein} gradient flows: an overview", Bull. Math.
  Sci. 2017 (the three energies).
  Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.closed_form import _one_d
from otkit.closed_form import _sorting
from otkit.estimators import _sliced
from otkit.estimators._divergence import DEFAULT_SOLVER, self_problems, solve_divergence
from otkit.geometry import PointCloud
from otkit.solvers import _dual
from otkit.solvers import _solve
from otkit.solvers._solver import check_solver

Array = jax.Array
_static = dict(static=True)


def _static_field(**kwargs):
  return dataclasses.field(metadata=_static, **kwargs)


def _scalar_output(name: str, fn: Callable, *args, what: str) -> None:
  """Raises unless ``fn(*args)`` (evaluated abstractly) is a floating scalar."""
  try:
    out = jax.eval_shape(fn, *args)
  except Exception as err:  # the user's function fails on inputs of the flow's shape
    raise ValueError(f"`{name}` failed on {what}: {type(err).__name__}: {err}") from err
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
    shape = getattr(out, "shape", type(out).__name__)
    raise ValueError(f"`{name}` must return a scalar on {what}; got {shape}. Reduce it (e.g. "
                     "with `jnp.sum` or `jnp.mean`) to one number.")
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"`{name}` must return a floating scalar; got dtype {out.dtype}.")


def _check_dimension(name: str, data: Array, x: Array) -> None:
  if data.shape[1] != x.shape[1]:
    raise ValueError(f"`{name}` has dimension {data.shape[1]} but the particles have dimension "
                     f"{x.shape[1]}; they must live in the same space.")


def _point(x: Array) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape[1:], x.dtype)


# ---------------------------------------------------------------------------------------------
# Terms without state


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FunctionTerm:
  """A user functional ``fn(x (n, d)) -> scalar``."""

  fn: Callable = _static_field()

  def value(self, x: Array) -> Array:
    return self.fn(x)

  def check(self, x: Array) -> None:
    _scalar_output("energy", self.fn, jax.ShapeDtypeStruct(x.shape, x.dtype),
                   what=f"particles of shape {x.shape}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Potential:
  """``(1/n) Σ_i V(x_i)``; its Wasserstein gradient at ``x_i`` is ``∇V(x_i)``."""

  V: Callable = _static_field()

  def value(self, x: Array) -> Array:
    return jnp.mean(jax.vmap(self.V)(x))

  def check(self, x: Array) -> None:
    _scalar_output("V", self.V, _point(x), what=f"one point of shape {x.shape[1:]}")


def _row_chunks(fn: Callable, x: Array, chunk_size: int | None) -> Array:
  """``fn`` on every row of ``x`` (``lax.map`` over blocks of ``chunk_size`` rows)."""
  if chunk_size is None:
    chunk_size = max(1, min(x.shape[0], (1 << 21) // max(x.shape[0] * x.shape[1], 1)))
  return jax.lax.map(fn, x, batch_size=min(chunk_size, x.shape[0]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Interaction:
  """``(1/2n²) Σ_ij W(x_i − x_j)``; rows of pairs in blocks (no ``n × n × d`` array)."""

  W: Callable = _static_field()
  chunk_size: int | None = _static_field(default=None)

  def value(self, x: Array) -> Array:
    rows = _row_chunks(lambda xi: jnp.mean(jax.vmap(self.W)(xi - x)), x, self.chunk_size)
    return 0.5 * jnp.mean(rows)

  def check(self, x: Array) -> None:
    _scalar_output("W", self.W, _point(x), what=f"one difference vector of shape {x.shape[1:]}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KDEEntropy:
  """``(1/n) Σ_i log ρ_h(x_i)`` with the Gaussian KDE ``ρ_h = (1/n) Σ_j N(x_j, h² I)``: a
  differentiable surrogate of ``∫ ρ log ρ`` (the negative entropy)."""

  bandwidth: Array
  chunk_size: int | None = _static_field(default=None)

  def value(self, x: Array) -> Array:
    h = self.bandwidth.astype(x.dtype)
    n, d = x.shape
    norm = jnp.log(n) + 0.5 * d * jnp.log(2.0 * jnp.pi * h * h)

    def log_density(xi):
      return jax.nn.logsumexp(-0.5 * jnp.sum((xi - x) ** 2, axis=1) / (h * h)) - norm

    return jnp.mean(_row_chunks(log_density, x, self.chunk_size))

  def check(self, x: Array) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Distances to a reference measure


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SinkhornTo:
  """``S_ε(ρ, ν)``, the debiased Sinkhorn divergence to fixed ``ν = Σ_j b_j δ_{y_j}``.

  Along a flow, the potentials of ``OT_ε(ρ, ν)`` and ``OT_ε(ρ, ρ)`` are carried from one step
  to the next as warm starts (``warm_start=True``), and ``OT_ε(ν, ν)``, which does not move, is
  solved once. ``solver`` is a solver object (a pytree: its tolerance is traced).
  """

  y: Array
  b: Array
  epsilon: Array
  solver: Any
  cost_fn: Any = _static_field(default=None)
  chunk_size: int | None = _static_field(default=None)
  warm_start: bool = _static_field(default=True)

  def _problem(self, x: Array) -> _dual.Problem:
    # Arrays were validated when the term was built: the problem is assembled directly, so
    # that nothing is re-checked at every step of a flow.
    dtype = x.dtype
    y, b, eps = self.y.astype(dtype), self.b.astype(dtype), self.epsilon.astype(dtype)
    a = jnp.full(x.shape[:1], 1.0 / x.shape[0], dtype)
    one = jnp.ones((), dtype)
    return _dual.Problem(PointCloud(x, y, self.cost_fn, self.chunk_size), a, b, eps, one, one)

  def value(self, x: Array) -> Array:
    return solve_divergence(self._problem(x), self.solver).value

  def init(self, x: Array):
    """``(f_xy, g_xy, f_xx, out_yy)``: zero potentials and the solved fixed self-term."""
    _, problem_yy = self_problems(self._problem(x))
    zeros_x, zeros_y = jnp.zeros(x.shape[:1], x.dtype), jnp.zeros(self.y.shape[:1], x.dtype)
    out_yy = jax.lax.stop_gradient(_solve.solve_validated(problem_yy, self.solver, symmetric=True))
    return zeros_x, zeros_y, zeros_x, out_yy

  def evaluate(self, x: Array, state):
    """``(S_ε(ρ_x, ν), new state)``, each solve started from the potentials in ``state``."""
    f_xy, g_xy, f_xx, out_yy = state
    warm = self.warm_start
    div = solve_divergence(self._problem(x), self.solver, init_xy=(f_xy, g_xy) if warm else None,
                           init_xx=f_xx if warm else None, yy=out_yy)
    return div.value, jax.lax.stop_gradient((div.xy.f, div.xy.g, div.xx.f, out_yy))

  def check(self, x: Array) -> None:
    _check_dimension("y", self.y, x)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SlicedTo:
  """``SW_p^p(ρ, ν)`` over fixed directions drawn from ``key`` (a deterministic functional);
  ``b`` has mass 1, as the particles (``uniform``: ``b`` is ``1/m``)."""

  key: Array
  y: Array
  b: Array
  n_projections: int = _static_field(default=128)
  p: float = _static_field(default=2.0)
  sort_impl: str = _static_field(default="auto")
  uniform: bool = _static_field(default=True)

  def value(self, x: Array) -> Array:
    dtype = x.dtype
    y, b = self.y.astype(dtype), self.b.astype(dtype)
    a = jnp.full(x.shape[:1], 1.0 / x.shape[0], dtype)
    thetas = _sliced.directions(self.key, self.n_projections, x.shape[1], dtype)
    return _sliced.sliced_value(thetas, x, y, a, b, p=self.p, uniform=self.uniform,
                                sort_impl=self.sort_impl).value

  def check(self, x: Array) -> None:
    _check_dimension("y", self.y, x)


# ---------------------------------------------------------------------------------------------
# Sums


def _check_weight(weight) -> Array:
  w = V.as_float_array("weight", weight)
  if w.ndim != 0:
    raise ValueError(f"`weight`: an energy can be scaled by a scalar only; got shape {w.shape}.")
  if V.is_concrete(w) and not np.isfinite(float(w)):
    raise ValueError(f"`weight` of an energy must be finite; got {float(w)!r}.")
  return w


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Energy:
  """``F(x) = Σ_k w_k F_k(x)``, a weighted sum of empirical functionals (a pytree).

  Build one with the functions of :mod:`otkit.flows` and combine them with ``+``, ``-`` and
  multiplication by a scalar; a plain function ``fn(x) -> scalar`` can be added too. Calling
  ``energy(x)`` evaluates it (cold solves for the distance terms).

  Attributes:
    terms: the functionals ``F_k`` (pytrees with ``value(x)`` and ``check(x)``).
    weights: their weights ``w_k``, scalars (traced: ``grad``/``vmap`` over them work).

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> F = otkit.flows.potential_energy(lambda z: 0.5 * z @ z)
    >>> F = F + 2.0 * otkit.flows.interaction_energy(lambda z: 0.5 * z @ z)
    >>> float(F(jnp.array([[1.0, 0.0], [-1.0, 0.0]])))  # ½ + 2 · ½ · (0 + 2 + 2 + 0) / 4
    1.5
  """

  terms: tuple
  weights: tuple

  def __call__(self, x: Array) -> Array:
    x = V.check_points("x", x)
    self.check(x)
    total = jnp.zeros((), x.dtype)
    for term, weight in zip(self.terms, self.weights):
      total = total + weight.astype(x.dtype) * jnp.asarray(term.value(x), x.dtype)
    return total

  def init(self, x: Array) -> tuple:
    """The state each term carries along a flow (``()`` for terms without one)."""
    return tuple(t.init(x) if hasattr(t, "init") else () for t in self.terms)

  def evaluate(self, x: Array, state: tuple) -> tuple[Array, tuple]:
    """``(F(x), new state)``, warm-started from ``state``."""
    total, new_state = jnp.zeros((), x.dtype), []
    for term, weight, s in zip(self.terms, self.weights, state):
      if hasattr(term, "evaluate"):
        value, s = term.evaluate(x, s)
      else:
        value = term.value(x)
      total = total + weight.astype(x.dtype) * jnp.asarray(value, x.dtype)
      new_state.append(s)
    return total, tuple(new_state)

  def check(self, x: Array) -> None:
    """Raises a ``ValueError`` if a term cannot be evaluated on particles like ``x``."""
    for term in self.terms:
      term.check(x)

  def __add__(self, other) -> "Energy":
    other = as_energy(other)
    return Energy(self.terms + other.terms, self.weights + other.weights)

  __radd__ = __add__

  def __mul__(self, weight) -> "Energy":
    if isinstance(weight, Energy) or callable(weight):
      return NotImplemented
    w = _check_weight(weight)
    return Energy(self.terms, tuple(w * v for v in self.weights))

  __rmul__ = __mul__

  def __neg__(self) -> "Energy":
    return -1.0 * self

  def __sub__(self, other) -> "Energy":
    return self + (-as_energy(other))

  def __rsub__(self, other) -> "Energy":
    return as_energy(other) + (-self)

  def __truediv__(self, weight) -> "Energy":
    return self * (1.0 / _check_weight(weight))


def _single(term) -> Energy:
  return Energy((term,), (jnp.asarray(1.0),))


def as_energy(energy, *, name: str = "energy") -> Energy:
  """An :class:`Energy` from an energy or a function ``fn(x (n, d)) -> scalar`` (``name``: the
  argument named by the error otherwise)."""
  if isinstance(energy, Energy):
    return energy
  if isinstance(energy, numbers.Number) or not callable(energy):
    raise ValueError(f"`{name}` must be an otkit.flows.Energy or a function x -> scalar; got "
                     f"{type(energy).__name__}.")
  return _single(FunctionTerm(energy))


def total(*energies) -> Energy:
  """The sum of energies (or functions ``x -> scalar``), the same as ``e1 + e2 + …``."""
  if not energies:
    raise ValueError("`total` needs at least one energy.")
  out = as_energy(energies[0], name="energies")
  for energy in energies[1:]:
    out = out + as_energy(energy, name="energies")
  return out


# ---------------------------------------------------------------------------------------------
# Builders


def _check_callable(name: str, fn) -> Callable:
  if not callable(fn):
    raise ValueError(f"`{name}` must be a function; got {type(fn).__name__}.")
  return fn


def _check_chunk(chunk_size):
  return None if chunk_size is None else V.check_static_int("chunk_size", chunk_size)


def potential_energy(V: Callable) -> Energy:
  """The potential energy ``∫ V dρ``, empirically ``(1/n) Σ_i V(x_i)``.

  Args:
    V: a function from one point ``(d,)`` to a scalar (static; define it once to reuse the
      compiled flow).

  Returns:
    An :class:`Energy`. Along :func:`otkit.flows.gradient_flow` each particle moves by
    ``−step_size · ∇V(x_i)``.

  References:
    Santambrogio, "Optimal Transport for Applied Mathematicians", Birkhäuser 2015, §8.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> F = otkit.flows.potential_energy(lambda z: 0.5 * jnp.sum((z - 1.0) ** 2))
    >>> float(F(jnp.zeros((4, 2))))
    1.0
  """
  return _single(Potential(_check_callable("V", V)))


def interaction_energy(W: Callable, *, chunk_size: int | None = None) -> Energy:
  """The interaction energy ``½ ∬ W(z − z') dρ dρ``, empirically ``(1/2n²) Σ_ij W(x_i − x_j)``.

  Args:
    W: a function from one difference vector ``(d,)`` to a scalar (static). For an even ``W``
      each particle moves by ``−step_size · (1/n) Σ_j ∇W(x_i − x_j)``.
    chunk_size: rows of pairs evaluated together (static); memory ``O(chunk · n · d)``.

  Returns:
    An :class:`Energy`.

  References:
    Carrillo, McCann, Villani, "Kinetic equilibration rates for granular media and related
    equations", Rev. Mat. Iberoam. 2003.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> F = otkit.flows.interaction_energy(lambda z: 0.5 * z @ z)
    >>> float(F(jnp.array([[1.0], [-1.0]])))  # ½ · (0 + 2 + 2 + 0) / 4
    0.5
  """
  return _single(Interaction(_check_callable("W", W), _check_chunk(chunk_size)))


def kde_entropy(bandwidth, *, chunk_size: int | None = None) -> Energy:
  """A differentiable surrogate of the internal energy ``∫ ρ log ρ`` (negative entropy).

  ``(1/n) Σ_i log((1/n) Σ_j N(x_i; x_j, h² I))``. Adding ``β · kde_entropy(h)`` to an energy
  adds a diffusion of temperature ``β`` to its flow, deterministically (the alternative is
  Langevin noise, ``temperature=β`` in :func:`otkit.flows.gradient_flow`).

  Args:
    bandwidth: the kernel width ``h > 0`` (traced).
    chunk_size: rows evaluated together (static).

  Returns:
    An :class:`Energy`.

  References:
    Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (2000, 1))
    >>> round(float(otkit.flows.kde_entropy(0.2)(x)), 1)  # −entropy of N(0, 1) ≈ −1.42
    -1.4
  """
  return _single(KDEEntropy(V.check_positive("bandwidth", bandwidth, None),
                            _check_chunk(chunk_size)))


def sinkhorn_divergence_to(y, b=None, *, epsilon, cost_fn=None, chunk_size=None, solver=None,
                           warm_start=True) -> Energy:
  """The debiased Sinkhorn divergence ``S_ε(ρ, ν)`` to a fixed measure ``ν = Σ_j b_j δ_{y_j}``.

  The same functional as :func:`otkit.sinkhorn_divergence` (online, O((n + m)·d) memory). Along
  :func:`otkit.flows.gradient_flow` the dual potentials of one step warm-start the next, so a
  step after the first costs a few Sinkhorn sweeps, and ``OT_ε(ν, ν)`` is solved once.

  Args:
    y: target points ``(m, d)``.
    b: target weights ``(m,)``, default uniform.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced).
    cost_fn: the ground cost (default ``‖x − y‖²``, no ½).
    chunk_size: rows per block of the online reductions (static).
    solver: a solver object (:class:`otkit.Sinkhorn`, :class:`otkit.SinkhornNewton`); default
      ``Sinkhorn(grad_mode="envelope")``, exact first derivatives by Danskin's theorem (no
      linear solve), as :func:`otkit.sinkhorn_divergence`.
    warm_start: carry the potentials along a flow (static).

  Returns:
    An :class:`Energy`.

  References:
    Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal Transport and
    MMD using Sinkhorn Divergences", AISTATS 2019.

  Example:
    >>> import jax, otkit
    >>> y = jax.random.normal(jax.random.key(1), (100, 2))
    >>> F = otkit.flows.sinkhorn_divergence_to(y, epsilon=0.1)
    >>> values = otkit.flows.gradient_flow(F, y + 1.0, step_size=0.5, n_steps=20).values
    >>> bool(values[-1] < 0.01 * values[0])
    True
  """
  y = V.check_points("y", y)
  b = V.check_weights("b", b, y.shape[0], y.dtype)
  V.check_equal_mass(jnp.ones((1,), y.dtype), b, names=("particles (mass 1)", "b"))
  solver = DEFAULT_SOLVER if solver is None else check_solver(solver)
  term = SinkhornTo(y, b, V.check_positive("epsilon", epsilon, y.dtype), solver,
                    cost_fn=cost_fn, chunk_size=_check_chunk(chunk_size),
                    warm_start=bool(warm_start))
  return _single(term)


def sliced_wasserstein_to(key, y, b=None, *, n_projections=128, p=2, sort_impl="auto") -> Energy:
  """The sliced Wasserstein ``SW_p^p(ρ, ν)`` to a fixed measure, over directions fixed by ``key``.

  The directions are drawn once from ``key``, so the functional (and its flow) is deterministic;
  see :func:`otkit.sliced_wasserstein` for the estimator.

  Args:
    key: a PRNG key (``jax.random.key``).
    y: target points ``(m, d)``; b: target weights ``(m,)`` of total mass 1, the mass of the
      particles (a ``ValueError`` otherwise: weights are never normalised), default uniform.
    n_projections, p, sort_impl: as in :func:`otkit.sliced_wasserstein` (static).

  Returns:
    An :class:`Energy`.

  References:
    Liutkus, Şimşekli, Majewski, Durmus, Stöter, "Sliced-Wasserstein Flows: Nonparametric
    Generative Modeling via Optimal Transport and Diffusions", ICML 2019.

  Example:
    >>> import jax, otkit
    >>> y = jax.random.normal(jax.random.key(1), (200, 3))
    >>> F = otkit.flows.sliced_wasserstein_to(jax.random.key(0), y, n_projections=64)
    >>> bool(F(y + 1.0) > F(y))
    True
  """
  key = V.check_key(key)
  y = V.check_points("y", y)
  uniform = b is None
  b = V.check_weights("b", b, y.shape[0], y.dtype)
  V.check_equal_mass(jnp.ones((1,), y.dtype), b, names=("particles (mass 1)", "b"))
  n_projections = V.check_static_int("n_projections", n_projections)
  sort_impl = V.check_choice("sort_impl", sort_impl, _sorting.IMPLS)
  return _single(SlicedTo(key, y, b, n_projections=n_projections, p=_one_d.check_order(p),
                          sort_impl=sort_impl, uniform=uniform))
