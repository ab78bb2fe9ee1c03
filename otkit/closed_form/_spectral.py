"""Square roots of positive semi-definite matrices with finite derivatives.

Both roots come from one symmetric eigendecomposition ``C = V diag(λ) Vᵀ``. The derivative of a
spectral function ``f(C) = V diag(f(λ)) Vᵀ`` is ``dC ↦ V (L ∘ Vᵀ dC V) Vᵀ`` with the Loewner matrix
``L_ij = (f(λ_i) − f(λ_j)) / (λ_i − λ_j)`` (``f'(λ_i)`` on the diagonal). Differentiating ``eigh``
itself divides by ``λ_i − λ_j`` and fails at repeated eigenvalues (the identity matrix); the
closed forms of ``L`` used here do not:

- ``√λ``: ``L_ij = 1 / (√λ_i + √λ_j)``, floored at ``2√τ`` so that it stays finite at ``λ = 0``;
- the pseudo-inverse root ``λ^{−½}`` (``0`` for ``λ <= τ``):
  ``L_ij = −1 / (√λ_i √λ_j (√λ_i + √λ_j))`` on the range, the divided difference across it, ``0``
  on the kernel.

``τ = 10 · d · eps · λ_max`` is the threshold below which an eigenvalue counts as zero.

References:
  Bhatia, "Matrix Analysis", Springer GTM 169, 1997, §V.3 (Daleckii–Krein formula).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def symmetrize(c: Array) -> Array:
  return 0.5 * (c + c.T)


def _spectrum(c: Array) -> tuple[Array, Array, Array]:
  """Eigenvalues clipped at 0, eigenvectors and the zero threshold ``τ`` of a PSD matrix."""
  lam, vecs = jnp.linalg.eigh(symmetrize(c))
  lam = jnp.maximum(lam, 0.0)
  eps = jnp.finfo(c.dtype).eps
  thr = 10.0 * c.shape[-1] * eps * jnp.maximum(lam[-1], jnp.finfo(c.dtype).tiny)
  return lam, vecs, thr


def _roots(lam: Array, thr: Array) -> tuple[Array, Array, Array]:
  pos = lam > thr
  s = jnp.sqrt(lam)
  r = jnp.where(pos, 1.0 / jnp.sqrt(jnp.where(pos, lam, 1.0)), 0.0)
  return s, r, pos


def _apply(vecs: Array, diag_or_mat: Array) -> Array:
  """``V diag(f) Vᵀ`` for a vector ``f``, ``V M Vᵀ`` for a matrix ``M``."""
  inner = diag_or_mat[:, None] * vecs.T if diag_or_mat.ndim == 1 else diag_or_mat @ vecs.T
  return symmetrize(vecs @ inner)


@jax.custom_jvp
def psd_sqrt_pair(c: Array) -> tuple[Array, Array]:
  """``(C^{1/2}, (C^{+})^{1/2})`` of a symmetric PSD matrix ``(d, d)``: the root and the root of the
  pseudo-inverse (eigenvalues below ``τ`` treated as zero). Negative rounding is clipped."""
  lam, vecs, thr = _spectrum(c)
  s, r, _ = _roots(lam, thr)
  return _apply(vecs, s), _apply(vecs, r)


@psd_sqrt_pair.defjvp
def _psd_sqrt_pair_jvp(primals, tangents):
  (c,), (dc,) = primals, tangents
  lam, vecs, thr = _spectrum(c)
  s, r, pos = _roots(lam, thr)
  e = vecs.T @ symmetrize(dc) @ vecs
  s_sum = s[:, None] + s[None, :]
  l_sqrt = 1.0 / jnp.maximum(s_sum, 2.0 * jnp.sqrt(thr))
  both = pos[:, None] & pos[None, :]
  one = pos[:, None] ^ pos[None, :]
  safe_prod = jnp.where(both, s[:, None] * s[None, :] * s_sum, 1.0)
  gap = lam[:, None] - lam[None, :]
  safe_gap = jnp.where(one, gap, 1.0)
  l_inv = jnp.where(both, -1.0 / safe_prod,
                    jnp.where(one, (r[:, None] - r[None, :]) / safe_gap, 0.0))
  primal_out = (_apply(vecs, s), _apply(vecs, r))
  tangent_out = (_apply(vecs, l_sqrt * e), _apply(vecs, l_inv * e))
  return primal_out, tangent_out


def psd_sqrt(c: Array) -> Array:
  """``C^{1/2}`` of a symmetric PSD matrix, with finite derivatives (see the module notes)."""
  return psd_sqrt_pair(c)[0]


def trace_sqrt(c: Array) -> Array:
  """``tr C^{1/2} = Σ √λ_i`` for a symmetric PSD matrix (no derivative rule of its own)."""
  return jnp.sum(jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(symmetrize(c)), 0.0)))
