"""The terms of the Gromov–Wasserstein objective for the two kinds of intra-costs.

The objective of a coupling ``T`` between ``(A, a)`` and ``(B, b)`` is
``J(T) = Σ_ijkl L(A_ik, B_jl) T_ij T_kl`` with a loss split as
``L(s, t) = f₁(s) + f₂(t) − h₁(s) h₂(t)`` (Peyré, Cuturi, Solomon 2016, Prop. 1):

* square loss ``(s − t)²``: ``f₁ = s², f₂ = t², h₁ = s, h₂ = 2t``;
* KL loss ``s log(s/t) − s + t``: ``f₁ = s log s − s, f₂ = t, h₁ = s, h₂ = log t``.

With ``r = T1`` and ``c = Tᵀ1``, ``J(T) = ⟨f₁(A) r, r⟩ + ⟨f₂(B) c, c⟩ − ⟨h₁(A) T h₂(B)ᵀ, T⟩`` is a
homogeneous quadratic in ``T``, so ``J(T) = ½ ⟨∇J(T), T⟩`` with
``∇J(T) = f₁(A) r ⊕ f₂(B) c − h₁(A) T h₂(B)ᵀ`` plus the same with ``Aᵀ, Bᵀ`` (twice it for
symmetric costs).

Two representations of an intra-cost:

* dense: the ``(n, n)`` matrix, any cost and either loss, O(n²) memory;
* factored: a point cloud with the squared Euclidean cost, ``A = L Rᵀ`` with
  ``L = [‖x‖², 1, −2x]`` and ``R = [1, ‖x‖², x]`` (rank ``d + 2``). Then ``A T B`` is
  ``L (Rᵀ T R_B) L_Bᵀ``, one application of the plan to ``d + 2`` columns, and
  ``((A ∘ A) w)_i = L_iᵀ (Rᵀ diag(w) R) L_i``: O(n d²), no ``n × n`` matrix.

This module also holds the per-node signatures of the sorting-based lower bound (Mémoli 2011,
§6): the strength ``s_i = Σ_k A_ik w_k`` and the eccentricity ``e_i = (Σ_k A_ik² w_k)^½``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST


def mm(x: Array, y: Array) -> Array:
  return jnp.matmul(x, y, precision=_HIGHEST)


def centred(x: Array, centre: Array | None = None) -> Array:
  """``x`` minus a centre that carries no gradient (the squared Euclidean cost is translation
  invariant; centring keeps ``‖x‖² + ‖y‖² − 2⟨x, y⟩`` accurate in float32)."""
  centre = jnp.mean(x, axis=0) if centre is None else centre
  return x - jax.lax.stop_gradient(centre)


def factors(x: Array) -> tuple[Array, Array]:
  """``L, R`` of shape ``(n, d + 2)`` with ``‖x_i − x_k‖² = L_i · R_k`` (``x`` centred)."""
  u = jnp.sum(x * x, axis=1, keepdims=True)
  one = jnp.ones_like(u)
  return jnp.concatenate([u, one, -2.0 * x], 1), jnp.concatenate([one, u, x], 1)


def right_from_left(left: Array) -> Array:
  """``R = [1, ‖x‖², x]`` from ``L = [‖x‖², 1, −2x]`` (also for ``T L`` and ``T R``: linear)."""
  return jnp.concatenate([left[:, 1:2], left[:, :1], -0.5 * left[:, 2:]], 1)


def factored_square(left: Array, right: Array, w: Array) -> Array:
  """``((A ∘ A) w)_i`` for ``A = left rightᵀ``: ``left_iᵀ (rightᵀ diag(w) right) left_i``."""
  gram = mm(right.T * w, right)
  return jnp.maximum(jnp.sum(mm(left, gram) * left, axis=1), 0.0)


def loss_parts(loss: str, s: Array, side: int) -> tuple[Array, Array]:
  """``(f, h)`` of the loss applied entrywise to an intra-cost (``side`` 0: ``f₁, h₁``; 1:
  ``f₂, h₂``)."""
  if loss == "square":
    return s * s, (s if side == 0 else 2.0 * s)
  if side == 0:
    return jax.scipy.special.xlogy(s, s) - s, s
  return s, jnp.log(s)


def dense_gradient(loss: str, A: Array, B: Array, r: Array, c: Array, T: Array,
                   symmetric: bool) -> Array:
  """``∇J(T)`` for dense intra-costs, shape ``(n, m)`` (marginal terms with ``r``, ``c``)."""
  def one(A, B):
    f1, h1 = loss_parts(loss, A, 0)
    f2, h2 = loss_parts(loss, B, 1)
    return (mm(f1, r)[:, None] + mm(f2, c)[None, :]) - mm(mm(h1, T), h2.T)

  return 2.0 * one(A, B) if symmetric else one(A, B) + one(A.T, B.T)


def dense_objective(loss: str, A: Array, B: Array, T: Array) -> Array:
  """``J(T)`` for dense intra-costs (its own marginals), differentiable in ``A``, ``B``, ``T``."""
  r, c = jnp.sum(T, axis=1), jnp.sum(T, axis=0)
  f1, h1 = loss_parts(loss, A, 0)
  f2, h2 = loss_parts(loss, B, 1)
  return (jnp.dot(mm(f1, r), r) + jnp.dot(mm(f2, c), c)
          - jnp.sum(mm(mm(h1, T), h2.T) * T))


def strength(A_or_x: Array, w: Array, factored: bool) -> Array:
  """``s_i = Σ_k A_ik w_k``, shape ``(n,)``, for a dense ``A (n, n)`` or points ``x (n, d)``."""
  if factored:
    left, right = factors(centred(A_or_x))
    return mm(left, mm(right.T, w))
  return mm(A_or_x, w)


def eccentricity(A_or_x: Array, w: Array, factored: bool) -> Array:
  """``e_i = (Σ_k A_ik² w_k)^½``, shape ``(n,)`` (zero gradient where it is 0)."""
  if factored:
    sq = factored_square(*factors(centred(A_or_x)), w)
  else:
    sq = mm(A_or_x * A_or_x, w)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
