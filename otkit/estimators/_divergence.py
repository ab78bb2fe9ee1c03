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
from otkit.geometry._geometry import PointCloud
from otkit.solvers import _sinkhorn as S
from otkit.solvers._output import SinkhornOutput

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DivergenceOutput:
  """Result of :func:`sinkhorn_divergence` (a pytree).

  Attributes:
    value: ``OT_ε(a, b) − ½ OT_ε(a, a) − ½ OT_ε(b, b)``, a scalar ``>= 0``.
    converged: whether all three problems converged.
    xy: the :class:`otkit.SinkhornOutput` of ``OT_ε(a, b)``.
    xx, yy: those of the symmetric problems (their ``g`` equals their ``f``).
  """

  value: Array
  converged: Array
  xy: SinkhornOutput
  xx: SinkhornOutput
  yy: SinkhornOutput


def sinkhorn_divergence(x, y, a=None, b=None, *, epsilon, cost_fn=None, chunk_size=None,
                        tol=1e-3, max_iters=2000, anneal="auto", anneal_decay=0.5,
                        grad_mode="envelope", cg_maxiter=500) -> DivergenceOutput:
  """Debiased Sinkhorn divergence ``S_ε(μ, ν) = OT_ε(μ, ν) − ½ OT_ε(μ, μ) − ½ OT_ε(ν, ν)``.

  ``OT_ε`` is the regularised value of :func:`otkit.sinkhorn` (balanced). ``S_ε`` is
  non-negative, zero iff ``μ = ν``, and interpolates between OT (ε → 0) and an MMD (ε → ∞).
  The two symmetric problems are solved with the averaged symmetric update. All three run
  online (no n×m matrix).

  Args:
    x: source points ``(n, d)``; y: target points ``(m, d)``.
    a: source weights ``(n,)``; b: target weights ``(m,)``; default uniform; equal total mass.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced).
    cost_fn: the ground cost (default ``‖x − y‖²``).
    chunk_size: rows per block of the online reductions (static).
    tol, max_iters, anneal, anneal_decay, cg_maxiter: as in :func:`otkit.sinkhorn`.
    grad_mode: ``"envelope"`` (default) differentiates ``value`` by Danskin's theorem: exact first
      derivatives in ``x``, ``y``, ``a``, ``b``, ``ε`` with no linear solve. ``"implicit"`` and
      ``"unroll"`` also differentiate the potentials (needed for higher derivatives).

  Returns:
    :class:`DivergenceOutput` with ``value`` and the three solver outputs.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (50, 2))
    >>> div = otkit.sinkhorn_divergence(x, x + 1.0, epsilon=0.1)
    >>> bool(div.value > 0), bool(div.converged)
    (True, True)
    >>> g = jax.grad(lambda x: otkit.sinkhorn_divergence(x, x + 1.0, epsilon=0.1).value)(x)
  """
  x = V.check_points("x", x)
  y = V.check_points("y", y)
  problem_xy = S.make_problem(PointCloud(x, y, cost_fn, chunk_size), a, b, epsilon, 1.0, 1.0)
  geom_xy = problem_xy.geom
  problem_xx = problem_xy._replace(geom=PointCloud(geom_xy.x, geom_xy.x, geom_xy.cost_fn, chunk_size),
                                   b=problem_xy.a)
  problem_yy = problem_xy._replace(geom=PointCloud(geom_xy.y, geom_xy.y, geom_xy.cost_fn, chunk_size),
                                   a=problem_xy.b)
  options = S.solver_options(problem_xy, tol=tol, max_iters=max_iters, anneal=anneal,
                             anneal_decay=anneal_decay, init=None, fixed_iters=None,
                             grad_mode=grad_mode, cg_maxiter=cg_maxiter)
  return _divergence(problem_xy, problem_xx, problem_yy, options)


def _divergence(problem_xy, problem_xx, problem_yy, options) -> DivergenceOutput:
  xy = S.solve_problem(problem_xy, **options)
  xx = S.solve_problem(problem_xx, **options, symmetric=True)
  yy = S.solve_problem(problem_yy, **options, symmetric=True)
  value = xy.value - 0.5 * (xx.value + yy.value)
  converged = xy.converged & xx.converged & yy.converged
  return DivergenceOutput(value=value, converged=converged, xy=xy, xx=xx, yy=yy)
