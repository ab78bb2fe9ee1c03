"""Kernel-space reductions: the log-sum-exps of many potentials against one stored Gibbs kernel.

When ``k`` problems share one cost matrix ``C (n, m)`` (the measures of a fixed-support
barycenter), the soft-minima ``log Σ_j exp(h_kj − C_ij / ε)`` of all of them are one matrix
product with the kernel ``K = exp(−(C − min C) / ε)``: ``log(exp(h − max h) Kᵀ) + max h −
min C / ε``. This costs ``2kmn`` multiply-adds instead of ``kmn`` exponentials, and runs on the
BLAS of the backend. The shifts keep every factor at most 1, so nothing overflows; a factor
that underflows (``C_ij / ε`` beyond about 745 in float64) is lost, and the product is then
trusted only where its logarithm stays above ``TRUSTED_LOG`` (the lost terms are then below
``n e^{−745 − TRUSTED_LOG}`` relative to the sum). Each reduction reports whether every entry
that matters is trusted, so that the caller can fall back to the log domain.

References:
  Cuturi, "Sinkhorn distances: lightspeed computation of optimal transport", NeurIPS 2013 (the
  kernel form of the iteration).
  Schmitzer, "Stabilized sparse scaling algorithms for entropy regularized transport problems",
  SIAM J. Sci. Comput. 2019 (why the kernel form needs a guard at small ε).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from otkit.geometry import _budget
from otkit.geometry import _geometry as G

Array = jax.Array
# Below this log-value a kernel product may have lost terms to underflow (float64 underflows at
# about −745): the reductions then report that they cannot be trusted.
TRUSTED_LOG = -650.0


class Kernel(NamedTuple):
  """``K = exp(−(C − shift) / ε)`` for a geometry's costs ``C (n, m)``, with ``shift = min C``."""

  matrix: Array  # (n, m)
  shift: Array
  epsilon: Array


def build(geom, epsilon: Array) -> Kernel:
  """The kernel of ``geom`` (any geometry, evaluated once in blocks) at ``epsilon``."""
  cost, _ = G.evaluate(geom)
  shift = jnp.min(cost)
  return Kernel(jnp.exp((shift - cost) / epsilon), shift, epsilon)


def fits(geom) -> bool:
  """Whether a float64 kernel of ``geom`` fits the memory budget twice (the kernel, and the
  costs it is made from while it is built; one kernel lives at a time), for every problem of its
  ``vmap_size``; never for a geometry blocked by the caller (``chunk_size``), which asks to stay
  online. Static, from the shape and the budget."""
  if getattr(geom, "chunk_size", None) is not None:
    return False
  n, m = geom.shape
  return 2 * n * m * 8 * getattr(geom, "vmap_size", 1) <= _budget.budget_for(geom)


def _lse(kernel: Kernel, h: Array, matrix: Array) -> tuple[Array, Array]:
  """``log Σ exp(h_k·) e^{−(C − shift)/ε}`` by one product ``exp(h − max h) @ matrix``; returns the
  values ``(k, ·)`` and the log of the raw product (for the trust check; ``-inf`` where ``h`` has
  ``+inf`` or NaN entries, which only an untrusted earlier product makes).

  Every operation is kept finite in value and derivative, whatever ``h``: an untrusted result is
  discarded by the caller (a ``cond``, or a select under ``vmap``), and its derivative, zero,
  must not be ``0 · inf``."""
  valid = jnp.isfinite(h) | (h == -jnp.inf)
  h = jnp.where(valid, h, -jnp.inf)
  top = jnp.max(h, axis=1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  product = jnp.matmul(jnp.exp(h - top), matrix, precision=jax.lax.Precision.HIGHEST)
  positive = product > 0.0
  raw = jnp.where(positive, jnp.log(jnp.where(positive, product, 1.0)), -jnp.inf)
  raw = jnp.where(jnp.all(valid, axis=1, keepdims=True), raw, -jnp.inf)
  return raw + top - kernel.shift / kernel.epsilon, raw


def lse_rows(kernel: Kernel, h: Array) -> tuple[Array, Array]:
  """``out_ki = log Σ_j exp(h_kj − C_ij / ε)`` for ``h (k, m)``; returns ``out (k, n)`` and
  whether every entry is trusted."""
  out, raw = _lse(kernel, h, kernel.matrix.T)
  return out, jnp.all(raw > TRUSTED_LOG)


def lse_cols(kernel: Kernel, h: Array, needed: Array | None = None) -> tuple[Array, Array]:
  """``out_kj = log Σ_i exp(h_ki − C_ij / ε)`` for ``h (k, n)``; returns ``out (k, m)`` and
  whether every entry where ``needed (k, m)`` (default: all) is trusted."""
  out, raw = _lse(kernel, h, kernel.matrix)
  trusted = raw > TRUSTED_LOG
  if needed is not None:
    trusted = trusted | ~needed
  return out, jnp.all(trusted)
