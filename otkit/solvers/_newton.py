"""Sinkhorn–Newton–Sparse (SNS): Sinkhorn sweeps, then Newton steps with a sparsified Hessian.

Stage 1 runs the log-domain Sinkhorn loop of :mod:`._sinkhorn` until the marginal error is
below ``warmup_tol`` (at most ``warmup_iters`` sweeps). Stage 2 takes Newton steps on the
concave dual ``D(f, g)`` of :mod:`._dual`, with the Hessian replaced by the sparse-plus-rank-one
approximation ``K_S`` of :mod:`._newton_hessian`:

* the direction solves ``(K_S + μ diag K_S) Δ = ε ∇D`` by conjugate gradients on the complement
  of the gauge direction; the Levenberg–Marquardt damping ``μ`` is 0 while full steps succeed
  and grows tenfold after each shortened one (it tames the near-null directions of ``K`` that
  a nearly disconnected plan has);
* a backtracking line search ``α = α₀, α₀/2, …`` (``α₀ ≤ 1`` keeps the first trial within
  4ε on every potential) accepts a step that does not decrease ``D`` beyond rounding, does not
  double the marginal error, and either satisfies Armijo's rule or lowers the error (near the
  optimum ``D`` is flat to rounding and only the error still measures progress);
* a Newton step that the line search rejects, or that gains less than 10 % on the error,
  stalls: Sinkhorn sweeps follow (5, then twice as many after each further stall in a row),
  over-relaxed with the factor stage 1 chose as long as that does not decrease ``D``.

Every loop is a bounded ``lax.while_loop`` (a frozen ``lax.scan`` when unrolled for
``grad_mode="unroll"``) with static shapes, so the solver runs under ``jit`` and ``vmap``; the
potentials are differentiated by the implicit rule of :mod:`._implicit`, as for
:func:`otkit.sinkhorn` (both solve the same optimality conditions).

References:
  Tang, Shavlovsky, Rahmanian, Tardini, Thekumparampil, Xiao, Ying, "Accelerating Sinkhorn
  Algorithm with Sparse Newton Iterations", ICLR 2024 (arXiv:2401.12253).
  Nocedal, Wright, "Numerical Optimization", 2nd ed., Springer 2006 (backtracking line
  search, inexact Newton–CG).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from otkit.geometry import _geometry as G
from otkit.geometry import _reductions as R
from otkit.solvers import _dual
from otkit.solvers import _newton_hessian as H
from otkit.solvers import _sinkhorn as S
from otkit.solvers._output import SinkhornOutput, result_code

Array = jax.Array

# Line search: Armijo's constant, the number of step halvings, the largest first step (in
# units of ε, on any potential) and the largest factor by which a step may raise the error.
ARMIJO = 1e-4
MAX_BACKTRACKS = 10
MAX_STEP = 4.0
MAX_GROWTH = 2.0
# A Newton step stalls if the error does not fall below PROGRESS × its previous value; then
# FALLBACK_SWEEPS Sinkhorn sweeps follow, doubled after each further stall (up to MAX_DOUBLINGS).
PROGRESS = 0.9
FALLBACK_SWEEPS = 5
MAX_DOUBLINGS = 5
# Stage 2 stops, unconverged, after PATIENCE iterations without a 1 % gain on the error (the
# floor of the floating-point precision, or a problem too diffuse for sparse Newton steps).
PATIENCE = 3 * (FALLBACK_SWEEPS + 1)
# Levenberg–Marquardt damping of the Newton system, ``K_S + μ diag(K_S)``: μ is multiplied by
# DAMPING_FACTOR (at least MIN_DAMPING) after a step shorter than the full one, divided by it
# after a full step.
DAMPING_FACTOR = 10.0
MIN_DAMPING = 1e-4
# Rounding errors of a change of the dual objective, in units of finfo.eps × its scale.
ROUNDING = 16.0


class NewtonState(NamedTuple):
  """Stage-2 loop state at potentials ``(f, g)``.

  ``lf = lse_rows(geom, log b + g/ε)`` (which depends on ``g`` only) and ``lg = lse_rows(geomᵀ,
  log a + f/ε)`` (on ``f`` only) give the marginals ``P1 = a e^{f/ε + lf}``, ``Pᵀ1 = b e^{g/ε +
  lg}``. ``cand_log``, ``cand_idx`` (shapes ``(m, c)``) are the largest entries of each column
  of ``P`` at the potential ``f_sel`` of the last Newton step (see
  :func:`._newton_hessian.column_pass`; sweeps do not rank them again). ``damping`` is the
  Levenberg–Marquardt ``μ`` and ``omega`` the over-relaxation of the sweeps. ``fallback``
  counts the sweeps due before the next Newton step, ``stalls`` the Newton steps in a row that
  stalled; ``best`` is the error last improved on by 1 %, ``stall`` the iterations since;
  ``it`` counts every iteration, ``stage2`` those of stage 2.
  """

  f: Array
  g: Array
  lf: Array
  lg: Array
  cand_log: Array
  cand_idx: Array
  f_sel: Array
  damping: Array
  omega: Array
  error: Array
  best: Array
  stall: Array
  fallback: Array
  stalls: Array
  it: Array
  stage2: Array
  failed: Array


# ----------------------------------------------------------------------------- the dual at a state


def row_pass(problem: _dual.Problem, g: Array) -> Array:
  """``lf = lse_rows(geom, log b + g/ε)``, shape ``(n,)``: one blocked pass."""
  eps = problem.epsilon
  return R.lse_rows(problem.geom, _dual.safe_log(problem.b) + g / eps, eps)


def error_of(problem: _dual.Problem, f, g, lf, lg) -> Array:
  """L1 violation of both marginal conditions (the ``error`` of :func:`otkit.sinkhorn`)."""
  eps = problem.epsilon
  return S.row_error(problem, f, lf, eps) + S.column_error(problem, g, lg, eps)


def marginal_pair(problem: _dual.Problem, state: NewtonState) -> tuple[Array, Array]:
  """``(P1, Pᵀ1)`` from the state's reductions."""
  eps = problem.epsilon
  return (jnp.exp(_dual.safe_log(problem.a) + state.f / eps + state.lf),
          jnp.exp(_dual.safe_log(problem.b) + state.g / eps + state.lg))


def dual_increase(problem: _dual.Problem, state: NewtonState, f: Array, g: Array,
                  lg: Array) -> Array:
  """``D(f, g) − D(state)``, computed as a difference so that it stays accurate near the optimum:
  the total mass changes by ``Σ_j (Pᵀ1)_j expm1(Δg_j/ε + Δlg_j)``."""
  eps = problem.epsilon
  s_a = _dual.inv_rho(eps, problem.tau_a)
  s_b = _dual.inv_rho(eps, problem.tau_b)
  _, col = marginal_pair(problem, state)
  mass_change = jnp.sum(col * jnp.expm1((g - state.g) / eps + lg - state.lg))
  psi_a, psi_b = _dual.weighted_psi, _dual.weighted_psi
  return (jnp.sum(psi_a(problem.a, f, s_a) - psi_a(problem.a, state.f, s_a))
          + jnp.sum(psi_b(problem.b, g, s_b) - psi_b(problem.b, state.g, s_b))
          - eps * mass_change)


def rounding_level(problem: _dual.Problem, state: NewtonState) -> Array:
  """The size of the rounding errors of :func:`dual_increase`."""
  scale = (jnp.sum(problem.a * jnp.abs(state.f)) + jnp.sum(problem.b * jnp.abs(state.g))
           + problem.epsilon * jnp.sum(problem.a) * jnp.sum(problem.b))
  return ROUNDING * jnp.finfo(state.f.dtype).eps * scale


def _finite(*arrays) -> Array:
  return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in arrays])


# ----------------------------------------------------------------------------- loops


class Search(NamedTuple):
  """Line-search state: ``j`` halvings tried, ``done`` once a step is accepted."""

  j: Array
  done: Array
  candidate: NewtonState


def line_search(problem: _dual.Problem, geom_t, state: NewtonState, grad, direction,
                candidates: int, differentiable: bool) -> tuple[Array, Array, NewtonState]:
  """Backtracks along ``direction`` until a step is acceptable (see the module docstring).

  Each trial costs a column pass (which also ranks the next candidates) and a row pass.

  Returns:
    ``(accepted, full, state)``: whether a step was accepted, whether it was the full step
    ``α = 1``, and the state after it (``state`` itself if none was accepted).
  """
  slope = jnp.sum(grad[0] * direction[0]) + jnp.sum(grad[1] * direction[1])
  noise = rounding_level(problem, state)
  size = jnp.maximum(jnp.max(jnp.abs(direction[0])), jnp.max(jnp.abs(direction[1])))
  tiny = jnp.finfo(size.dtype).tiny
  first = jnp.minimum(1.0, MAX_STEP * problem.epsilon / jnp.maximum(size, tiny))

  def trial(alpha):
    f = state.f + alpha * direction[0]
    g = state.g + alpha * direction[1]
    lg, cand_log, cand_idx = H.column_pass(problem, geom_t, f, candidates)
    lf = row_pass(problem, g)
    error = error_of(problem, f, g, lf, lg)
    gain = dual_increase(problem, state, f, g, lg)
    ok = (_finite(f, g, lf, lg, gain) & (gain >= -noise) & (error <= MAX_GROWTH * state.error)
          & ((gain >= ARMIJO * alpha * slope) | (error < state.error)))
    return ok, state._replace(f=f, g=g, lf=lf, lg=lg, cand_log=cand_log, cand_idx=cand_idx,
                              f_sel=f, error=error)

  def body(search):
    ok, new = trial(first * 0.5 ** search.j.astype(first.dtype))
    return Search(search.j + 1, ok, new)

  cond = lambda s: ~s.done & (s.j < MAX_BACKTRACKS)
  search = S.bounded_loop(cond, body, Search(jnp.asarray(0, jnp.int32), jnp.asarray(False), state),
                        MAX_BACKTRACKS, differentiable)
  new = jax.tree.map(lambda c, s: jnp.where(search.done, c, s), search.candidate, state)
  return search.done, search.done & (first == 1.0) & (search.j == 1), new


# ----------------------------------------------------------------------------- stage 2


def _count(state: NewtonState, new: NewtonState) -> NewtonState:
  """Bookkeeping after one iteration (a Newton step or a sweep)."""
  improved = new.error < 0.99 * state.best
  return new._replace(best=jnp.where(improved, new.error, state.best),
                      stall=jnp.where(improved, 0, state.stall + 1),
                      it=state.it + 1, stage2=state.stage2 + 1)


def newton_step(problem: _dual.Problem, geom_t, sizes: H.Sparsity, cg_maxiter: int,
                differentiable: bool, state: NewtonState) -> NewtonState:
  """One sparse Newton step with line search; schedules Sinkhorn sweeps if it stalls."""
  row, col = marginal_pair(problem, state)
  target_a, target_b = _dual.marginal_targets(problem, state.f, state.g)
  grad = (target_a - row, target_b - col)
  entries = H.select_entries(problem, (state.f - state.f_sel) / problem.epsilon, state.g,
                             state.cand_log, state.cand_idx, sizes.kept)
  direction = H.newton_direction(problem, state.f, state.g, row, col, grad, entries, state.error,
                                 state.damping, cg_maxiter)
  accepted, full, new = line_search(problem, geom_t, state, grad, direction, sizes.candidates,
                                    differentiable)
  damping = jnp.where(full, state.damping / DAMPING_FACTOR,
                      jnp.maximum(state.damping * DAMPING_FACTOR, MIN_DAMPING))
  new = new._replace(damping=damping.astype(state.damping.dtype))
  stalled = ~accepted | (new.error > PROGRESS * state.error)
  sweeps = FALLBACK_SWEEPS * 2 ** jnp.minimum(state.stalls, MAX_DOUBLINGS)
  new = new._replace(fallback=jnp.where(stalled, sweeps, 0).astype(state.fallback.dtype),
                     stalls=jnp.where(stalled, state.stalls + 1, 0).astype(state.stalls.dtype))
  return _count(state, new)


def sinkhorn_sweep(problem: _dual.Problem, geom_t, state: NewtonState) -> NewtonState:
  """One log-domain Sinkhorn sweep, over-relaxed by the ``ω`` stage 1 chose (the update of
  :func:`._sinkhorn.sinkhorn_step`).

  With ``ω = 1`` a sweep maximises ``D`` in ``f``, then in ``g``, so it never decreases ``D``;
  an over-relaxed sweep that would decrease it is discarded, and the later ones use ``ω = 1``.
  """
  eps, omega = problem.epsilon, state.omega
  f = S.relaxed_update(state.f, state.lf, omega, eps, _dual.inv_rho(eps, problem.tau_a))
  lg, _, _ = H.column_pass(problem, geom_t, f, None)
  g = S.relaxed_update(state.g, lg, omega, eps, _dual.inv_rho(eps, problem.tau_b))
  lf = row_pass(problem, g)
  finite = _finite(f, g, lf, lg)
  ok = finite & (dual_increase(problem, state, f, g, lg) >= -rounding_level(problem, state))
  new = state._replace(f=f, g=g, lf=lf, lg=lg, error=error_of(problem, f, g, lf, lg),
                       fallback=state.fallback - 1)
  old = state._replace(failed=state.failed | ~finite, fallback=state.fallback - 1,
                       omega=jnp.ones_like(omega))
  return _count(state, jax.tree.map(lambda x, y: jnp.where(ok, x, y), new, old))


def start_stage2(problem: _dual.Problem, geom_t, candidates: int, f: Array, g: Array, it: Array,
                 failed: Array, omega: Array) -> NewtonState:
  """The stage-2 state at the warm start ``(f, g)`` (a column and a row pass); ``omega`` is the
  over-relaxation of the fall-back sweeps."""
  lg, cand_log, cand_idx = H.column_pass(problem, geom_t, f, candidates)
  lf = row_pass(problem, g)
  error = error_of(problem, f, g, lf, lg)
  zero = jnp.asarray(0, jnp.int32)
  return NewtonState(f, g, lf, lg, cand_log, cand_idx, f_sel=f, damping=jnp.zeros_like(error),
                     omega=omega.astype(error.dtype), error=error, best=error, stall=zero,
                     fallback=zero, stalls=zero, it=it, stage2=zero,
                     failed=failed | ~_finite(lf, lg, error))


def run_newton(problem: _dual.Problem, state: NewtonState, tol: Array, *, sizes: H.Sparsity,
               max_newton_iters: int, cg_maxiter: int, differentiable: bool) -> NewtonState:
  """Stage 2: Newton steps (or fall-back sweeps) until ``tol``, the cap, a stall or a failure."""
  geom_t = problem.geom.transpose()
  newton = functools.partial(newton_step, problem, geom_t, sizes, cg_maxiter, differentiable)
  sweep = functools.partial(sinkhorn_sweep, problem, geom_t)

  def body(s):
    return jax.lax.cond(s.fallback > 0, sweep, newton, s)

  def cond(s):
    return (s.error > tol) & (s.stage2 < max_newton_iters) & ~s.failed & (s.stall < PATIENCE)

  return S.bounded_loop(cond, body, state, max_newton_iters, differentiable)


# ----------------------------------------------------------------------------- the solve


@jax.jit
def solve_newton(problem: _dual.Problem, init, solver) -> SinkhornOutput:
  """The jitted solve of a validated problem by a :class:`otkit.SinkhornNewton` solver object."""
  dtype = problem.a.dtype
  differentiable = solver.grad_mode == "unroll"
  anneal = S.effective_anneal(solver.anneal, init)
  init = S.zero_init(problem) if init is None else init
  n, m = problem.geom.shape
  sizes = H.sparsity(n, m, solver.density)
  controls = (init, solver.tol_for(dtype), jnp.asarray(solver.warmup_tol, dtype),
              jnp.asarray(solver.anneal_decay, dtype))

  def solve(problem, controls):
    init, tol, warmup_tol, decay = controls
    problem = problem._replace(geom=G.materialize(problem.geom))
    schedule = S.Schedule(problem.epsilon, S.anneal_start(problem, anneal), decay)
    warm = S.run_sinkhorn(problem, schedule, init, jnp.maximum(tol, warmup_tol),
                          max_iters=solver.warmup_iters, fixed_iters=None,
                          differentiable=differentiable)
    state = start_stage2(problem, problem.geom.transpose(), sizes.candidates, warm.f, warm.g,
                         warm.it, warm.failed, warm.omega)
    state = run_newton(problem, state, tol, sizes=sizes, max_newton_iters=solver.max_newton_iters,
                       cg_maxiter=solver.newton_cg_maxiter, differentiable=differentiable)
    f, g = _dual.fix_gauge(problem, state.f, state.g)
    converged = (state.error <= tol) & ~state.failed
    result = result_code(converged, state.failed, state.stall >= PATIENCE)
    return f, g, (result, state.it, state.error)

  return S.differentiated_output(solve, problem, controls, solver.grad_mode, solver.cg_maxiter)
