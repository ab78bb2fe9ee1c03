"""Implicit differentiation of entropic OT solvers (one module owns custom derivatives).

Any solver that returns gauge-fixed optimal potentials ``z* = (f*, g*)`` of a :class:`Problem`
can be wrapped by :func:`implicit_solve`. The backward pass uses the implicit function
theorem on the optimality residual ``F(z; θ) = 0`` of :func:`_dual.optimality_residual`:

  ``θ̄ = (∂_θ F)ᵀ w``  where  ``(−∂_z F) w = z̄``.

``−∂_z F`` is symmetric positive definite (the negated Hessian of the concave dual, plus the
gauge term for balanced problems), so ``w`` is found by preconditioned conjugate gradients,
matrix-free: every product is two online row reductions, and no n×m matrix is formed.

References:
  Luise, Rudi, Pontil, Ciliberto, "Differential Properties of Sinkhorn Approximation for
  Learning with Wasserstein Distance", NeurIPS 2018.
  Cuturi, Meng-Papaxanthos, Tian, Bunne, Davis, Teboul, "Optimal Transport Tools (OTT)",
  arXiv:2201.12324, 2022.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from otkit.geometry import _geometry as G
from otkit.solvers import _dual

Array = jax.Array


def _default_cg_tol(dtype) -> float:
  return float(jnp.finfo(dtype).eps) ** 0.6


def adjoint_solve(problem: _dual.Problem, f: Array, g: Array, cotangent, *,
                  tol: float | None = None, maxiter: int = 500):
  """Solves ``(−∂_z F) w = z̄`` at the optimum by Jacobi-preconditioned CG.

  Args:
    problem: the problem at which ``(f, g)`` is optimal.
    f, g: optimal gauge-fixed potentials, shapes ``(n,)`` and ``(m,)``.
    cotangent: ``(f̄, ḡ)``, shapes ``(n,)`` and ``(m,)``.
    tol: relative residual tolerance; default ``finfo(dtype).eps ** 0.6``.
    maxiter: static cap on CG iterations.

  Returns:
    ``w = (w_f, w_g)``.
  """
  tol = _default_cg_tol(f.dtype) if tol is None else tol
  problem = problem._replace(geom=G.materialize(problem.geom))

  def residual(z):
    return _dual.optimality_residual(problem, z)

  def matvec(u):
    _, tangent = jax.jvp(residual, ((f, g),), (u,))
    return jax.tree.map(jnp.negative, tangent)

  diag_f, diag_g = _dual.residual_diagonal(problem, f, g)
  tiny = jnp.finfo(f.dtype).tiny

  def precondition(u):
    return (u[0] / jnp.maximum(diag_f, tiny), u[1] / jnp.maximum(diag_g, tiny))

  w, _ = jax.scipy.sparse.linalg.cg(matvec, tuple(cotangent), tol=tol, atol=0.0,
                                    maxiter=maxiter, M=precondition)
  return w


def implicit_solve(solve: Callable, problem: _dual.Problem, controls, *,
                   cg_tol: float | None = None, cg_maxiter: int = 500):
  """Runs ``solve(problem, controls) -> (f, g, aux)`` with implicit reverse-mode derivatives.

  Args:
    solve: a pure function returning gauge-fixed optimal potentials ``f (n,)``, ``g (m,)`` and a
      pytree ``aux`` of diagnostics (not differentiated). It must close over static values only.
    problem: the :class:`_dual.Problem`; every array in it receives a cotangent.
    controls: a pytree of floating arrays the solution does not depend on (tolerances, warm
      starts); they receive zero cotangents.
    cg_tol, cg_maxiter: options of the adjoint conjugate-gradient solve.

  Returns:
    ``(f, g, aux)`` as returned by ``solve``.
  """
  @jax.custom_vjp
  def run(problem, controls):
    return solve(problem, controls)

  def forward(problem, controls):
    out = solve(problem, controls)
    return out, (problem, controls, out[0], out[1])

  def backward(residuals, cotangents):
    problem, controls, f, g = residuals
    w = adjoint_solve(problem, f, g, (cotangents[0], cotangents[1]), tol=cg_tol, maxiter=cg_maxiter)
    _, vjp = jax.vjp(lambda p: _dual.optimality_residual(p, (f, g)), problem)
    (problem_bar,) = vjp(w)
    return problem_bar, jax.tree.map(jnp.zeros_like, controls)

  run.defvjp(forward, backward)
  return run(problem, controls)
