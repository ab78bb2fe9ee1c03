"""Implicit differentiation of entropic OT solvers (one module owns custom derivatives).

Any solver that returns gauge-fixed optimal potentials ``z* = (f*, g*)`` of a :class:`Problem`
can be wrapped by :func:`implicit_solve`. The backward pass uses the implicit function
theorem on the optimality residual ``F(z; θ) = 0`` of :func:`_dual.optimality_residual`:

  ``θ̄ = (∂_θ F)ᵀ w``  where  ``(−∂_z F) w = z̄``.

``−∂_z F`` is symmetric positive definite (the negated Hessian of the concave dual, plus the
gauge term for balanced problems), so ``w`` is found by conjugate gradients on its Schur
complement (:mod:`._schur`, shared with the Newton solver), matrix-free: every product is two
online row reductions, and no n×m matrix is formed.

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
from otkit.geometry import _reductions as R
from otkit.solvers import _dual
from otkit.solvers._schur import schur_solve

Array = jax.Array


def _default_cg_tol(dtype) -> float:
  return float(jnp.finfo(dtype).eps) ** 0.6


def _plan_products(problem: _dual.Problem, f: Array, g: Array):
  """``x ↦ P x / ε``, ``y ↦ Pᵀ y / ε`` and ``Σ_i P_ij² / d_i`` (given ``d``), all online."""
  eps, geom = problem.epsilon, problem.geom
  geom_t = geom.transpose()
  log_u = _dual.safe_log(problem.a) + f / eps
  log_v = _dual.safe_log(problem.b) + g / eps
  p_times = lambda x: R.apply_kernel_rows(geom, log_u, log_v, eps, x) / eps  # noqa: E731
  pt_times = lambda y: R.apply_kernel_rows(geom_t, log_v, log_u, eps, y) / eps  # noqa: E731

  def log_d(d):  # rows or columns of zero weight have d = 0 and P = 0: keep them at −inf
    return jnp.log(jnp.maximum(d, jnp.finfo(d.dtype).tiny))

  def squared_column_sums(d):  # Σ_i P_ij² / d_i, P_ij² = exp(2 log u_i + 2 log v_j − C_ij/(ε/2))
    return R.apply_kernel_rows(geom_t, 2.0 * log_v, 2.0 * log_u - log_d(d), 0.5 * eps,
                               jnp.ones_like(f))

  def squared_row_sums(d):
    return R.apply_kernel_rows(geom, 2.0 * log_u, 2.0 * log_v - log_d(d), 0.5 * eps,
                               jnp.ones_like(g))

  return p_times, pt_times, squared_column_sums, squared_row_sums


def adjoint_solve(problem: _dual.Problem, f: Array, g: Array, cotangent, *,
                  tol: float | None = None, maxiter: int = 500):
  """Solves ``(−∂_z F) w = z̄`` at the optimum by CG on a Schur complement.

  ``−∂_z F = H + κ v vᵀ`` with ``H = [[D_1, P/ε], [Pᵀ/ε, D_2]]`` (the negated dual Hessian) and
  the gauge term of :func:`_dual.optimality_residual`. For balanced problems ``H`` has the
  kernel ``k = (1, −1)``: the gauge part of ``w`` is then found in closed form and ``H w_0 =
  z̄ − v (kᵀz̄)/(kᵀv)`` (a consistent singular system) by :func:`._schur.schur_solve`, which
  runs CG on the smaller block with the exact diagonal of the Schur complement as
  preconditioner. Every product is two online row reductions; no n×m matrix is formed.

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
  eps = problem.epsilon
  row, col = _dual.marginals(problem, f, g)
  target_a, target_b = _dual.marginal_targets(problem, f, g)
  diag_f = row / eps + _dual.inv_rho(eps, problem.tau_a) * target_a
  diag_g = col / eps + _dual.inv_rho(eps, problem.tau_b) * target_b
  balanced = _dual.is_balanced(problem)
  gauge = balanced.astype(f.dtype)

  # Split off the gauge direction (balanced): H w_0 = z̄ − v (kᵀz̄)/(kᵀv), w = w_0 + t k.
  va, vb = _dual.gauge_vector(problem)
  k_dot_v = jnp.sum(va) - jnp.sum(vb)
  k_dot_z = jnp.sum(cotangent[0]) - jnp.sum(cotangent[1])
  shift = gauge * k_dot_z / k_dot_v
  rhs_f, rhs_g = cotangent[0] - shift * va, cotangent[1] - shift * vb

  p_times, pt_times, col_sq, row_sq = _plan_products(problem, f, g)
  rtol = jnp.asarray(tol, f.dtype)
  if f.shape[0] >= g.shape[0]:  # CG on the smaller block
    diag_s = diag_g - col_sq(diag_f) / eps ** 2
    w_f, w_g = schur_solve(diag_f, diag_g, p_times, pt_times, diag_s, rhs_f, rhs_g, gauge,
                           rtol, maxiter)
  else:
    diag_s = diag_f - row_sq(diag_g) / eps ** 2
    w_g, w_f = schur_solve(diag_g, diag_f, pt_times, p_times, diag_s, rhs_g, rhs_f, gauge,
                           rtol, maxiter)
  kappa = 1.0 / eps
  t = gauge * (k_dot_z / (kappa * k_dot_v) - (jnp.sum(va * w_f) + jnp.sum(vb * w_g))) / k_dot_v
  return w_f + t, w_g - t


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
