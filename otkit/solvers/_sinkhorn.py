"""Log-domain Sinkhorn: balanced and unbalanced, ε-annealing, warm starts, three grad modes.

References:
  Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013.
  Schmitzer, "Stabilized Sparse Scaling Algorithms for Entropy Regularized Transport
  Problems", SIAM J. Sci. Comput. 2019 (log-domain updates, ε-scaling).
  Chizat, Peyré, Schmitzer, Vialard, "Scaling Algorithms for Unbalanced Optimal Transport
  Problems", Math. Comp. 2018 (the τ-scaled updates).
  Feydy, "Geometric data analysis, beyond convolutions", PhD thesis, 2020 (annealing schedule).
  Thibault, Chizat, Dossal, Papadakis, "Overrelaxed Sinkhorn–Knopp Algorithm for Regularized
  Optimal Transport", Algorithms 2021; Lehmann, von Renesse, Sambale, Uschmajew, "A note on
  overrelaxation in the Sinkhorn algorithm", Optim. Lett. 2022 (the rate-based choice of ω).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from otkit import _batching
from otkit.geometry import _geometry as G
from otkit.geometry import _reductions as R
from otkit.solvers import _dual
from otkit.solvers import _implicit
from otkit.solvers._output import Result, SinkhornOutput, result_code

Array = jax.Array


# Over-relaxation: after RATE_WINDOW plain sweeps at the target ε the linear rate λ of plain
# Sinkhorn is read off the marginal error, and later sweeps use ω = 2 / (1 + √(1 − λ)), the
# optimum of successive over-relaxation for that rate, capped at OMEGA_MAX.
RATE_WINDOW = 8
OMEGA_MAX = 1.9
# anneal="auto" anneals when ε ≤ ANNEAL_BELOW × the mean cost.
ANNEAL_BELOW = 3e-3
# The loop also stops at the floor of the floating-point precision (float32 at small ε): when,
# for STALL_SWEEPS sweeps, the error has not improved by 1 % and the potentials have not moved
# beyond rounding (a spread of their change since `f_still`, the potential at the last
# improvement or the last move, of at most STALL_MOVE × the dtype's resolution × their size). A
# long plateau on which the potentials still drift (mass shifting between nearly separate blocks)
# is no floor. On the floor the potentials random-walk by rounding: over STALL_SWEEPS sweeps their
# spread reaches 16–32 resolutions under some compilers' summation orders, hence the margin of
# STALL_MOVE. `f_still` follows the potentials when they move: measured from the potential at
# the best error, a floor whose best error was a lucky rounding met while the potentials were
# still converging would never count as still.
STALL_SWEEPS = 300
STALL_MOVE = 64.0


class SinkhornState(NamedTuple):
  """Loop state. ``lf = lse_rows(geom, log b + g/ε_k)`` is the next f-update's reduction.

  ``at_target`` counts sweeps done at the target ε, ``anchor`` is the error after the first of
  them and ``omega`` the relaxation factor in use; ``best`` is the smallest error at the target
  ε, ``f_still`` the potential at the last improvement or move, and ``stall`` the number of
  sweeps since, if the potentials have not moved beyond rounding from it (see ``STALL_SWEEPS``).
  """

  f: Array
  g: Array
  lf: Array
  error: Array
  it: Array
  failed: Array
  at_target: Array
  anchor: Array
  omega: Array
  best: Array
  f_still: Array
  stall: Array


class Schedule(NamedTuple):
  """ε-annealing ``ε_k = max(ε, ε_start · decay^k)``; ``ε_start = ε`` disables it."""

  epsilon: Array
  start: Array
  decay: Array

  def __call__(self, k: Array) -> Array:
    return jnp.maximum(self.epsilon, self.start * self.decay ** k)

  def at_target(self, k: Array) -> Array:
    return self(k) <= self.epsilon


def marginal_error(w: Array, tau: Array, target_epsilon: Array, f: Array, lse: Array,
                   epsilon: Array) -> Array:
  """L1 error of one marginal condition ``P1 = w e^{−f/ρ}`` (``= w`` when balanced).

  ``lse`` is the reduction ``log Σ_j exp((g_j − C_ij)/ε) b_j`` of the other potential at
  ``epsilon``, so that the plan's marginal is ``w e^{f/ε + lse}``.
  """
  log_w = _dual.safe_log(w)
  s = _dual.inv_rho(target_epsilon, tau)
  return jnp.sum(jnp.abs(jnp.exp(log_w + f / epsilon + lse) - jnp.exp(log_w - f * s)))


def row_error(problem: _dual.Problem, f: Array, lf: Array, epsilon: Array) -> Array:
  return marginal_error(problem.a, problem.tau_a, problem.epsilon, f, lf, epsilon)


def column_error(problem: _dual.Problem, g: Array, lg: Array, epsilon: Array) -> Array:
  return marginal_error(problem.b, problem.tau_b, problem.epsilon, g, lg, epsilon)


def _half_step(geom, log_w: Array, potential: Array, epsilon: Array) -> Array:
  return R.lse_rows(geom, log_w + potential / epsilon, epsilon)


def relaxation(state: SinkhornState, error: Array, at_target: Array) -> tuple[Array, Array]:
  """The next ``(anchor, omega)`` from the error of the sweep just done (see ``RATE_WINDOW``)."""
  anchor = jnp.where(at_target == 1, error, state.anchor)
  rate = (error / anchor) ** (1.0 / RATE_WINDOW)
  omega_opt = jnp.minimum(2.0 / (1.0 + jnp.sqrt(jnp.maximum(1.0 - rate, 0.0))), OMEGA_MAX)
  estimate = (at_target == RATE_WINDOW + 1) & (rate < 1.0)
  omega = jnp.where(estimate, omega_opt, state.omega)
  return anchor, jax.lax.stop_gradient(omega)


def progress(state: SinkhornState, f: Array, g: Array, error: Array,
             at_target: Array) -> tuple[Array, Array, Array]:
  """The next ``(best, f_still, stall)`` (see ``STALL_SWEEPS``): a sweep stalls when it neither
  improves the best error by 1 % nor leaves the potentials moved by more than rounding from
  ``f_still`` (the spread of ``f − f_still``, which ignores a constant shift), the potential at
  the last improvement or move."""
  restart = at_target <= RATE_WINDOW + 1  # from the choice of ω on
  improved = (error < 0.99 * state.best) | restart
  best = jnp.where(improved, error, state.best)
  shift = f - state.f_still
  size = jnp.max(jnp.abs(f)) + jnp.max(jnp.abs(g))
  moved = jnp.max(shift) - jnp.min(shift) > STALL_MOVE * jnp.finfo(f.dtype).eps * size
  f_still = jnp.where(improved | moved, f, state.f_still)
  stall = jnp.where(improved | moved, 0, state.stall + 1)
  return best, f_still, stall


def _accept(new: SinkhornState, state: SinkhornState) -> SinkhornState:
  """``new`` if all its potentials are finite, else ``state`` flagged as failed."""
  ok = jnp.all(jnp.isfinite(new.f)) & jnp.all(jnp.isfinite(new.g)) & jnp.all(jnp.isfinite(new.lf))
  old = state._replace(failed=jnp.asarray(True))
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def relaxed_update(potential: Array, lse: Array, omega: Array, epsilon: Array, s: Array) -> Array:
  """``(1 − ω) f + ω T(f)`` with the log-domain update ``T = −ε / (1 + ε s) · lse`` of a marginal
  whose relaxation is ``s = 1/ρ`` (0 when balanced); ``ω = 1`` is the plain update."""
  return (1.0 - omega) * potential - omega * epsilon / (1.0 + epsilon * s) * lse


def sinkhorn_step(problem: _dual.Problem, geom_t, schedule: Schedule,
                  state: SinkhornState) -> SinkhornState:
  """One over-relaxed sweep (f-update, g-update) and the error of the new pair, 2 row reductions.

  With ``ω = 1`` this is the plain log-domain Sinkhorn sweep; ``ω > 1`` moves each potential
  ``ω`` times as far, ``f ← (1 − ω) f + ω T_a(g)``, which keeps the fixed points. The error is
  the L1 violation of both marginal conditions; the column one comes free with the g-update.
  """
  eps, eps_next = schedule(state.it), schedule(state.it + 1)
  s_a = _dual.inv_rho(problem.epsilon, problem.tau_a)
  s_b = _dual.inv_rho(problem.epsilon, problem.tau_b)
  omega = state.omega
  f = relaxed_update(state.f, state.lf, omega, eps, s_a)
  lg = _half_step(geom_t, _dual.safe_log(problem.a), f, eps)
  g = relaxed_update(state.g, lg, omega, eps, s_b)
  lf = _half_step(problem.geom, _dual.safe_log(problem.b), g, eps_next)
  error = row_error(problem, f, lf, eps_next) + column_error(problem, g, lg, eps)
  at_target = state.at_target + schedule.at_target(state.it).astype(state.at_target.dtype)
  anchor, omega = relaxation(state, error, at_target)
  best, f_still, stall = progress(state, f, g, error, at_target)
  new = SinkhornState(f, g, lf, error, state.it + 1, state.failed, at_target, anchor, omega,
                      best, f_still, stall)
  return _accept(new, state)


def symmetric_step(problem: _dual.Problem, schedule: Schedule, state: SinkhornState) -> SinkhornState:
  """One averaged update ``f ← ½ (f + T(f))`` of a symmetric problem (``b = a``, ``C = Cᵀ``,
  ``τ_b = τ_a``).

  The potentials of OT(a, a) are equal, ``g = f``; averaging avoids the oscillation of the plain
  fixed-point iteration. One row reduction per sweep.
  """
  eps, eps_next = schedule(state.it), schedule(state.it + 1)
  f = relaxed_update(state.f, state.lf, 0.5, eps, _dual.inv_rho(problem.epsilon, problem.tau_a))
  lf = _half_step(problem.geom, _dual.safe_log(problem.a), f, eps_next)
  error = 2.0 * row_error(problem, f, lf, eps_next)  # the column error is the same
  return _accept(state._replace(f=f, g=f, lf=lf, error=error, it=state.it + 1), state)


def stalled(state: SinkhornState) -> Array:
  """Whether the error at the target ε has stopped improving (see ``STALL_SWEEPS``)."""
  return state.stall >= STALL_SWEEPS


def swept_at_target(schedule: Schedule, state: SinkhornState) -> Array:
  """Whether the last sweep ran at the target ε, so that both marginal errors in
  ``state.error`` are those of the target problem (the sweep that ends an annealing schedule
  updates ``g`` at the previous ε: its column error is not the target's)."""
  return schedule.at_target(state.it - 1)


def _done(schedule: Schedule, tol: Array, max_iters: int, state: SinkhornState) -> Array:
  converged = swept_at_target(schedule, state) & (state.error <= tol)
  return converged | (state.it >= max_iters) | state.failed | stalled(state)


def initial_state(problem: _dual.Problem, schedule: Schedule, f0: Array, g0: Array,
                  symmetric: bool = False, check: bool = True) -> SinkhornState:
  """The state before the first sweep; a symmetric problem (``g0 = f0``) needs one reduction.

  ``check=False`` skips the error of ``(f0, g0)`` (one reduction): the error is ``inf`` and at
  least one sweep runs, for warm starts known not to be converged.
  """
  eps0 = schedule(jnp.asarray(0))
  lf = _half_step(problem.geom, _dual.safe_log(problem.b), g0, eps0)
  if not check:
    error = jnp.asarray(jnp.inf, lf.dtype)
  elif symmetric:
    error = 2.0 * row_error(problem, f0, lf, eps0)
  else:
    lg = _half_step(problem.geom.transpose(), _dual.safe_log(problem.a), f0, eps0)
    error = row_error(problem, f0, lf, eps0) + column_error(problem, g0, lg, eps0)
  zero = jnp.asarray(0, jnp.int32)
  return SinkhornState(f0, g0, lf, error, zero, jnp.asarray(False), zero, error,
                       jnp.ones((), error.dtype), error, f0, zero)


def run_sinkhorn(problem: _dual.Problem, schedule: Schedule, init: tuple[Array, Array], tol: Array,
                 *, max_iters: int, fixed_iters: int | None, differentiable: bool,
                 symmetric: bool = False, check_init: bool = True) -> SinkhornState:
  """Iterates to the tolerance (``while_loop``), or a static number of sweeps (``scan``).

  ``differentiable=True`` uses a ``scan`` of ``max_iters`` steps that freezes after convergence,
  so reverse-mode differentiation can unroll it. ``symmetric=True`` runs :func:`symmetric_step`.
  """
  if symmetric:
    step = functools.partial(symmetric_step, problem, schedule)
  else:
    geom_t = problem.geom.transpose()  # once, outside the loop
    step = functools.partial(sinkhorn_step, problem, geom_t, schedule)
  done = functools.partial(_done, schedule, tol, max_iters)
  state = initial_state(problem, schedule, *init, symmetric=symmetric, check=check_init)
  if fixed_iters is not None:
    return jax.lax.scan(lambda s, _: (step(s), None), state, None, length=fixed_iters)[0]
  return bounded_loop(lambda s: ~done(s), step, state, max_iters, differentiable)


def bounded_loop(cond, body, init, max_steps: int, differentiable: bool):
  """``while cond(s): s = body(s)``; ``cond`` must itself stop within ``max_steps``.

  ``differentiable=True`` runs a ``lax.scan`` of ``max_steps`` steps that freezes once ``cond``
  fails, so that reverse-mode differentiation can unroll it.
  """
  if differentiable:
    step = lambda s, _: (jax.lax.cond(cond(s), body, lambda t: t, s), None)
    return jax.lax.scan(step, init, None, length=max_steps)[0]
  return jax.lax.while_loop(cond, body, init)


def anneal_start(problem: _dual.Problem, anneal: bool | str) -> Array:
  """``ε_0``: the largest cost, or ``ε`` itself (no annealing). ``"auto"`` anneals only when
  ``ε ≤ ANNEAL_BELOW × mean cost``, where it saves sweeps; above, it costs a few."""
  eps = problem.epsilon
  if anneal is False:
    return eps
  start = jnp.maximum(R.max_cost(problem.geom), eps)
  if anneal == "auto":
    start = jnp.where(eps <= ANNEAL_BELOW * R.mean_cost(problem.geom, problem.a, problem.b),
                      start, eps)
  return jax.lax.stop_gradient(start)


def zero_init(problem: _dual.Problem) -> tuple[Array, Array]:
  dtype = problem.a.dtype
  return jnp.zeros(problem.geom.shape[0], dtype), jnp.zeros(problem.geom.shape[1], dtype)


def effective_anneal(anneal, init) -> bool | str:
  """A warm start is not annealed unless ``anneal=True``."""
  return anneal if init is None else (anneal is True)


@functools.partial(jax.jit, static_argnames=("symmetric",))
def solve_problem(problem: _dual.Problem, init, solver, *, symmetric=False) -> SinkhornOutput:
  """The jitted solve of a validated problem by a :class:`otkit.Sinkhorn` solver object.

  ``symmetric=True`` runs the averaged update of :func:`symmetric_step` (``b = a``, ``C = Cᵀ``).
  """
  anneal = effective_anneal(solver.anneal, init)
  solve = functools.partial(iterate, solver=solver, anneal=anneal, symmetric=symmetric)
  return differentiated_output(solve, problem, controls_of(problem, init, solver),
                               solver.grad_mode, solver.cg_maxiter)


def controls_of(problem: _dual.Problem, init, solver):
  """``(init, tol, anneal_decay)`` of a solve in the problem's dtype (zeros without ``init``)."""
  dtype = problem.a.dtype
  init = zero_init(problem) if init is None else init
  return (init, solver.tol_for(dtype), jnp.asarray(solver.anneal_decay, dtype))


def iterate(problem: _dual.Problem, controls, *, solver, anneal, symmetric=False,
            check_init=True):
  """The sweeps of a :class:`otkit.Sinkhorn` object from ``controls`` (:func:`controls_of`):
  gauge-fixed ``(f, g, (result, n_iters, error))``, without the value or derivative rules
  (``check_init``: see :func:`initial_state`)."""
  init, tol, decay = controls
  problem = problem._replace(geom=G.materialize(problem.geom))
  schedule = Schedule(problem.epsilon, anneal_start(problem, anneal), decay)
  state = run_sinkhorn(problem, schedule, init, tol, max_iters=solver.max_iters,
                       fixed_iters=solver.fixed_iters,
                       differentiable=solver.grad_mode == "unroll", symmetric=symmetric,
                       check_init=check_init)
  f, g = _dual.fix_gauge(problem, state.f, state.g)
  converged = swept_at_target(schedule, state) & (state.error <= tol) & ~state.failed
  result = result_code(converged, state.failed, stalled(state))
  return f, g, (result, state.it, state.error)


def differentiated_output(solve, problem: _dual.Problem, controls, grad_mode: str,
                          cg_maxiter: int) -> SinkhornOutput:
  """Runs ``solve(problem, controls) -> (f, g, (converged, n_iters, error))`` with the
  derivatives of ``grad_mode`` and assembles the :class:`SinkhornOutput` (shared by every
  solver of the dual problem). Under ``vmap`` on CPU, problems that fill the blocks alone are
  solved one after another (:func:`otkit._batching.one_at_a_time`), except with
  ``grad_mode="unroll"``, whose sweeps reverse-mode differentiation runs through."""
  if grad_mode == "unroll":  # differentiated through its sweeps
    f, g, aux = solve(problem, controls)
  else:
    if G.fills_blocks(problem.geom):  # under vmap, one problem after another
      alone = lambda p, c, solve=solve: solve(p._replace(geom=G.one_problem(p.geom)), c)
      solve = _batching.one_at_a_time(alone)
    if grad_mode == "implicit":
      f, g, aux = _implicit.implicit_solve(solve, problem, controls, cg_maxiter=cg_maxiter)
    else:  # envelope: the potentials carry no derivative
      f, g, aux = solve(*jax.lax.stop_gradient((problem, controls)))
  return assemble_output(problem, f, g, aux)


def assemble_output(problem: _dual.Problem, f: Array, g: Array, aux,
                    total_mass: Array | None = None) -> SinkhornOutput:
  """The :class:`SinkhornOutput` of potentials ``f``, ``g`` and ``aux = (result, n_iters,
  error)``: the value is the dual objective (``total_mass``, the plan's, saves its pass when
  known), and non-finite numbers make ``NON_FINITE``."""
  result, n_iters, error = jax.lax.stop_gradient(aux)
  value = _dual.dual_objective(problem, f, g, total_mass)
  # Never a number that looks like an answer: non-finite potentials, error or value (costs or ε
  # at the edge of the dtype's range, a run stopped early in an annealing schedule whose value
  # at the target ε overflows) are NON_FINITE, whatever the stopping rule said.
  finite = (jnp.isfinite(error) & jnp.all(jnp.isfinite(f)) & jnp.all(jnp.isfinite(g))
            & jnp.isfinite(value))
  result = jnp.where(jax.lax.stop_gradient(finite), result, Result.NON_FINITE).astype(result.dtype)
  return SinkhornOutput(f=f, g=g, value=value, result=result, n_iters=n_iters, error=error,
                        a=problem.a, b=problem.b, epsilon=problem.epsilon, tau_a=problem.tau_a,
                        tau_b=problem.tau_b, fingerprint=G.fingerprint(problem.geom))


