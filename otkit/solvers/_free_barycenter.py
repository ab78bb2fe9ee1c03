"""Free-support Wasserstein barycenters: the fixed-point iteration of Cuturi & Doucet (2014).

The barycenter of ``k`` point clouds ``(Y_k, b_k)`` with weights ``λ_k`` for the squared
Euclidean cost is sought as ``N`` points ``X`` of uniform weights ``a = 1/N``. Each step computes
the ``k`` optimal plans ``P_k`` from ``(a, X)`` to ``(b_k, Y_k)`` and moves every point to the
λ-weighted average of its barycentric projections, ``X_i ← Σ_k λ_k (P_k Y_k)_i / a_i``, which
minimises ``Σ_k λ_k ⟨C(X, Y_k), P_k⟩`` over ``X`` for the fixed plans; alternating the two never
increases the cost. Plans are exact optimal assignments (:func:`otkit.assignment`) when every
measure has ``N`` atoms of uniform weight, entropic (:func:`otkit.solve`, warm-started from the
previous step) otherwise.

References:
  Cuturi, Doucet, "Fast computation of Wasserstein barycenters", ICML 2014, Algorithm 2.
  Álvarez-Esteban, del Barrio, Cuesta-Albertos, Matrán, "A fixed-point approach to barycenters
  in Wasserstein space", J. Math. Anal. Appl. 2016.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.geometry import PointCloud
from otkit.solvers import _assignment, _dual, _solve
from otkit.solvers._barycenter import _check_lambdas
from otkit.solvers._output import Result, combine_results
from otkit.solvers._plan import apply_plan, transport_cost
from otkit.solvers._solver import check_solver

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FreeBarycenterOutput:
  """Result of :func:`free_support_barycenter` (a pytree).

  Attributes:
    points: ``(N, d)`` the barycenter's support; its weights are uniform, ``1/N``.
    cost: ``Σ_k λ_k ⟨C(points, Y_k), P_k⟩`` with the plans ``P_k`` of the final points (exact
      squared Wasserstein distances for exact plans).
    costs: ``(n_iters + 1,)`` the cost before each step and after the last one (after an early
      stop the remaining entries repeat the final cost).
    displacement: ``Σ_i ‖X_i − X_i^{prev}‖²`` of the last step.
    n_iters: steps run.
    result: the worst :class:`otkit.Result` code of the plans' solves; ``CONVERGED`` also needs
      the displacement to fall to ``tol`` within ``n_iters`` steps.
  """

  points: Array
  cost: Array
  costs: Array
  displacement: Array
  n_iters: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


@dataclasses.dataclass(frozen=True)
class Config:
  exact: bool
  n_iters: int


def _exact_step(x: Array, y: Array) -> tuple[Array, Array, Array]:
  """Projection, cost and result of the optimal assignment between ``x`` and ``y`` ``(N, d)``."""
  cost = jnp.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)
  out = _assignment.solve(cost, jnp.zeros(x.shape[:1], x.dtype),
                          method=_assignment.resolve_method("auto"), duals=False)
  return y[out.perm], out.cost / x.shape[0], out.result


def _entropic_step(solver, x, y, b, epsilon, init):
  """Barycentric projection, ``⟨C, P⟩``, result and potentials of the entropic plan."""
  geom = PointCloud(x, y)
  a = jnp.full(x.shape[:1], 1.0 / x.shape[0], x.dtype)
  out = _solve.solve_validated(_dual.Problem(geom, a, b, epsilon, jnp.ones((), x.dtype),
                                             jnp.ones((), x.dtype)), solver, init)
  projection = apply_plan(geom, out, y) / a[:, None]
  return projection, transport_cost(geom, out), out.result, (out.f, out.g)


def _plans(config: Config, solver, x, ys, bs, lambdas, epsilon, potentials=None):
  """The λ-averaged projection ``(N, d)``, the cost, the worst result and the potentials of the
  plans from ``x``; entropic plans start from ``potentials`` (``None``: a cold, annealed
  solve)."""
  if config.exact:
    proj, costs, results = jax.lax.map(lambda y: _exact_step(x, y), ys)
  elif potentials is None:
    proj, costs, results, potentials = jax.lax.map(
        lambda args: _entropic_step(solver, x, *args, epsilon, None), (ys, bs))
  else:
    proj, costs, results, potentials = jax.lax.map(
        lambda args: _entropic_step(solver, x, args[0], args[1], epsilon, args[2]),
        (ys, bs, potentials))
  average = jnp.tensordot(lambdas, proj, axes=1)
  return average, jnp.sum(lambdas * costs), combine_results(*results), potentials


@functools.partial(jax.jit, static_argnames=("config",))
def solve_free(x0, ys, bs, lambdas, epsilon, tol, solver, config: Config) -> FreeBarycenterOutput:
  """The jitted iteration from the validated initial points ``x0 (N, d)``."""
  plans = functools.partial(_plans, config, solver, ys=ys, bs=bs, lambdas=lambdas, epsilon=epsilon)
  target, cost, result, pots = plans(x0)
  costs = jnp.full((config.n_iters + 1,), jnp.nan, x0.dtype)

  def body(carry):
    x, target, cost, it, _, costs, worst, pots = carry
    costs = costs.at[it].set(cost)
    move = jnp.sum((target - x) ** 2)
    new_target, cost, result, pots = plans(target, potentials=pots)
    return target, new_target, cost, it + 1, move, costs, combine_results(worst, result), pots

  def cond(carry):
    it, move = carry[3], carry[4]
    return (it < config.n_iters) & (move > tol)

  inf = jnp.full((), jnp.inf, x0.dtype)
  x, _, cost, it, move, costs, result, _ = jax.lax.while_loop(
      cond, body, (x0, target, cost, jnp.zeros((), jnp.int32), inf, costs, result, pots))
  costs = jnp.where(jnp.arange(config.n_iters + 1) >= it, cost, costs)
  result = jnp.where((result == Result.CONVERGED) & (move > tol), Result.MAX_ITERS, result)
  return FreeBarycenterOutput(points=x, cost=cost, costs=costs, displacement=move, n_iters=it,
                              result=result.astype(jnp.int32))


# ---------------------------------------------------------------------------------------------
# Validation and the public function


def _stack_measures(xs, weights):
  """Point clouds ``(k, m, d)`` and weights ``(k, m)``: a list of clouds of different sizes is
  padded with zero-weight copies of its first point. Returns ``ys, bs, padded``."""
  if isinstance(xs, (list, tuple)):
    if not xs:
      raise ValueError("`xs` is an empty sequence; give at least one point cloud.")
    clouds = [V.check_points(f"xs[{i}]", c) for i, c in enumerate(xs)]
    if len({c.shape[1] for c in clouds}) != 1:
      raise ValueError(f"The clouds of `xs` must share one dimension d; got shapes "
                       f"{[c.shape for c in clouds]}.")
    dtype = V.common_dtype(*clouds)
    if weights is None:
      weights = [None] * len(clouds)
    if not isinstance(weights, (list, tuple)) or len(weights) != len(clouds):
      raise ValueError("`weights` must be None or a list of one weight vector per cloud of `xs`.")
    ws = [V.check_weights(f"weights[{i}]", w, c.shape[0], dtype) for i, (w, c)
          in enumerate(zip(weights, clouds))]
    m = max(c.shape[0] for c in clouds)
    pad = lambda c, rows: jnp.concatenate([c, jnp.repeat(c[:1], rows, axis=0)])  # noqa: E731
    ys = jnp.stack([pad(c.astype(dtype), m - c.shape[0]) for c in clouds])
    bs = jnp.stack([jnp.concatenate([w, jnp.zeros((m - w.shape[0],), dtype)]) for w in ws])
    return ys, bs, any(c.shape[0] < m for c in clouds)
  ys = V.as_float_array("xs", xs)
  if ys.ndim != 3 or 0 in ys.shape:
    raise ValueError(f"`xs` must be k point clouds of m points in d dimensions, shape "
                     f"(k, m, d), or a list of (m_k, d) clouds; got shape {ys.shape}.")
  V.check_finite("xs", ys)
  k, m, _ = ys.shape
  if weights is None:
    with jax.ensure_compile_time_eval():  # concrete inside a caller's jit: the plans may be exact
      return ys, jnp.full((k, m), 1.0 / m, ys.dtype), False
  bs = V.as_float_array("weights", weights, ys.dtype)
  if bs.shape != (k, m):
    raise ValueError(f"`weights` must have shape ({k}, {m}), one weight per point of `xs`; got "
                     f"{bs.shape}.")
  for i in range(k):
    V.check_weights("weights", bs[i], m, ys.dtype)
  return ys, bs, False


def _uniform(bs: Array) -> bool:
  values = V.concrete_values(bs)
  return values is not None and bool(np.all(values == values[:, :1]))


def _initial_points(key_or_init, ys, bs, lambdas, n_points):
  if V.is_key(key_or_init):
    pool = ys.reshape(-1, ys.shape[-1])
    p = (lambdas[:, None] * bs / jnp.sum(bs, axis=1, keepdims=True)).reshape(-1)
    available = int(np.sum(np.asarray(p) > 0)) if V.is_concrete(p) else pool.shape[0]
    if n_points > available:
      raise ValueError(f"`n_points` = {n_points} exceeds the {available} atoms the measures put "
                       "weight on; pass initial points instead of a key.")
    index = jax.random.choice(key_or_init, pool.shape[0], (n_points,), replace=False, p=p)
    return pool[index]
  x0 = V.check_points("key_or_init", key_or_init, ys.dtype)
  if x0.shape != (n_points, ys.shape[-1]):
    raise ValueError(f"`key_or_init` as initial points must have shape ({n_points}, "
                     f"{ys.shape[-1]}) (n_points, d); got {x0.shape}.")
  return x0


def free_support_barycenter(key_or_init, xs, weights=None, *, n_points, lambdas=None,
                            epsilon=None, n_iters=100, tol=1e-7,
                            solver=None) -> FreeBarycenterOutput:
  """Free-support Wasserstein barycenter of ``k`` point clouds (squared Euclidean cost).

  Runs the fixed-point iteration of Cuturi & Doucet (2014): compute the ``k`` optimal plans
  from the current ``n_points`` uniform points to the measures, move each point to the
  λ-average of its barycentric projections, until the points stop moving
  (``Σ_i ‖ΔX_i‖² ≤ tol``) or after ``n_iters`` steps. With ``epsilon=None`` the plans are exact
  optimal assignments (every measure must have ``n_points`` atoms of uniform weight): this is
  POT's ``ot.lp.free_support_barycenter`` for such measures. With ``epsilon`` they are entropic
  plans (any sizes and weights; the projections are blurred at the scale ``√ε``). The cost
  never increases along the exact iteration; it converges to a local minimum that depends on
  the initial points. Runs under ``jit`` (``n_points``, ``n_iters``, ``epsilon`` being
  ``None`` and the solver are static).

  Args:
    key_or_init: a ``jax.random`` key (the initial points are ``n_points`` distinct atoms drawn
      from the measures with probabilities ``λ_k b_k``) or initial points ``(n_points, d)``.
    xs: point clouds ``(k, m, d)``, or a list of ``k`` clouds ``(m_k, d)`` of different sizes.
    weights: ``(k, m)`` (or a list of ``(m_k,)``) non-negative weights of equal mass per cloud;
      default uniform.
    n_points: the number of barycenter points ``N`` (static).
    lambdas: ``(k,)`` non-negative, summing to 1; default uniform.
    epsilon: ``None`` for exact plans, or the entropic regularisation ``ε > 0``.
    n_iters: static cap on the steps.
    tol: the displacement ``Σ_i ‖X_i − X_i^{prev}‖²`` below which the iteration stops.
    solver: an :class:`otkit.Sinkhorn` object for the entropic plans (default ``Sinkhorn()``).

  Returns:
    :class:`FreeBarycenterOutput` with ``points (N, d)``, ``cost``, ``costs``,
    ``displacement``, ``n_iters`` and ``result``.

  References:
    Cuturi, Doucet, "Fast computation of Wasserstein barycenters", ICML 2014.

  Example:
    >>> import jax, jax.numpy as jnp, otkit
    >>> square = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> out = otkit.free_support_barycenter(square, jnp.stack([square, square + 2.0]),
    ...                                     n_points=4)
    >>> out.points.tolist()
    [[1.0, 1.0], [1.0, 2.0], [2.0, 1.0], [2.0, 2.0]]
  """
  ys, bs, padded = _stack_measures(xs, weights)
  dtype = ys.dtype
  n_points = V.check_static_int("n_points", n_points)
  n_iters = V.check_static_int("n_iters", n_iters)
  lam = _check_lambdas(lambdas, ys.shape[0], dtype)
  tol = V.check_nonnegative("tol", tol, dtype)
  masses = V.concrete_values(jnp.sum(bs, axis=1))
  if masses is not None and np.any(np.abs(masses - masses[0]) > 1e-6 * masses.max()):
    raise ValueError("The measures of `xs` have different total weights; normalise `weights`.")
  if not _uniform(bs):
    bs = bs / jnp.sum(bs, axis=1, keepdims=True)
  exact = epsilon is None
  if exact:
    if solver is not None:
      raise ValueError("`solver` is only used with entropic plans: pass `epsilon` too.")
    if padded or ys.shape[1] != n_points or not _uniform(bs):
      raise ValueError(f"Exact plans need every measure to have `n_points` = {n_points} atoms of "
                       f"uniform weight (got {ys.shape[1]} atoms per measure"
                       f"{', padded' if padded else ''}); pass `epsilon` for entropic plans.")
    eps = jnp.ones((), dtype)
    solver = None
  else:
    eps = V.check_positive("epsilon", epsilon, dtype)
    solver = check_solver(solver)
  x0 = _initial_points(key_or_init, ys, bs, lam, n_points)
  return solve_free(x0.astype(dtype), ys, bs, lam, eps, tol, solver,
                    Config(exact=exact, n_iters=n_iters))
