"""The sparsified Hessian of the entropic dual and the Newton direction it gives.

With ``P_ij = a_i b_j exp((f_i + g_j − C_ij)/ε)``, the Hessian of the dual ``D(f, g)`` is
``−K/ε`` with ``K = [[diag(P1), P], [Pᵀ, diag(Pᵀ1)]]`` (plus ``ε/ρ`` terms on the diagonal
when unbalanced). Near a small-ε optimum ``P`` is nearly sparse, so ``K`` is approximated by

  ``K_S = [[diag(P1), P_S + u vᵀ], [(P_S + u vᵀ)ᵀ, diag(Pᵀ1)]]``

where ``P_S`` keeps the largest entries of ``P`` (a static number of them, chosen among the
largest of each column during a blocked pass over the cost) and the rank-one ``u vᵀ`` carries
the dropped mass, ``u ∝ P1 − P_S 1``, ``v ∝ Pᵀ1 − P_Sᵀ 1`` (``Σu = Σv``, so ``u vᵀ`` has
exactly the dropped row and column sums). The diagonal keeps the full sums, so ``K_S`` is
positive semidefinite with the exact kernel ``(1, −1)`` of ``K`` when balanced, and the
dropped mass still couples the pieces of the sparse graph (without it a piece that is
connected to the rest only through small entries lets the Newton step shift it freely).

The Newton direction solves ``K_S Δ = ε ∇D`` by Jacobi-preconditioned conjugate gradients on
the Schur complement onto the smaller block (the larger diagonal block is eliminated), with
gather and segment-sum products: O(kept + n + m) per product and no n×m matrix. On a nearly
permutation-like plan this takes tens of CG iterations where Jacobi-preconditioned CG on the
full system takes about a thousand (the paper's fixture, n = 200).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from otkit.geometry import _reductions as R
from otkit.solvers import _dual
from otkit.solvers._schur import schur_solve

Array = jax.Array

# The kept entries are the largest among CANDIDATES × (kept / m) of each column.
CANDIDATES = 2
# Relative residual of the conjugate-gradient solve: the marginal error, clipped to
# [sqrt(finfo.eps), CG_RTOL] (an inexact Newton forcing term).
CG_RTOL = 1e-2


class Sparsity(NamedTuple):
  """Static sizes of the sparse Hessian: ``candidates`` per column, ``kept`` entries in all."""

  candidates: int
  kept: int


def sparsity(n: int, m: int, density: float) -> Sparsity:
  """Keeps ``⌈density · max(n, m)⌉`` entries of the plan (at most all of them), chosen among
  ``CANDIDATES`` times as many per column (at most ``n``)."""
  kept = int(min(n * m, max(1, math.ceil(density * max(n, m)))))
  candidates = int(min(n, math.ceil(CANDIDATES * kept / m)))
  return Sparsity(candidates, min(kept, m * candidates))


def column_pass(problem: _dual.Problem, geom_t, f: Array, candidates: int | None):
  """``lg = lse_rows(geomᵀ, log a + f/ε)`` (shape ``(m,)``) and, unless ``candidates`` is None,
  the ``candidates`` largest entries of every column of ``P`` in the same blocked pass.

  Returns ``(lg, cand_log, cand_idx)``: ``cand_log[j, l] = log a_i + f_i/ε − C_ij/ε`` at the rows
  ``i = cand_idx[j, l]``, shapes ``(m, candidates)`` (``None`` without candidates). The ranking
  within a column does not depend on ``g``. Rows are ranked by float32 copies of the logits
  (XLA's CPU top-k is much faster in float32); the kept values are exact.
  """
  eps = problem.epsilon
  h = _dual.safe_log(problem.a) + f / eps
  if candidates is None:
    return R.lse_rows(geom_t, h, eps), None, None

  def block(rows):
    logits = h[None, :] - geom_t.block_cost(rows) / eps
    _, idx = jax.lax.top_k(jax.lax.stop_gradient(logits).astype(jnp.float32), candidates)
    return R.lse(logits), jnp.take_along_axis(logits, idx, axis=1), idx

  return R.map_row_blocks(block, geom_t.row_data, geom_t.block_rows)


def select_entries(problem: _dual.Problem, shift: Array, g: Array, cand_log: Array,
                   cand_idx: Array, kept: int):
  """The ``kept`` largest entries of ``P`` among the column candidates, as ``(values, rows,
  cols)`` of shape ``(kept,)``.

  ``cand_log`` and ``cand_idx`` come from :func:`column_pass` at potentials ``f₀``; ``shift =
  (f − f₀)/ε`` (shape ``(n,)``) brings their values to the current ``f`` (the candidates
  themselves are those of ``f₀``).
  """
  candidates = cand_log.shape[1]
  log_p = (cand_log + shift[cand_idx] + _dual.safe_log(problem.b)[:, None]
           + g[:, None] / problem.epsilon).reshape(-1)
  _, q = jax.lax.top_k(jax.lax.stop_gradient(log_p).astype(jnp.float32), kept)
  return jnp.exp(log_p[q]), cand_idx.reshape(-1)[q], q // candidates


def dropped_mass(row: Array, col: Array, values: Array, rows: Array, cols: Array):
  """``(u, v)`` with ``u vᵀ`` of row sums ``P1 − P_S 1`` and column sums ``Pᵀ1 − P_Sᵀ 1``."""
  drop_r = jnp.maximum(row - jax.ops.segment_sum(values, rows, num_segments=row.shape[0]), 0.0)
  drop_c = jnp.maximum(col - jax.ops.segment_sum(values, cols, num_segments=col.shape[0]), 0.0)
  total = 0.5 * (jnp.sum(drop_r) + jnp.sum(drop_c))
  scale = jax.lax.rsqrt(jnp.maximum(total, jnp.finfo(row.dtype).tiny))
  return drop_r * scale, drop_c * scale


def sparse_schur_solve(diag_1: Array, diag_2: Array, coupling, rhs_1: Array, rhs_2: Array,
                       gauge: Array, rtol: Array, maxiter: int) -> tuple[Array, Array]:
  """:func:`._schur.schur_solve` with ``B = Σ_l values_l e_{idx_1[l]} e_{idx_2[l]}ᵀ + u_1 u_2ᵀ``
  given as ``coupling = (values, idx_1, idx_2, u_1, u_2)`` (gather and segment-sum products)."""
  values, idx_1, idx_2, u_1, u_2 = coupling
  n_1, n_2 = diag_1.shape[0], diag_2.shape[0]
  inv_1 = 1.0 / jnp.maximum(diag_1, jnp.finfo(diag_1.dtype).tiny)

  def b_times(x_2):
    return jax.ops.segment_sum(values * x_2[idx_2], idx_1, num_segments=n_1) + u_1 * (u_2 @ x_2)

  def bt_times(x_1):
    return jax.ops.segment_sum(values * x_1[idx_1], idx_2, num_segments=n_2) + u_2 * (u_1 @ x_1)

  diag_s = (diag_2 - jax.ops.segment_sum(values ** 2 * inv_1[idx_1], idx_2, num_segments=n_2)
            - u_2 ** 2 * (u_1 ** 2 @ inv_1))
  return schur_solve(diag_1, diag_2, b_times, bt_times, diag_s, rhs_1, rhs_2, gauge, rtol,
                     maxiter)


def newton_direction(problem: _dual.Problem, f: Array, g: Array, row: Array, col: Array, grad,
                     entries, error: Array, damping: Array, maxiter: int) -> tuple[Array, Array]:
  """``Δ = ε K_S⁻¹ ∇D`` at ``(f, g)``.

  Args:
    problem: the problem.
    f, g: potentials, shapes ``(n,)``, ``(m,)``; ``row = P1`` and ``col = Pᵀ1`` there.
    grad: ``∇D = (∇_f D, ∇_g D)``.
    entries: ``(values, rows, cols)`` of :func:`select_entries`.
    error: the marginal error (sets the CG tolerance).
    maxiter: static cap on CG iterations.

  Returns:
    ``(Δf, Δg)``, shapes ``(n,)``, ``(m,)``.
  """
  eps = problem.epsilon
  target_a, target_b = _dual.marginal_targets(problem, f, g)
  diag_f = row + eps * _dual.inv_rho(eps, problem.tau_a) * target_a
  diag_g = col + eps * _dual.inv_rho(eps, problem.tau_b) * target_b
  values, rows, cols = entries
  u, v = dropped_mass(row, col, values, rows, cols)
  diag_f, diag_g = diag_f * (1.0 + damping), diag_g * (1.0 + damping)
  gauge = jnp.where(_dual.is_balanced(problem), 1.0, 0.0).astype(row.dtype)
  rtol = jnp.clip(error, jnp.sqrt(jnp.finfo(row.dtype).eps), CG_RTOL)
  if row.shape[0] >= col.shape[0]:  # CG on the smaller block
    df, dg = sparse_schur_solve(diag_f, diag_g, (values, rows, cols, u, v), grad[0], grad[1],
                                gauge, rtol, maxiter)
  else:
    dg, df = sparse_schur_solve(diag_g, diag_f, (values, cols, rows, v, u), grad[1], grad[0],
                                gauge, rtol, maxiter)
  return eps * df, eps * dg
