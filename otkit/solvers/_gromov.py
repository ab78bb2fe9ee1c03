"""Entropic Gromov–Wasserstein and fused Gromov–Wasserstein by mirror descent.

The problem: couple ``(A, a)`` and ``(B, b)``, measures whose points live in different spaces
and are known only through their intra-costs, by minimising (``β`` = ``fused_penalty``)

  ``E(T) = (1 − β) J(T) + β ⟨C, T⟩ + ε KL(T ‖ a⊗b) + ρ_a KL(T1 ‖ a) + ρ_b KL(Tᵀ1 ‖ b)``

with ``J(T) = Σ_ijkl L(A_ik, B_jl) T_ij T_kl`` (:mod:`otkit.solvers._gromov_terms`), ``C`` an
optional cost between the two measures (fused GW, Vayer et al. 2019) and ``ρ = ε τ / (1 − τ)``
as in :func:`otkit.solve` (``τ = 1``: the marginal is hard). Mirror descent with the KL
geometry and step ``1/ε`` (Peyré, Cuturi, Solomon 2016) makes each outer step one entropic OT
problem on the linearised cost ``G(T_k) = (1 − β) ∇J(T_k) + β C``:

  ``T_{k+1} = argmin_T ⟨G(T_k), T⟩ + ε KL(T ‖ a⊗b) + ρ_a KL(T1 ‖ a) + ρ_b KL(Tᵀ1 ‖ b)``,

solved by the inner solver object warm-started from the last potentials. A fixed point is a
stationary point of ``E``. For balanced problems the marginal terms of ``∇J`` use ``a`` and
``b`` (POT's convention; they only shift the potentials), for unbalanced ones the marginals
of ``T_k``. The outer loop stops when the linearised cost moves by at most ``outer_tol · ε``
in the ``a⊗b``-weighted RMS (the exponent of the Gibbs kernel moves by at most ``outer_tol``).

Point clouds with the squared Euclidean cost use factored intra-costs: ``G`` is then the
inner-product cost of ``(n, D)`` and ``(m, D)`` features, ``D = d_y + 4`` (``+ d + 2`` fused),
and the inner solver reduces it online: no ``n × n``, ``m × m`` or ``n × m`` matrix is stored
(as for any point cloud, the solver may store a linearised cost of at most 2²⁵ entries when
``D ≥ 16``, where reading it is faster than evaluating it).

Derivatives are taken by the envelope theorem at the outer fixed point: the plan is held fixed
and the multipliers of the hard marginals are the last potentials, which is exact for the
regularised value ``E`` (``reg_value``) at a stationary point.

References:
  Peyré, Cuturi, Solomon, "Gromov–Wasserstein averaging of kernel and distance matrices",
  ICML 2016.
  Vayer, Chapel, Flamary, Tavenard, Courty, "Optimal transport for structured data with
  application on graphs", ICML 2019.
  Scetbon, Peyré, Cuturi, "Linear-time Gromov Wasserstein distances using low rank couplings
  and costs", ICML 2022 (the factored costs).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.closed_form._one_d import ot1d
from otkit.geometry import CostMatrix, PointCloud, SqEuclidean
from otkit.geometry import _geometry as G
from otkit.geometry import _reductions as R
from otkit.geometry._costs import Dot
from otkit.solvers import _dual, _sinkhorn
from otkit.solvers import _gromov_terms as T_
from otkit.solvers._output import Result, SinkhornOutput, combine_results, result_code
from otkit.solvers._plan import apply_scaled, log_scalings, plan_matrix
from otkit.solvers._solve import check_marginals, solve_validated
from otkit.solvers._solver import Sinkhorn, check_solver

Array = jax.Array
LOSSES = ("square", "kl")
# The outer loop stops, STALLED, after this many steps without a 1 % gain on its best error: the
# floor set by the inexact inner solves (about the inner tol times the cost's scale over ε), or
# a cycle of the iteration. Escaping the product coupling can take tens of steps of growth.
STALL_OUTER = 50


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GWOutput:
  """Result of :func:`gromov_wasserstein` (a pytree).

  Attributes:
    value: the (fused) GW objective of the returned plan, ``(1 − β) J(T) + β ⟨C, T⟩``, with
      ``J(T) = Σ L(A_ik, B_jl) T_ij T_kl`` (POT's ``entropic_gromov_wasserstein2`` value).
    reg_value: ``value + ε KL(T ‖ a⊗b) + ρ_a KL(T1 ‖ a) + ρ_b KL(Tᵀ1 ‖ b)``, the objective
      that mirror descent minimises.
    linear_output: the :class:`otkit.SinkhornOutput` of the last linearised problem, whose plan
      is the returned coupling.
    geom: the geometry of the last linearised cost, shape ``(n, m)`` (a point cloud of features
      for factored costs, else a :class:`otkit.CostMatrix`).
    n_outer: outer (linearisation) steps performed.
    error: the last outer error (RMS move of the linearised cost, in units of ``ε``).
    errors: ``(max_outer_iters,)`` the outer error of every step (``−1`` after the last).
    result: an :class:`otkit.Result` code: the worse of the outer loop's and the last inner
      solve's; ``converged`` is ``result == CONVERGED``.

  :func:`otkit.transport_plan` ``(out)``, :func:`otkit.apply_plan` ``(out, vec)`` and
  :func:`otkit.transport_cost` ``(out)`` accept it in place of a geometry and a Sinkhorn output.
  """

  value: Array
  reg_value: Array
  linear_output: SinkhornOutput
  geom: Any
  n_outer: Array
  error: Array
  errors: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


@dataclasses.dataclass(frozen=True)
class Config:
  """The static options of one problem."""

  factored: bool
  loss: str
  balanced: bool
  symmetric: bool  # dense intra-costs only
  fused: bool
  max_outer_iters: int


class Data(NamedTuple):
  """The arrays of one problem (differentiable)."""

  xx: Array  # factored: centred points (n, d_x); dense: A (n, n)
  yy: Array  # factored: centred points (m, d_y); dense: B (m, m)
  xy: tuple  # fused: factored (x', y') on a common centre, dense (C,); else ()
  a: Array
  b: Array
  epsilon: Array
  tau_a: Array
  tau_b: Array
  beta: Array
  init: Any  # the initial coupling, as :func:`initial_coupling` gives it


class State(NamedTuple):
  lin: Any  # the linearised cost for the next solve: G (n, m) or features (X, Y, M)
  used: Any  # the linearised cost of the last solve
  f: Array  # the potentials of the last solve
  g: Array
  aux: tuple  # its (result, n_iters, error)
  value: Array  # (1 − β) J + β ⟨C, T⟩ of its plan T
  r: Array  # T1
  c: Array  # Tᵀ1 (b when balanced)
  kl: Array  # KL(T ‖ a⊗b)
  error: Array
  errors: Array
  n_outer: Array
  best: Array  # the smallest outer error so far
  since_best: Array  # outer steps since it improved by 1 %


# ----------------------------------------------------------------------------------- factored


def _x_features(data: Data, r: Array, M: Array) -> Array:
  """``X (n, D)``: the source side of ``G = X Yᵀ`` for row marginal ``r`` and ``M = Rᵀ T R_B``."""
  L1, R1 = T_.factors(data.xx)
  n = data.xx.shape[0]
  one = jnp.ones((n, 1), data.xx.dtype)
  gw = jnp.concatenate([2.0 * T_.factored_square(L1, R1, r)[:, None], one, -4.0 * T_.mm(L1, M)], 1)
  parts = [(1.0 - data.beta) * gw]
  if data.xy:
    xp = data.xy[0]
    lin = jnp.concatenate([jnp.sum(xp * xp, 1, keepdims=True), one, -2.0 * xp], 1)
    parts.append(data.beta * lin)
  return jnp.concatenate(parts, 1)


def _y_features(data: Data, c: Array) -> Array:
  """``Y (m, D)``: the target side of ``G = X Yᵀ`` for column marginal ``c``."""
  L2, R2 = T_.factors(data.yy)
  m = data.yy.shape[0]
  one = jnp.ones((m, 1), data.yy.dtype)
  parts = [one, 2.0 * T_.factored_square(L2, R2, c)[:, None], L2]
  if data.xy:
    yp = data.xy[1]
    parts += [one, jnp.sum(yp * yp, 1, keepdims=True), yp]
  return jnp.concatenate(parts, 1)


def _value_weights(data: Data) -> Array:
  """Column weights ``w`` with ``value = Σ_ik X_ik w_k (T Y)_ik``: ``½`` on the GW columns
  (``J = ½ ⟨∇J, T⟩``), ``1`` on the fused ones."""
  d_gw = data.yy.shape[1] + 4
  d_lin = data.xy[0].shape[1] + 2 if data.xy else 0
  return jnp.concatenate([jnp.full((d_gw,), 0.5), jnp.ones((d_lin,))]).astype(data.a.dtype)


def _apply(geom, data: Data, f: Array, g: Array, vec: Array, axis: int) -> Array:
  """``T vec`` (``axis=1``) or ``Tᵀ vec`` (``axis=0``) for the plan of ``f, g`` on ``geom``."""
  log_u, log_v = log_scalings(data.a, data.b, f, g, data.epsilon)
  return apply_scaled(geom, log_u, log_v, data.epsilon, vec, axis)


def _split(v: Array, widths: list) -> list:
  return jnp.split(v, np.cumsum(widths)[:-1], axis=1)


def _kl_plan(data: Data, f: Array, g: Array, r: Array, c_dot_g: Array, linear: Array) -> Array:
  """``KL(T ‖ a⊗b)`` of ``T = a_i b_j exp((f_i + g_j − G_ij) / ε)`` from ``r = T1``,
  ``⟨g, Tᵀ1⟩`` and ``⟨G, T⟩``: ``(⟨f, r⟩ + ⟨g, Tᵀ1⟩ − ⟨G, T⟩) / ε − Σ T + Σa Σb``."""
  return ((jnp.dot(f, r) + c_dot_g - linear) / data.epsilon - jnp.sum(r)
          + jnp.sum(data.a) * jnp.sum(data.b))


def _factored_step(config: Config, data: Data, f: Array, g: Array, geom, used):
  """At the plan ``T`` of ``f, g`` on ``geom`` (the linearisation ``used``): the linearisation
  ``(X, Y, M)`` at ``T``, the value of ``T``, its marginals and ``KL(T ‖ a⊗b)``, from one pass
  of ``T`` over ``[Y, g]`` (``Y = [1, ·, L_B, …]`` holds ``1`` and ``L_B``, from which ``T R_B``
  follows), and one of ``Tᵀ`` for the column marginal if unbalanced."""
  X_used, Y_used, _ = used
  _, R1 = T_.factors(data.xx)
  n, m = geom.shape
  d2 = data.yy.shape[1] + 2
  if config.balanced:
    c, Y, extra = data.b, Y_used, []
  else:
    c = _apply(geom, data, f, g, jnp.ones((n,), data.a.dtype), axis=0)
    Y, extra = _y_features(data, c), [Y_used]
  cols = [Y, g[:, None]] + extra
  TY, Tg, *rest = _split(_apply(geom, data, f, g, jnp.concatenate(cols, 1), 1),
                         [v.shape[1] for v in cols])
  r = TY[:, 0]
  M = T_.mm(R1.T, T_.right_from_left(TY[:, 2:2 + d2]))
  X = _x_features(data, data.a if config.balanced else r, M)
  value = jnp.sum(X * _value_weights(data) * TY)
  kl = _kl_plan(data, f, g, r, jnp.sum(Tg), jnp.sum(X_used * (rest[0] if rest else TY)))
  return (X, Y, M), value, r, c, kl


def _gram_root(left: Array, w: Array) -> Array:
  """A square root ``S`` of ``leftᵀ diag(w) left`` (``SᵀS`` equal to it; eigenvalues clamped),
  computed in at least float32 (no 16-bit eigensolver)."""
  gram = T_.mm(left.T * w, left)
  lam, vecs = jnp.linalg.eigh(gram.astype(jnp.promote_types(gram.dtype, jnp.float32)))
  return ((vecs * jnp.sqrt(jnp.maximum(lam, 0.0))) @ vecs.T).astype(gram.dtype)


def _factored_change(config: Config, data: Data, roots, new, old) -> Array:
  """``‖G_new − G_old‖`` in the ``a⊗b``-weighted RMS (not normalised by the masses).

  Balanced, only ``M`` moves: ``ΔG = −4 (1 − β) L ΔM L_Bᵀ`` and the norm is
  ``4 (1 − β) ‖S_a ΔM S_b‖_F`` with the Gram roots of ``L`` and ``L_B`` (a sum of squares: no
  cancellation). Otherwise one blocked pass over ``ΔG = ΔX Y_newᵀ + X_old ΔYᵀ``.
  """
  (Xn, Yn, Mn), (Xo, Yo, Mo) = new, old
  if config.balanced:
    root_a, root_b = roots
    return 4.0 * (1.0 - data.beta) * jnp.sqrt(jnp.sum(T_.mm(T_.mm(root_a, Mn - Mo), root_b) ** 2))
  U, W = jnp.concatenate([Xn - Xo, Xo], 1), jnp.concatenate([Yn, Yn - Yo], 1)
  block = G.auto_block_rows(U.shape[0], W.shape[0], None)
  rows = R.map_row_blocks(lambda args: T_.mm(T_.mm(args[0], W.T) ** 2, data.b) * args[1],
                          (U, data.a), block)
  return jnp.sqrt(jnp.sum(rows))


# -------------------------------------------------------------------------------------- dense


def _dense_gradient_and_value(config: Config, data: Data, plan: Array):
  r, c = (data.a, data.b) if config.balanced else (jnp.sum(plan, 1), jnp.sum(plan, 0))
  grad = T_.dense_gradient(config.loss, data.xx, data.yy, r, c, plan, config.symmetric)
  G_new = (1.0 - data.beta) * grad
  value = (1.0 - data.beta) * 0.5 * jnp.sum(grad * plan)
  if data.xy:
    G_new = G_new + data.beta * data.xy[0]
    value = value + data.beta * jnp.sum(data.xy[0] * plan)
  return G_new, value


def _dense_plan(data: Data, f: Array, g: Array, cost: Array) -> Array:
  return plan_matrix(cost, *log_scalings(data.a, data.b, f, g, data.epsilon), data.epsilon)


def _dense_step(config: Config, data: Data, f: Array, g: Array, used: Array):
  """As :func:`_factored_step`, for dense costs."""
  plan = _dense_plan(data, f, g, used)
  new, value = _dense_gradient_and_value(config, data, plan)
  r, c = jnp.sum(plan, 1), jnp.sum(plan, 0)
  return new, value, r, c, _kl_plan(data, f, g, r, jnp.dot(g, c), jnp.sum(used * plan))


def _dense_change(data: Data, new: Array, old: Array) -> Array:
  return jnp.sqrt(jnp.dot(T_.mm((new - old) ** 2, data.b), data.a))


# ------------------------------------------------------------------------------ the iteration


def linear_geometry(config: Config, lin):
  """The geometry of a linearised cost: features with the inner-product cost, or a matrix."""
  if config.factored:
    return PointCloud(lin[0], lin[1], cost_fn=Dot())
  return CostMatrix(lin)


def linear_problem(config: Config, data: Data, lin) -> _dual.Problem:
  return _dual.Problem(linear_geometry(config, lin), data.a, data.b, data.epsilon, data.tau_a,
                       data.tau_b)


def _inner_solve(problem: _dual.Problem, solver, f: Array, g: Array):
  """The inner solver warm-started at ``(f, g)``: ``(f, g, (result, n_iters, error))``.

  A :class:`otkit.Sinkhorn` object runs its sweeps alone (the value of each linearised problem
  is not needed, only the last one's), at least one: the cost has moved since ``(f, g)`` were
  solved, so their error is not checked first. Other solver objects run whole.
  """
  if isinstance(solver, Sinkhorn):
    controls = _sinkhorn.controls_of(problem, (f, g), solver)
    return _sinkhorn.iterate(problem, controls, solver=solver,
                             anneal=_sinkhorn.effective_anneal(solver.anneal, (f, g)),
                             check_init=False)
  out = solve_validated(problem, solver, init=(f, g))
  return out.f, out.g, (out.result, out.n_iters, out.error)


def initial_coupling(kind: str, init, yy: Array, a: Array, b: Array, factored: bool):
  """What the first linearisation needs of the initial coupling ``T₀``: ``(T₀ R_B, T₀1, T₀ᵀ1)``
  for factored costs (O((n + m)·d) for the product and sparse couplings), else ``T₀`` itself.

  ``kind``: ``"product"`` (``a ⊗ b / Σb``), ``"sparse"`` (``init = (rows, cols, mass)``) or
  ``"dense"`` (``init`` an ``(n, m)`` plan).
  """
  n, m = a.shape[0], b.shape[0]
  if kind == "product":
    if not factored:
      return jnp.outer(a, b) / jnp.sum(b)
    _, R2 = T_.factors(yy)
    return jnp.outer(a, T_.mm(R2.T, b)) / jnp.sum(b), a, b * jnp.sum(a) / jnp.sum(b)
  if kind == "sparse":
    rows, cols, mass = init
    if not factored:
      return jnp.zeros((n, m), a.dtype).at[rows, cols].add(mass)
    _, R2 = T_.factors(yy)
    TR2 = jnp.zeros((n, R2.shape[1]), a.dtype).at[rows].add(mass[:, None] * R2[cols])
    return (TR2, jnp.zeros((n,), a.dtype).at[rows].add(mass),
            jnp.zeros((m,), a.dtype).at[cols].add(mass))
  if not factored:
    return init
  _, R2 = T_.factors(yy)
  return T_.mm(init, R2), jnp.sum(init, 1), jnp.sum(init, 0)


def _initial_linearisation(config: Config, data: Data):
  coupling = data.init  # from initial_coupling
  if not config.factored:
    return _dense_gradient_and_value(config, data, coupling)[0]
  TR2, r, c = coupling
  if config.balanced:
    r, c = data.a, data.b
  _, R1 = T_.factors(data.xx)
  M = T_.mm(R1.T, TR2)
  return _x_features(data, r, M), _y_features(data, c), M


def _iterate(config: Config, data: Data, solver, outer_tol: Array) -> State:
  """The outer loop (``data`` carries no gradient here)."""
  lin0 = _initial_linearisation(config, data)
  dtype = data.a.dtype
  zero, inf = jnp.zeros((), dtype), jnp.asarray(jnp.inf, dtype)
  aux0 = (jnp.asarray(Result.MAX_ITERS, jnp.int32), jnp.zeros((), jnp.int32), inf)
  state = State(lin0, lin0, jnp.zeros_like(data.a), jnp.zeros_like(data.b), aux0, zero, data.a,
                data.b, zero, inf, jnp.full((config.max_outer_iters,), -1.0, dtype),
                jnp.zeros((), jnp.int32), inf, jnp.zeros((), jnp.int32))
  roots = None
  if config.factored and config.balanced:
    roots = (_gram_root(T_.factors(data.xx)[0], data.a), _gram_root(T_.factors(data.yy)[0], data.b))
  scale = data.epsilon * jnp.sqrt(jnp.sum(data.a) * jnp.sum(data.b))

  def cond(s: State) -> Array:
    return ((s.n_outer < config.max_outer_iters) & ((s.n_outer == 0) | (s.error > outer_tol))
            & jnp.isfinite(s.value) & (s.aux[0] != Result.NON_FINITE)
            & (s.since_best < STALL_OUTER))

  def body(s: State) -> State:
    problem = linear_problem(config, data, s.lin)
    # Stored once per step when reading is faster than evaluating (D ≥ 16, small enough), for
    # the inner solve and the pass of the plan alike.
    problem = problem._replace(geom=G.materialize(problem.geom))
    f, g, aux = _inner_solve(problem, solver, s.f, s.g)
    if config.factored:
      new, value, r, c, kl = _factored_step(config, data, f, g, problem.geom, s.lin)
      error = _factored_change(config, data, roots, new, s.lin)
    else:
      new, value, r, c, kl = _dense_step(config, data, f, g, s.lin)
      error = _dense_change(data, new, s.lin)
    error = error / scale
    improved = error < 0.99 * s.best
    return State(new, s.lin, f, g, aux, value, r, c, kl, error,
                 s.errors.at[s.n_outer].set(error), s.n_outer + 1,
                 jnp.where(improved, error, s.best), jnp.where(improved, 0, s.since_best + 1))

  return jax.lax.while_loop(cond, body, state)


# ------------------------------------------------------------------- value and its derivatives


def _xlogy(x: Array, y: Array) -> Array:
  """``x log y`` with ``0`` where ``y = 0`` (and no NaN gradient there)."""
  positive = y > 0
  return jnp.where(positive, x * jnp.log(jnp.where(positive, y, 1.0)), 0.0)


def _kl(p: Array, q: Array) -> Array:
  """``KL(p ‖ q) = Σ p log(p/q) − Σ p + Σ q`` for non-negative vectors."""
  return jnp.sum(_xlogy(p, p) - _xlogy(p, q)) - jnp.sum(p) + jnp.sum(q)


def _with_gradient(value: Array, surrogate: Array) -> Array:
  """``value`` with the derivatives of ``surrogate``."""
  return jax.lax.stop_gradient(value) + surrogate - jax.lax.stop_gradient(surrogate)


def _regularisation(data: Data, r: Array, c: Array, f: Array, g: Array, kl: Array):
  """``ε KL(T ‖ a⊗b) + ρ_a KL(r ‖ a) + ρ_b KL(c ‖ b)`` and a surrogate carrying its envelope
  derivatives in ``a``, ``b``, ``ε``, ``τ`` (``T``, of marginals ``r``, ``c``, held fixed; a
  hard marginal's multiplier is its potential)."""
  eps = data.epsilon
  explicit = (-jnp.sum(_xlogy(r, data.a)) - jnp.sum(_xlogy(c, data.b))
              + jnp.sum(data.a) * jnp.sum(data.b))
  value = eps * kl
  surrogate = eps * _with_gradient(kl, explicit)
  for w, marginal, potential, tau in ((data.a, r, f, data.tau_a), (data.b, c, g, data.tau_b)):
    relaxed = tau < 1.0
    rho = eps * tau / jnp.where(relaxed, 1.0 - tau, 1.0)
    kl_side = _kl(marginal, w)
    soft = rho * _with_gradient(kl_side, -jnp.sum(_xlogy(marginal, w)) + jnp.sum(w))
    hard = jnp.sum(potential * (w - jax.lax.stop_gradient(w)))
    value = value + jnp.where(relaxed, rho * kl_side, 0.0)
    surrogate = surrogate + jnp.where(relaxed, soft, hard)
  return value, surrogate


def _factored_surrogate(config: Config, data: Data, f: Array, g: Array, used, r: Array,
                        c: Array) -> Array:
  """``(1 − β) J + β ⟨C, T⟩`` as a function of the points with ``T`` held fixed (its derivatives
  are the envelope ones): two passes of the plan, over ``[L_B, y']`` and ``[L, x']`` (``T R_B``
  and ``Tᵀ R`` follow from them)."""
  stopped = jax.lax.stop_gradient(data)
  geom = linear_geometry(config, used)
  fused = bool(data.xy)
  rows = [T_.factors(stopped.yy)[0]] + ([stopped.xy[1]] if fused else [])
  cols = [T_.factors(stopped.xx)[0]] + ([stopped.xy[0]] if fused else [])
  TL2, *Typ = _split(_apply(geom, stopped, f, g, jnp.concatenate(rows, 1), 1),
                     [v.shape[1] for v in rows])
  TtL1, *Ttxp = _split(_apply(geom, stopped, f, g, jnp.concatenate(cols, 1), 0),
                       [v.shape[1] for v in cols])
  TR2, TtR1 = T_.right_from_left(TL2), T_.right_from_left(TtL1)

  def gw(x, y):
    # ⟨A T B, T⟩ = ⟨Rᵀ T R_B, Lᵀ T L_B⟩: bilinear, each side differentiated with the other fixed.
    L1x, R1x = T_.factors(x)
    L2y, R2y = T_.factors(y)
    s_x = jnp.sum(T_.mm(R1x.T, TR2) * T_.mm(L1x.T, TL2))
    s_y = jnp.sum(T_.mm(R2y.T, TtR1) * T_.mm(L2y.T, TtL1))
    marginal = (jnp.dot(T_.factored_square(L1x, R1x, r), r)
                + jnp.dot(T_.factored_square(L2y, R2y, c), c))
    return marginal - 2.0 * _with_gradient(s_x, s_x + s_y)

  surrogate = (1.0 - data.beta) * gw(data.xx, data.yy)
  if fused:
    xp, yp = data.xy
    cross_x, cross_y = jnp.sum(xp * Typ[0]), jnp.sum(yp * Ttxp[0])
    lin = (jnp.dot(jnp.sum(xp * xp, 1), r) + jnp.dot(jnp.sum(yp * yp, 1), c)
           - 2.0 * _with_gradient(cross_x, cross_x + cross_y))
    surrogate = surrogate + data.beta * lin
  return surrogate


def _dense_surrogate(config: Config, data: Data, f: Array, g: Array, used: Array, r: Array,
                     c: Array) -> Array:
  """As :func:`_factored_surrogate`, for dense costs."""
  plan = _dense_plan(jax.lax.stop_gradient(data), f, g, used)
  surrogate = (1.0 - data.beta) * T_.dense_objective(config.loss, data.xx, data.yy, plan)
  if data.xy:
    surrogate = surrogate + data.beta * jnp.sum(data.xy[0] * plan)
  return surrogate


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _values(config: Config, data: Data, solved: tuple, value: Array, reg_value: Array):
  """``(value, reg_value)`` with the envelope derivatives in ``data`` (``solved = (f, g, used,
  r, c, kl)`` of the last outer step); the passes they need run in the backward pass only."""
  return value, reg_value


def _values_fwd(config, data, solved, value, reg_value):
  return (value, reg_value), (data, solved)


def _values_bwd(config, residuals, cotangents):
  data, solved = residuals
  f, g, used, r, c, kl = solved
  surrogate = _factored_surrogate if config.factored else _dense_surrogate

  def objective(data):
    return (surrogate(config, data, f, g, used, r, c)
            + _regularisation(data, r, c, f, g, kl)[1])

  _, vjp = jax.vjp(objective, data)
  (grad,) = vjp(cotangents[0] + cotangents[1])
  zeros = jax.tree.map(jnp.zeros_like, solved)
  return grad, zeros, jnp.zeros_like(cotangents[0]), jnp.zeros_like(cotangents[1])


_values.defvjp(_values_fwd, _values_bwd)


@functools.partial(jax.jit, static_argnames=("config",))
def _gromov(config: Config, data: Data, solver, outer_tol: Array) -> GWOutput:
  stopped = jax.lax.stop_gradient(data)
  state = _iterate(config, stopped, solver, outer_tol)
  reg, _ = _regularisation(stopped, state.r, state.c, state.f, state.g, state.kl)
  solved = (state.f, state.g, state.used, state.r, state.c, state.kl)
  value, reg_value = _values(config, data._replace(init=None), solved, state.value,
                             state.value + reg)
  finite = jnp.isfinite(state.value) & jnp.isfinite(reg) & jnp.isfinite(state.error)
  outer = result_code(state.error <= outer_tol, ~finite, state.since_best >= STALL_OUTER)
  problem = linear_problem(config, stopped, state.used)
  linear_output = _sinkhorn.assemble_output(problem, state.f, state.g, state.aux,
                                            total_mass=jnp.sum(state.r))
  return GWOutput(value=value, reg_value=reg_value, linear_output=linear_output,
                  geom=problem.geom, n_outer=state.n_outer, error=state.error,
                  errors=state.errors, result=combine_results(outer, linear_output.result))


# --------------------------------------------------------------------------- the entry point


def check_intra(name: str, geom, loss: str = "square"):
  """Validates an intra-geometry (the costs within one measure); returns it and whether its
  costs factor (a point cloud with the squared Euclidean cost, square loss)."""
  if not callable(getattr(geom, "validate", None)) or not hasattr(geom, "block_cost"):
    raise ValueError(f"`{name}` must be an otkit geometry of the costs within one measure "
                     f"(otkit.PointCloud(x) or a square otkit.CostMatrix); got "
                     f"{type(geom).__name__}.")
  same = isinstance(geom, PointCloud) and geom.y is geom.x
  try:
    geom = geom.validate()
  except ValueError as err:
    raise ValueError(f"`{name}`: {err}") from None
  n, m = geom.shape
  if n != m:
    raise ValueError(f"`{name}` must be square, the costs within one measure (n, n); got shape "
                     f"{(n, m)}.")
  if isinstance(geom, PointCloud) and not same:
    vx, vy = V.concrete_values(geom.x), V.concrete_values(geom.y)
    if vx is not None and vy is not None and not np.array_equal(vx, vy):
      raise ValueError(f"`{name}` must hold the costs within one measure: otkit.PointCloud(x) "
                       "(y = x); got two different point sets.")
  factored = (loss == "square" and isinstance(geom, PointCloud)
              and isinstance(geom.cost_fn, SqEuclidean))
  return geom, factored


def dense_costs(geom, dtype) -> Array:
  """The ``(n, m)`` cost matrix of any geometry, differentiable in its arrays."""
  return geom.block_cost(geom.row_data).astype(dtype)


def _check_kl_costs(A: Array, B: Array) -> None:
  for name, costs, strict in (("geom_xx", A, False), ("geom_yy", B, True)):
    values = V.concrete_values(costs)
    if values is not None and (np.any(values <= 0) if strict else np.any(values < 0)):
      raise ValueError(f"`{name}` must have {'positive' if strict else 'non-negative'} costs "
                       f"for loss='kl' (L(s, t) = s log(s/t) − s + t); got min "
                       f"{values.min():.3g}.")


def _is_symmetric(costs: Array) -> bool:
  values = V.concrete_values(costs)
  return values is not None and bool(np.allclose(values, values.T, rtol=1e-12, atol=0.0))


def _concrete_one(tau: Array) -> bool:
  values = V.concrete_values(tau)
  return values is not None and float(values) == 1.0


def _check_fused(geom_xy, beta: Array, shape: tuple[int, int]):
  value = V.concrete_values(beta)
  if value is not None and value > 1.0:
    raise ValueError(f"`fused_penalty` must lie in [0, 1] (the weight of the linear cost); got "
                     f"{float(value)!r}.")
  if geom_xy is None:
    if value is not None and value > 0.0:
      raise ValueError("`fused_penalty` > 0 needs `geom_xy`, the costs between the two measures.")
    return None
  if value is not None and value == 0.0:
    raise ValueError("`geom_xy` is given but `fused_penalty` is 0: pass fused_penalty in (0, 1] "
                     "(the weight of the linear cost), or drop geom_xy.")
  try:
    geom_xy = G.validate_geometry(geom_xy)
  except ValueError as err:
    raise ValueError(f"`geom_xy`: {err}") from None
  if tuple(geom_xy.shape) != shape:
    raise ValueError(f"`geom_xy` must have shape {shape} (the sizes of geom_xx and geom_yy); got "
                     f"{tuple(geom_xy.shape)}.")
  return geom_xy


def sort_coupling(xx: Array, yy: Array, a: Array, b: Array, factored: bool):
  """The monotone coupling of the eccentricities (sparse ``rows, cols, mass``): the coupling of
  the lower bound, a starting point for the outer loop."""
  mass = jnp.sum(a)
  e_x = T_.eccentricity(xx, a / mass, factored)
  e_y = T_.eccentricity(yy, b / jnp.sum(b), factored)
  out = ot1d(e_x, e_y, a / mass, b / jnp.sum(b), 2.0, "auto")
  return out.rows, out.cols, out.mass * mass


def _check_init(init, xx, yy, a, b, factored: bool):
  n, m = a.shape[0], b.shape[0]
  if init is None or (isinstance(init, str) and init == "product"):
    return "product", None
  if isinstance(init, str):
    V.check_choice("init", init, ("product", "sort"))
    return "sparse", jax.lax.stop_gradient(sort_coupling(xx, yy, a, b, factored))
  plan = V.as_float_array("init", init, a.dtype)
  if plan.shape != (n, m):
    raise ValueError(f"`init` must be 'product', 'sort' or a coupling of shape ({n}, {m}); got "
                     f"shape {plan.shape}.")
  V.check_finite("init", plan)
  values = V.concrete_values(plan)
  if values is not None and (np.any(values < 0) or values.sum() <= 0):
    raise ValueError("`init` must be a non-negative coupling with positive mass.")
  return "dense", plan


def gromov_wasserstein(geom_xx, geom_yy, a=None, b=None, *, epsilon, geom_xy=None,
                       fused_penalty=0.0, tau_a=1.0, tau_b=1.0, loss="square", solver=None,
                       outer_tol=1e-3, max_outer_iters=200, init=None) -> GWOutput:
  """Entropic (fused, unbalanced) Gromov–Wasserstein by mirror descent.

  Minimises ``(1 − β) J(T) + β ⟨C, T⟩ + ε KL(T ‖ a⊗b) + ρ_a KL(T1 ‖ a) + ρ_b KL(Tᵀ1 ‖ b)``
  over couplings ``T ≥ 0``, where ``J(T) = Σ_ijkl L(A_ik, B_jl) T_ij T_kl``, ``β`` is
  ``fused_penalty``, ``C`` the costs of ``geom_xy`` and ``ρ = ε τ / (1 − τ)`` (``τ = 1``: hard
  marginal, as in :func:`otkit.solve`). Each outer step solves one entropic OT problem on the
  linearised cost ``(1 − β) ∇J(T_k) + β C`` with ``solver``, warm-started from the last
  potentials. With the square loss, ``value`` is POT's ``entropic_gromov_wasserstein2`` for
  the same ``ε`` and initial coupling; ott-jax's ``GromovWasserstein`` uses ``ε / 2``.

  Point clouds ``otkit.PointCloud(x)`` with the squared Euclidean cost (and the square loss)
  are never expanded: the linearised cost has rank ``d_y + 4`` and is reduced online, in
  O((n + m)·d) memory. Any other geometry (a graph's :class:`otkit.CostMatrix`, another cost)
  is used as a dense matrix, O(n² + m² + nm).

  Differentiable in the points or costs, the weights, ``ε``, ``τ`` and ``fused_penalty`` by the
  envelope theorem at the outer fixed point (the plan held fixed, the last potentials as the
  multipliers of hard marginals): exact for ``reg_value`` at a stationary point. ``value`` is
  differentiated the same way (POT's rule), which neglects the entropy's share.

  Args:
    geom_xx: costs within the source measure: :class:`otkit.PointCloud` ``(x)`` with ``x`` of
      shape ``(n, d_x)``, or a square :class:`otkit.CostMatrix` ``(n, n)``.
    geom_yy: costs within the target measure, ``(m, d_y)`` points or ``(m, m)`` costs.
    a: source weights ``(n,)``, non-negative; default uniform ``1/n``.
    b: target weights ``(m,)``; default uniform ``1/m``. Balanced problems need ``Σa = Σb``.
    epsilon: entropic regularisation ``ε > 0`` in units of the linearised cost (traced).
    geom_xy: optional costs between the measures, shape ``(n, m)`` (fused GW).
    fused_penalty: ``β`` in ``[0, 1]``, the weight of ``geom_xy``'s cost (POT's ``1 − α``);
      ``> 0`` exactly when ``geom_xy`` is given.
    tau_a, tau_b: marginal relaxations in ``(0, 1]`` (traced).
    loss: ``"square"`` (``(s − t)²``) or ``"kl"`` (``s log(s/t) − s + t``; dense costs,
      ``A ≥ 0``, ``B > 0``).
    solver: the inner solver object (default ``otkit.Sinkhorn()``).
    outer_tol: the outer loop stops when the linearised cost moves by at most
      ``outer_tol · ε`` (``a⊗b``-weighted RMS). The inexact inner solves set a floor on that
      move, about the inner ``tol`` times the cost's scale over ``ε``: a run that stops
      improving for 50 steps above ``outer_tol`` ends with ``result = STALLED`` (tighten the
      solver's ``tol``, or raise ``epsilon``). At small ``ε`` the iteration may also cycle.
    max_outer_iters: static cap on outer steps.
    init: the initial coupling: ``None`` or ``"product"`` (``a ⊗ b``, as POT), ``"sort"`` (the
      monotone coupling of the eccentricities, see :func:`otkit.gw_lower_bound`) or an
      ``(n, m)`` array.

  Returns:
    :class:`otkit.GWOutput`: ``value``, ``reg_value``, the last ``linear_output`` and its
    ``geom``, ``n_outer``, ``error``, ``errors``, ``result``. The plan:
    ``otkit.transport_plan(out)``.

  References:
    Peyré, Cuturi, Solomon, "Gromov–Wasserstein averaging of kernel and distance matrices",
    ICML 2016. Vayer et al., "Optimal transport for structured data with application on
    graphs", ICML 2019.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.uniform(jax.random.key(0), (40, 2), dtype=jax.numpy.float32)
    >>> rotation = jax.numpy.array([[0.0, -1.0], [1.0, 0.0]])
    >>> out = otkit.gromov_wasserstein(otkit.PointCloud(x), otkit.PointCloud(x @ rotation),
    ...                                epsilon=0.01)
    >>> plan = otkit.transport_plan(out)  # each point to its rotated image
    >>> bool(out.converged), bool((plan.argmax(1) == jax.numpy.arange(40)).all())
    (True, True)
  """
  loss = V.check_choice("loss", loss, LOSSES)
  geom_xx, factored_x = check_intra("geom_xx", geom_xx, loss)
  geom_yy, factored_y = check_intra("geom_yy", geom_yy, loss)
  n, m = geom_xx.shape[0], geom_yy.shape[0]
  beta_in = V.check_nonnegative("fused_penalty", fused_penalty, None)
  geom_xy = _check_fused(geom_xy, beta_in, (n, m))
  geoms = [geom_xx, geom_yy] + ([geom_xy] if geom_xy is not None else [])
  dtype = jnp.result_type(*(g.dtype for g in geoms))
  a, b, epsilon, tau_a, tau_b = check_marginals(a, b, epsilon, tau_a, tau_b, (n, m), dtype)
  beta = beta_in.astype(dtype)
  outer_tol = V.check_positive("outer_tol", outer_tol, dtype)
  max_outer_iters = V.check_static_int("max_outer_iters", max_outer_iters)
  solver = check_solver(solver)
  solver = dataclasses.replace(solver, grad_mode="envelope")  # derivatives: see _gromov

  factored = factored_x and factored_y and (
      geom_xy is None or (isinstance(geom_xy, PointCloud)
                          and isinstance(geom_xy.cost_fn, SqEuclidean)))
  if factored:
    xx, yy = T_.centred(geom_xx.x.astype(dtype)), T_.centred(geom_yy.x.astype(dtype))
    xy = ()
    if geom_xy is not None:
      centre = jnp.mean(geom_xy.y, axis=0).astype(dtype)
      xy = tuple(T_.centred(z.astype(dtype), centre) for z in (geom_xy.x, geom_xy.y))
  else:
    xx, yy = dense_costs(geom_xx, dtype), dense_costs(geom_yy, dtype)
    xy = () if geom_xy is None else (dense_costs(geom_xy, dtype),)
    if loss == "kl":
      _check_kl_costs(xx, yy)
  init_kind, init_data = _check_init(init, xx, yy, a, b, factored)
  coupling = jax.lax.stop_gradient(initial_coupling(init_kind, init_data, yy, a, b, factored))
  config = Config(factored=factored, loss=loss,
                  balanced=_concrete_one(tau_a) and _concrete_one(tau_b),
                  symmetric=not factored and _is_symmetric(xx) and _is_symmetric(yy),
                  fused=geom_xy is not None, max_outer_iters=max_outer_iters)
  data = Data(xx, yy, xy, a, b, epsilon, tau_a, tau_b, beta, coupling)
  return _gromov(config, data, solver, outer_tol)
