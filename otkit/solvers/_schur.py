"""Conjugate gradients on the Schur complement of the entropic dual's Hessian.

Both the Newton direction of :mod:`._newton` and the adjoint solve of :mod:`._implicit` solve a
symmetric positive (semi)definite system with diagonal blocks on the diagonal,

  ``[[D_1, B], [Bᵀ, D_2]] (x_1, x_2) = (r_1, r_2)``,

``B`` being the transport plan (exact and online, or sparsified) scaled by ``1/ε``. Eliminating
``x_1`` leaves ``S x_2 = r_2 − Bᵀ D_1⁻¹ r_1`` with ``S = D_2 − Bᵀ D_1⁻¹ B``; with the Jacobi
preconditioner ``diag(S)`` its spectrum is ``1 − σ_k²`` where the full system's is ``1 ± σ_k``,
so CG needs far fewer iterations near a permutation-like plan (small ε).

When ``D_1 = B 1`` and ``D_2 = Bᵀ 1`` (balanced problems) ``S`` has the constant vector as its
kernel (and ``e_j`` for every entry ``j`` of zero weight); ``gauge = 1`` keeps ``x_2``
orthogonal to the constant vector.

Reference:
  Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil, Xiao, Ying, "Accelerating Sinkhorn
  algorithm with sparse Newton iterations", ICLR 2024 (the Schur complement, their §3).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def schur_solve(diag_1: Array, diag_2: Array, b_times: Callable, bt_times: Callable,
                diag_s: Array, rhs_1: Array, rhs_2: Array, gauge: Array, rtol: Array,
                maxiter: int) -> tuple[Array, Array]:
  """Solves ``[[diag_1, B], [Bᵀ, diag_2]] (x_1, x_2) = (rhs_1, rhs_2)``.

  Args:
    diag_1, diag_2: the diagonal blocks, shapes ``(n_1,)`` and ``(n_2,)``.
    b_times: ``x_2 (n_2,) -> B x_2 (n_1,)``; bt_times: ``x_1 (n_1,) -> Bᵀ x_1 (n_2,)``.
    diag_s: the diagonal of ``S = diag_2 − Bᵀ diag_1⁻¹ B``, shape ``(n_2,)`` (preconditioner).
    rhs_1, rhs_2: shapes ``(n_1,)`` and ``(n_2,)``.
    gauge: ``1`` projects ``x_2`` onto the mean-zero vectors (singular balanced systems),
      ``0`` does not.
    rtol: relative residual tolerance of CG; maxiter: static cap on its iterations.

  Returns:
    ``(x_1, x_2)``.
  """
  tiny = jnp.finfo(diag_1.dtype).tiny
  inv_1 = 1.0 / jnp.maximum(diag_1, tiny)
  project = lambda x: x - gauge * jnp.mean(x)  # noqa: E731
  schur = lambda x: project(diag_2 * x - bt_times(inv_1 * b_times(project(x))))  # noqa: E731
  # An entry of zero weight (diag_2 = 0, a zero column of B) is in the kernel of S with the
  # constant vector: the preconditioner leaves it at zero instead of amplifying it.
  inv_s = jnp.where(diag_2 > 0,
                    1.0 / jnp.maximum(diag_s, jnp.finfo(diag_1.dtype).eps * diag_2 + tiny), 0.0)
  rhs = project(rhs_2 - bt_times(inv_1 * rhs_1))
  x_2, _ = jax.scipy.sparse.linalg.cg(schur, rhs, tol=rtol, atol=0.0, maxiter=maxiter,
                                      M=lambda x: project(inv_s * project(x)))
  x_2 = project(x_2)
  return inv_1 * (rhs_1 - b_times(x_2)), x_2
