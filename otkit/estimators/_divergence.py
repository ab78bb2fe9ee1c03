"""The debiased Sinkhorn divergence between two point clouds, balanced or unbalanced.

References:
  Genevay, Peyré, Cuturi, "Learning Generative Models with Sinkhorn Divergences", AISTATS 2018.
  Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal Transport and
  MMD using Sinkhorn Divergences", AISTATS 2019 (symmetric updates, annealing).
  Séjourné, Feydy, Vialard, Trouvé, Peyré, "Sinkhorn Divergences for Unbalanced Optimal
  Transport", arXiv:1910.12958, 2019 (the unbalanced divergence and its mass term, eq. 15).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.geometry import PointCloud
from otkit.solvers import _solve
from otkit.solvers._output import Result, SinkhornOutput, combine_results
from otkit.solvers._solver import Sinkhorn, check_solver

Array = jax.Array
# The divergence's default solver: Sinkhorn with envelope gradients (exact first derivatives of
# the value by Danskin's theorem, no linear solve).
DEFAULT_SOLVER = Sinkhorn(grad_mode="envelope")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DivergenceOutput:
  """Result of :func:`sinkhorn_divergence` (a pytree).

  Attributes:
    value: ``OT_ε(a, b) − ½ OT_ε(a, a) − ½ OT_ε(b, b) + ½ ε (Σa − Σb)²``, a scalar ``>= 0``
      (the last term vanishes for balanced problems).
    result: the worst :class:`otkit.Result` code of the three problems.
    xy: the :class:`otkit.SinkhornOutput` of ``OT_ε(a, b)``.
    xx, yy: those of the symmetric problems (their ``g`` equals their ``f`` when
      ``τ_a = τ_b``).
  """

  value: Array
  result: Array
  xy: SinkhornOutput
  xx: SinkhornOutput
  yy: SinkhornOutput

  @property
  def converged(self) -> Array:
    """Whether all three problems converged (``result == Result.CONVERGED``)."""
    return self.result == Result.CONVERGED


def is_geometry(x) -> bool:
  return hasattr(x, "block_cost") and hasattr(x, "self_pairs")


def debiased(xy: SinkhornOutput, xx: SinkhornOutput, yy: SinkhornOutput,
             mass_term: Array = 0.0) -> DivergenceOutput:
  """``OT_ε(μ, ν) − ½ OT_ε(μ, μ) − ½ OT_ε(ν, ν) + mass_term`` from the three solved problems."""
  value = xy.value - 0.5 * (xx.value + yy.value) + mass_term
  return DivergenceOutput(value=value, result=combine_results(xy.result, xx.result, yy.result),
                          xy=xy, xx=xx, yy=yy)


def self_problems(problem):
  """The validated self-problems ``(x, x)`` and ``(y, y)`` of a validated problem ``(x, y)``."""
  geom_xx, geom_yy = problem.geom.self_pairs()
  return (problem._replace(geom=geom_xx, b=problem.a), problem._replace(geom=geom_yy, a=problem.b))


def mass_term(problem) -> Array:
  """``½ ε (Σa − Σb)²``, the term that keeps the unbalanced divergence non-negative
  (Séjourné et al. 2019, eq. 15); zero for balanced problems."""
  return 0.5 * problem.epsilon * (jnp.sum(problem.a) - jnp.sum(problem.b)) ** 2


def equal_taus(tau_a, tau_b) -> bool:
  """Whether ``τ_a = τ_b`` is known before tracing: the self-problems are then symmetric."""
  values = [V.concrete_values(t) for t in (tau_a, tau_b)]
  return tau_a is tau_b or (values[0] is not None and values[1] is not None
                            and bool(np.all(values[0] == values[1])))


def solve_divergence(problem_xy, solver, init_xy=None, init_xx=None, yy=None, *,
                     symmetric: bool = True) -> DivergenceOutput:
  """The divergence of a validated problem (from :func:`otkit.solvers._solve.make_problem` on a
  geometry with self-pairs): three solves, the self-problems by the symmetric update when
  ``symmetric`` (which needs ``τ_a = τ_b``; each self-problem keeps both relaxations).

  ``init_xy`` ``(f, g)`` and ``init_xx`` ``f`` warm-start the moving problems; ``yy``, the
  already solved ``OT_ε(ν, ν)``, skips the third solve (a fixed target along a flow).
  """
  problem_xx, problem_yy = self_problems(problem_xy)
  xy = _solve.solve_validated(problem_xy, solver, init_xy)
  xx = _solve.solve_validated(problem_xx, solver, None if init_xx is None else (init_xx, init_xx),
                              symmetric=symmetric)
  if yy is None:
    yy = _solve.solve_validated(problem_yy, solver, symmetric=symmetric)
  return debiased(xy, xx, yy, mass_term(problem_xy))


def sinkhorn_divergence(x, y=None, a=None, b=None, *, epsilon, tau_a=1.0, tau_b=1.0,
                        cost_fn=None, chunk_size=None, solver=None, mesh=None) -> DivergenceOutput:
  """Debiased Sinkhorn divergence ``S_ε(μ, ν) = OT_ε(μ, ν) − ½ OT_ε(μ, μ) − ½ OT_ε(ν, ν)``,
  plus ``½ ε (m(μ) − m(ν))²`` for unbalanced problems.

  ``OT_ε`` is the regularised value of :func:`otkit.solve`:
  ``⟨C, P⟩ + ε KL(P ‖ a⊗b) + ρ_a KL(P1 ‖ a) + ρ_b KL(Pᵀ1 ‖ b)`` with ``ρ = ε τ / (1 − τ)``
  (generalised KL; ``τ = 1``: hard marginal). All three problems use the same ``τ_a, τ_b``.
  Balanced (``τ = 1``), ``S_ε`` is non-negative, zero iff ``μ = ν``, and interpolates between
  OT (ε → 0) and an MMD (ε → ∞). Unbalanced (``τ_a = τ_b < 1``, measures of any masses), the
  mass term of Séjourné et al. keeps it non-negative and zero at ``μ = ν``. The entropy is
  relative to ``a⊗b`` (POT's ``reg_type="kl"``); ott-jax's unbalanced solver takes it relative
  to the counting measure, so ott-jax's ``sinkdiv`` agrees with this one when every atom has
  unit weight. For general weights the weights go into the costs: this divergence of ``(a, b)``
  on ``C`` is ott-jax's with unit weights on ``C_ij − (ε + ρ_a) log a_i − (ε + ρ_b) log b_j``
  (for each of the three problems; the constants this leaves cancel in ``S_ε``). The symmetric
  problems are
  solved with the averaged symmetric update when ``τ_a = τ_b`` is known before tracing. All
  three run online (no n×m matrix) for point clouds.

  Args:
    x: source points ``(n, d)``, or a geometry ``(n, m)`` with self-pairs
      (:class:`otkit.PointCloud`, or :class:`otkit.LabelledPointCloud` with within-dataset
      class costs): then ``y`` is ``None`` and the problems ``(x, x)`` and ``(y, y)`` are the
      geometry's ``self_pairs()``.
    y: target points ``(m, d)`` (``None`` when ``x`` is a geometry).
    a: source weights ``(n,)``; b: target weights ``(m,)``; default uniform; equal total mass
      unless a marginal is relaxed.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced).
    tau_a, tau_b: marginal relaxations in ``(0, 1]`` (traced; default 1, balanced). The
      divergence's guarantees need ``τ_a = τ_b``.
    cost_fn: the ground cost for points (default ``‖x − y‖²``, no ½).
    chunk_size: rows per block of the online reductions for points (static).
    mesh: a ``jax.sharding.Mesh`` to split the points ``x`` over (rows of each device's own
      blocks; see :class:`otkit.PointCloud`), or ``None``. For a geometry, set it there.
    solver: :class:`otkit.Sinkhorn` or :class:`otkit.SinkhornNewton`; default
      ``Sinkhorn(grad_mode="envelope")``: exact first derivatives of ``value`` in ``x``, ``y``,
      ``a``, ``b``, ``ε`` by Danskin's theorem, with no linear solve.
      ``grad_mode="implicit"`` or ``"unroll"`` also differentiate the potentials.

  Returns:
    :class:`DivergenceOutput` with ``value``, ``result`` and the three solver outputs.

  References:
    Genevay, Peyré, Cuturi, "Learning Generative Models with Sinkhorn Divergences", AISTATS 2018.
    Séjourné, Feydy, Vialard, Trouvé, Peyré, "Sinkhorn Divergences for Unbalanced Optimal
    Transport", 2019.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (50, 2))
    >>> div = otkit.sinkhorn_divergence(x, x + 1.0, epsilon=0.1)
    >>> bool(div.value > 0), bool(div.converged)
    (True, True)
    >>> geom = otkit.PointCloud(x, x + 1.0)
    >>> bool(abs(otkit.sinkhorn_divergence(geom, epsilon=0.1).value - div.value) < 1e-6)
    True
    >>> half = otkit.sinkhorn_divergence(x, x, b=jax.numpy.full(50, 0.01), epsilon=0.1,
    ...                                  tau_a=0.9, tau_b=0.9)  # masses 1 and 0.5
    >>> bool(half.value > 0), bool(half.converged)
    (True, True)
  """
  solver = DEFAULT_SOLVER if solver is None else check_solver(solver)
  if is_geometry(x):
    if y is not None or cost_fn is not None or chunk_size is not None or mesh is not None:
      raise ValueError("When `x` is a geometry, it carries the target, cost, blocking and mesh: "
                       "leave `y`, `cost_fn`, `chunk_size` and `mesh` unset.")
    geom = x
  else:
    if y is None:
      raise ValueError("`y` is required: the target points (m, d), unless `x` is a geometry.")
    geom = PointCloud(V.check_points("x", x), V.check_points("y", y), cost_fn, chunk_size,
                      mesh=mesh)
  problem = _solve.make_problem(geom, a, b, epsilon, tau_a, tau_b)
  return solve_divergence(problem, solver, symmetric=equal_taus(tau_a, tau_b))
