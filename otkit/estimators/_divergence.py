"""The debiased Sinkhorn divergence between two point clouds.

References:
  Genevay, Peyré, Cuturi, "Learning Generative Models with Sinkhorn Divergences", AISTATS 2018.
  Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal Transport and
  MMD using Sinkhorn Divergences", AISTATS 2019 (symmetric updates, annealing).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

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
    value: ``OT_ε(a, b) − ½ OT_ε(a, a) − ½ OT_ε(b, b)``, a scalar ``>= 0``.
    result: the worst :class:`otkit.Result` code of the three problems.
    xy: the :class:`otkit.SinkhornOutput` of ``OT_ε(a, b)``.
    xx, yy: those of the symmetric problems (their ``g`` equals their ``f``).
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


def debiased(xy: SinkhornOutput, xx: SinkhornOutput, yy: SinkhornOutput) -> DivergenceOutput:
  """``OT_ε(μ, ν) − ½ OT_ε(μ, μ) − ½ OT_ε(ν, ν)`` from the three solved problems."""
  value = xy.value - 0.5 * (xx.value + yy.value)
  return DivergenceOutput(value=value, result=combine_results(xy.result, xx.result, yy.result),
                          xy=xy, xx=xx, yy=yy)


def self_problems(problem):
  """The validated self-problems ``(x, x)`` and ``(y, y)`` of a validated problem ``(x, y)``."""
  geom_xx, geom_yy = problem.geom.self_pairs()
  return (problem._replace(geom=geom_xx, b=problem.a), problem._replace(geom=geom_yy, a=problem.b))


def solve_divergence(problem_xy, solver, init_xy=None, init_xx=None, yy=None) -> DivergenceOutput:
  """The divergence of a validated balanced problem (from :func:`otkit.solvers._solve.make_problem`
  on a geometry with self-pairs): three solves, the self-problems by the symmetric update.

  ``init_xy`` ``(f, g)`` and ``init_xx`` ``f`` warm-start the moving problems; ``yy``, the
  already solved ``OT_ε(ν, ν)``, skips the third solve (a fixed target along a flow).
  """
  problem_xx, problem_yy = self_problems(problem_xy)
  xy = _solve.solve_validated(problem_xy, solver, init_xy)
  xx = _solve.solve_validated(problem_xx, solver, None if init_xx is None else (init_xx, init_xx),
                              symmetric=True)
  if yy is None:
    yy = _solve.solve_validated(problem_yy, solver, symmetric=True)
  return debiased(xy, xx, yy)


def sinkhorn_divergence(x, y=None, a=None, b=None, *, epsilon, cost_fn=None, chunk_size=None,
                        solver=None) -> DivergenceOutput:
  """Debiased Sinkhorn divergence ``S_ε(μ, ν) = OT_ε(μ, ν) − ½ OT_ε(μ, μ) − ½ OT_ε(ν, ν)``.

  ``OT_ε`` is the regularised value of :func:`otkit.solve` (balanced). ``S_ε`` is
  non-negative, zero iff ``μ = ν``, and interpolates between OT (ε → 0) and an MMD (ε → ∞).
  The two symmetric problems are solved with the averaged symmetric update. All three run
  online (no n×m matrix) for point clouds.

  Args:
    x: source points ``(n, d)``, or a geometry ``(n, m)`` with self-pairs
      (:class:`otkit.PointCloud`, or :class:`otkit.LabelledPointCloud` with within-dataset
      class costs): then ``y`` is ``None`` and the problems ``(x, x)`` and ``(y, y)`` are the
      geometry's ``self_pairs()``.
    y: target points ``(m, d)`` (``None`` when ``x`` is a geometry).
    a: source weights ``(n,)``; b: target weights ``(m,)``; default uniform; equal total mass.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced).
    cost_fn: the ground cost for points (default ``‖x − y‖²``, no ½).
    chunk_size: rows per block of the online reductions for points (static).
    solver: :class:`otkit.Sinkhorn` or :class:`otkit.SinkhornNewton`; default
      ``Sinkhorn(grad_mode="envelope")``: exact first derivatives of ``value`` in ``x``, ``y``,
      ``a``, ``b``, ``ε`` by Danskin's theorem, with no linear solve.
      ``grad_mode="implicit"`` or ``"unroll"`` also differentiate the potentials.

  Returns:
    :class:`DivergenceOutput` with ``value``, ``result`` and the three solver outputs.

  References:
    Genevay, Peyré, Cuturi, "Learning Generative Models with Sinkhorn Divergences", AISTATS 2018.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (50, 2))
    >>> div = otkit.sinkhorn_divergence(x, x + 1.0, epsilon=0.1)
    >>> bool(div.value > 0), bool(div.converged)
    (True, True)
    >>> geom = otkit.PointCloud(x, x + 1.0)
    >>> bool(abs(otkit.sinkhorn_divergence(geom, epsilon=0.1).value - div.value) < 1e-6)
    True
  """
  solver = DEFAULT_SOLVER if solver is None else check_solver(solver)
  if is_geometry(x):
    if y is not None or cost_fn is not None or chunk_size is not None:
      raise ValueError("When `x` is a geometry, it carries the target, cost and blocking: leave "
                       "`y`, `cost_fn` and `chunk_size` unset.")
    geom = x
  else:
    if y is None:
      raise ValueError("`y` is required: the target points (m, d), unless `x` is a geometry.")
    geom = PointCloud(V.check_points("x", x), V.check_points("y", y), cost_fn, chunk_size)
  problem = _solve.make_problem(geom, a, b, epsilon, 1.0, 1.0)
  return solve_divergence(problem, solver)
