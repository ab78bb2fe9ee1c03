"""The entropic OT dual and its optimality conditions, shared by every solver.

Conventions (ε-form, weights inside the kernel, as in ott-jax):

* plan ``P_ij = a_i b_j exp((f_i + g_j − C_ij) / ε)``;
* primal ``⟨C, P⟩ + ε KL(P ‖ a⊗b) + ρ_a KL(P1 ‖ a) + ρ_b KL(Pᵀ1 ‖ b)`` with
  ``ρ = ε τ / (1 − τ)`` (``τ = 1``: balanced marginal, ``ρ = ∞``);
* dual ``D(f, g) = Σ_i a_i ψ_a(f_i) + Σ_j b_j ψ_b(g_j) − ε (Σ_ij P_ij − Σa Σb)`` where
  ``ψ(f) = ρ (1 − exp(−f/ρ))`` (``= f`` when balanced).

All functions take a :class:`Problem` so that implicit differentiation can differentiate
them with respect to every array in it (points, weights, ε, τ).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from otkit.geometry import _reductions as R

Array = jax.Array


class Problem(NamedTuple):
  """One entropic OT problem: a geometry, weights ``a (n,)``, ``b (m,)``, scalars ε, τ_a, τ_b."""

  geom: Any
  a: Array
  b: Array
  epsilon: Array
  tau_a: Array
  tau_b: Array


def safe_log(w: Array) -> Array:
  """``log w`` with ``-inf`` (and a zero gradient) where ``w = 0``."""
  positive = w > 0
  return jnp.where(positive, jnp.log(jnp.where(positive, w, 1.0)), -jnp.inf)


def inv_rho(epsilon: Array, tau: Array) -> Array:
  """``1/ρ = (1 − τ) / (ε τ)``; 0 for a balanced marginal."""
  return (1.0 - tau) / (epsilon * tau)


def _one_minus_exp_over(x: Array) -> Array:
  """``(1 − exp(−x)) / x``, smooth through ``x = 0`` (value 1)."""
  small = jnp.abs(x) < 1e-3
  xs = jnp.where(small, 1.0, x)
  series = 1.0 - x / 2.0 + x * x / 6.0 - x * x * x / 24.0
  return jnp.where(small, series, -jnp.expm1(-xs) / xs)


def psi(f: Array, s: Array) -> Array:
  """``ρ (1 − exp(−f/ρ))`` written with ``s = 1/ρ``; equals ``f`` at ``s = 0``."""
  return f * _one_minus_exp_over(f * s)


def weighted_psi(w: Array, f: Array, s: Array) -> Array:
  """``w_i ψ(f_i)`` entrywise, 0 where ``w_i = 0`` (there ``ψ`` may overflow: 0 × ∞ is no term).

  The double ``where`` keeps the gradient finite too.
  """
  positive = w > 0
  return jnp.where(positive, w * psi(jnp.where(positive, f, 0.0), s), 0.0)


def marginal_targets(problem: Problem, f: Array, g: Array) -> tuple[Array, Array]:
  """The marginals the plan must have at the optimum: ``a·exp(−f/ρ_a)``, ``b·exp(−g/ρ_b)``."""
  s_a = inv_rho(problem.epsilon, problem.tau_a)
  s_b = inv_rho(problem.epsilon, problem.tau_b)
  return problem.a * jnp.exp(-f * s_a), problem.b * jnp.exp(-g * s_b)


def log_row_marginal(problem: Problem, f: Array, g: Array) -> Array:
  """``log (P 1)``, shape ``(n,)``."""
  eps = problem.epsilon
  lf = R.lse_rows(problem.geom, safe_log(problem.b) + g / eps, eps)
  return safe_log(problem.a) + f / eps + lf


def marginals(problem: Problem, f: Array, g: Array) -> tuple[Array, Array]:
  """``(P 1, Pᵀ 1)`` by two online row reductions."""
  transposed = problem._replace(geom=problem.geom.transpose(), a=problem.b, b=problem.a)
  return (jnp.exp(log_row_marginal(problem, f, g)),
          jnp.exp(log_row_marginal(transposed, g, f)))


def dual_objective(problem: Problem, f: Array, g: Array, total_mass: Array | None = None) -> Array:
  """``D(f, g)``; equals the primal regularised cost at the optimum.

  ``total_mass`` (``Σ_ij P_ij``) may be passed when already known; otherwise one reduction.
  """
  eps = problem.epsilon
  if total_mass is None:
    total_mass = jnp.sum(jnp.exp(log_row_marginal(problem, f, g)))
  s_a = inv_rho(eps, problem.tau_a)
  s_b = inv_rho(eps, problem.tau_b)
  mass = jnp.sum(problem.a) * jnp.sum(problem.b)
  return (jnp.sum(weighted_psi(problem.a, f, s_a)) + jnp.sum(weighted_psi(problem.b, g, s_b))
          - eps * (total_mass - mass))


def is_balanced(problem: Problem) -> Array:
  return jnp.logical_and(problem.tau_a == 1.0, problem.tau_b == 1.0)


def gauge_vector(problem: Problem) -> tuple[Array, Array]:
  """``v = (a, −b)``: ``vᵀ(f, g) = ⟨a, f⟩ − ⟨b, g⟩`` is zero in the balanced gauge."""
  return problem.a, -problem.b


def fix_gauge(problem: Problem, f: Array, g: Array) -> tuple[Array, Array]:
  """Shifts balanced potentials ``(f + c, g − c)`` so that ``⟨a, f⟩ = ⟨b, g⟩``."""
  shift = (jnp.sum(problem.b * g) - jnp.sum(problem.a * f)) / (jnp.sum(problem.a) + jnp.sum(problem.b))
  shift = jnp.where(is_balanced(problem), shift, 0.0)
  return f + shift, g - shift


def optimality_residual(problem: Problem, fg: tuple[Array, Array]) -> tuple[Array, Array]:
  """``F(f, g) = ∇D(f, g) − κ v (vᵀ(f, g))``, zero exactly at the gauge-fixed optimum.

  ``∇D = (a e^{−f/ρ_a} − P1, b e^{−g/ρ_b} − Pᵀ1)``. For balanced problems the gauge term with
  ``κ = 1/ε`` removes the kernel direction ``(1, −1)`` of the Hessian, so ``∂F/∂(f, g)`` is
  negative definite and the implicit-function linear system is non-singular.
  """
  f, g = fg
  row, col = marginals(problem, f, g)
  target_a, target_b = marginal_targets(problem, f, g)
  va, vb = gauge_vector(problem)
  kappa = jnp.where(is_balanced(problem), 1.0 / problem.epsilon, 0.0)
  gauge = kappa * (jnp.sum(va * f) + jnp.sum(vb * g))
  return target_a - row - gauge * va, target_b - col - gauge * vb
