"""One entry point for entropic OT, :func:`solve`, and the convenience wrappers.

:func:`solve` validates a problem eagerly (shapes, finiteness, weights, ε, τ, the warm start)
and runs a solver object on it (:class:`otkit.Sinkhorn`, :class:`otkit.SinkhornNewton`).
Estimators that assemble several problems validate each once with :func:`make_problem` and run
them with :func:`solve_validated`. :func:`sinkhorn` and :func:`sinkhorn_newton` keep the
keyword form of the options.
"""

from __future__ import annotations

import jax

from otkit import _validation as V
from otkit.solvers import _dual
from otkit.solvers import _newton
from otkit.solvers import _sinkhorn
from otkit.solvers._output import SinkhornOutput
from otkit.solvers._solver import Sinkhorn, SinkhornNewton, check_solver

Array = jax.Array


def make_problem(geom, a, b, epsilon, tau_a=1.0, tau_b=1.0) -> _dual.Problem:
  """Validates the inputs eagerly and returns a :class:`_dual.Problem` of one floating dtype.

  Args:
    geom: a geometry of shape ``(n, m)``; a, b: weights ``(n,)``, ``(m,)`` or ``None``
      (uniform); epsilon: ``ε > 0``; tau_a, tau_b: in ``(0, 1]``.
  """
  if not hasattr(geom, "validate"):
    raise ValueError(f"`geom` must be an otkit geometry (otkit.PointCloud, otkit.CostMatrix, "
                     f"otkit.LabelledPointCloud); got {type(geom).__name__}.")
  geom = geom.validate()
  return _dual.Problem(geom, *check_marginals(a, b, epsilon, tau_a, tau_b, geom.shape, geom.dtype))


def check_marginals(a, b, epsilon, tau_a, tau_b, shape: tuple[int, int], dtype):
  """Validates the weights (``None``: uniform), ε and τ of a problem of ``shape`` in ``dtype``;
  hard marginals need equal masses. Returns ``(a, b, epsilon, tau_a, tau_b)``."""
  a = V.check_weights("a", a, shape[0], dtype)
  b = V.check_weights("b", b, shape[1], dtype)
  epsilon = V.check_positive("epsilon", epsilon, dtype)
  tau_a = V.check_tau("tau_a", tau_a, dtype)
  tau_b = V.check_tau("tau_b", tau_b, dtype)
  V.check_equal_mass(a, b, tau_a, tau_b)
  return a, b, epsilon, tau_a, tau_b


def check_init(init, n: int, m: int, dtype):
  """Validates a warm start ``(f (n,), g (m,))`` (or ``None``)."""
  if init is None:
    return None
  if not isinstance(init, (tuple, list)) or len(init) != 2:
    raise ValueError("`init` must be a pair (f, g) of potentials of shapes (n,) and (m,).")
  f0 = V.as_float_array("init[0]", init[0], dtype)
  g0 = V.as_float_array("init[1]", init[1], dtype)
  if f0.shape != (n,) or g0.shape != (m,):
    raise ValueError(f"`init` potentials must have shapes ({n},) and ({m},); got {f0.shape} "
                     f"and {g0.shape}.")
  V.check_finite("init[0]", f0)
  V.check_finite("init[1]", g0)
  return (f0, g0)


def solve_validated(problem: _dual.Problem, solver, init=None, *,
                    symmetric: bool = False) -> SinkhornOutput:
  """Runs ``solver`` on a problem from :func:`make_problem` (nothing is re-checked).

  ``symmetric=True`` declares ``b = a`` and ``C = Cᵀ`` (a self-problem ``OT_ε(μ, μ)``): the
  Sinkhorn solver then uses the averaged symmetric update (one reduction per sweep).
  """
  if isinstance(solver, SinkhornNewton):
    return _newton.solve_newton(problem, init, solver)
  return _sinkhorn.solve_problem(problem, init, solver, symmetric=symmetric)


def solve(geom, a=None, b=None, *, epsilon, tau_a=1.0, tau_b=1.0, solver=None,
          init=None) -> SinkhornOutput:
  """Solves entropic optimal transport with a solver object.

  Minimises ``⟨C, P⟩ + ε KL(P ‖ a⊗b) + ρ_a KL(P1 ‖ a) + ρ_b KL(Pᵀ1 ‖ b)`` over ``P ≥ 0``, where
  ``ρ = ε τ / (1 − τ)``: ``tau_a = tau_b = 1`` (default) is balanced OT with hard marginals.

  Args:
    geom: :class:`otkit.PointCloud` (online, O((n+m)·d) memory), :class:`otkit.CostMatrix` or
      :class:`otkit.LabelledPointCloud`, shape ``(n, m)``.
    a: source weights ``(n,)``, non-negative; default uniform ``1/n``.
    b: target weights ``(m,)``; default uniform ``1/m``. Balanced problems need ``Σa = Σb``.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced).
    tau_a, tau_b: marginal relaxations in ``(0, 1]`` (traced); ``1`` = hard marginal.
    solver: :class:`otkit.Sinkhorn` (default ``Sinkhorn()``) or :class:`otkit.SinkhornNewton`.
    init: optional warm start ``(f, g)``, shapes ``(n,)``, ``(m,)``.

  Returns:
    :class:`otkit.SinkhornOutput`: potentials ``f (n,)``, ``g (m,)``, ``value``, ``result``
    (a :class:`otkit.Result` code; ``converged == (result == Result.CONVERGED)``), ``n_iters``,
    ``error``. Balanced potentials are returned in the gauge ``⟨a, f⟩ = ⟨b, g⟩``.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (64, 2))
    >>> out = otkit.solve(otkit.PointCloud(x, x + 1.0), epsilon=0.05,
    ...                   solver=otkit.Sinkhorn(tol=1e-4, max_iters=5000))
    >>> bool(out.converged), out.f.shape
    (True, (64,))
  """
  solver = check_solver(solver)
  problem = make_problem(geom, a, b, epsilon, tau_a, tau_b)
  init = check_init(init, *problem.geom.shape, problem.a.dtype)
  return solve_validated(problem, solver, init)


def sinkhorn(geom, a=None, b=None, *, epsilon, tau_a=1.0, tau_b=1.0, tol=1e-3, max_iters=2000,
             anneal="auto", anneal_decay=0.5, init=None, fixed_iters=None, grad_mode="implicit",
             cg_maxiter=500) -> SinkhornOutput:
  """Solves entropic optimal transport in the log domain.

  Minimises ``⟨C, P⟩ + ε KL(P ‖ a⊗b) + ρ_a KL(P1 ‖ a) + ρ_b KL(Pᵀ1 ‖ b)`` over ``P ≥ 0``, where
  ``ρ = ε τ / (1 − τ)``: ``tau_a = tau_b = 1`` (default) is balanced OT with hard marginals.

  Args:
    geom: :class:`otkit.PointCloud` (online, O((n+m)·d) memory) or :class:`otkit.CostMatrix`,
      shape ``(n, m)``.
    a: source weights ``(n,)``, non-negative; default uniform ``1/n``.
    b: target weights ``(m,)``; default uniform ``1/m``. Balanced problems need ``Σa = Σb``.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced: ``grad``/``vmap`` work).
      Values down to ``1e-4 × mean cost`` stay finite in float32.
    tau_a, tau_b: marginal relaxations in ``(0, 1]`` (traced). ``1`` = hard marginal.
    tol: tolerance on the L1 violation of both marginal conditions (rows plus columns), checked
      every sweep at the target ε.
    max_iters: static cap on Sinkhorn sweeps (including annealing sweeps). The loop also ends,
      with ``result = STALLED``, at the precision floor of the dtype (float32 at small ε): 300
      sweeps at the target ε without a 1 % gain on the best error while the potentials move by
      no more than rounding. A long plateau on which the potentials still drift is not a floor.
    anneal: ``"auto"`` (default: on when ``epsilon ≤ 3e-3 × mean cost`` and no ``init`` is
      given, where it saves sweeps), ``True`` or ``False``. Annealing starts at ``ε_0 = max C``
      and multiplies ε by ``anneal_decay`` each sweep until it reaches ``epsilon``, then
      iterates at ``epsilon`` until ``tol`` is met.
    anneal_decay: the geometric factor of the annealing schedule, in ``(0, 1)``.
    init: optional warm start ``(f, g)``, shapes ``(n,)``, ``(m,)``.
    fixed_iters: static; if set, performs exactly this many sweeps with no early exit (a
      ``lax.scan``): predictable cost for large ``vmap`` batches. ``converged`` still reports ``tol``.
    grad_mode: ``"implicit"`` (default; implicit function theorem, a matrix-free CG solve at the
      optimum, memory independent of the iteration count), ``"unroll"`` (backpropagates through
      up to ``max_iters`` sweeps, memory grows with them; the mode for ``jax.hessian`` and other
      higher derivatives) or ``"envelope"`` (potentials treated as constants: exact first
      derivatives of ``value`` by Danskin's theorem, no solve). ``"implicit"`` is a reverse-mode
      rule (``jax.custom_vjp``): ``jax.grad``/``jax.vjp`` only; ``jax.jvp`` needs ``"unroll"``
      or ``"envelope"``.
    cg_maxiter: static cap on conjugate-gradient iterations in the implicit backward pass.

  The options after ``init`` are those of :class:`otkit.Sinkhorn`; this is
  ``otkit.solve(geom, a, b, epsilon=…, solver=otkit.Sinkhorn(tol=…, …), init=init)``.

  Returns:
    :class:`otkit.SinkhornOutput` with ``f (n,)``, ``g (m,)``, ``value``, ``result``,
    ``converged``, ``n_iters``, ``error``. Balanced potentials are returned in the gauge ``⟨a, f⟩ = ⟨b, g⟩``.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (64, 2))
    >>> y = jax.random.normal(jax.random.key(1), (48, 2)) + 1.0
    >>> out = otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=0.05)
    >>> bool(out.converged), out.f.shape
    (True, (64,))
  """
  solver = Sinkhorn(tol=tol, max_iters=max_iters, anneal=anneal, anneal_decay=anneal_decay,
                    fixed_iters=fixed_iters, grad_mode=grad_mode, cg_maxiter=cg_maxiter)
  return solve(geom, a, b, epsilon=epsilon, tau_a=tau_a, tau_b=tau_b, solver=solver, init=init)


def sinkhorn_newton(geom, a=None, b=None, *, epsilon, tau_a=1.0, tau_b=1.0, tol=None,
                    warmup_iters=1000, warmup_tol=0.05, density=10.0, max_newton_iters=500,
                    anneal="auto", anneal_decay=0.5, init=None, grad_mode="implicit",
                    newton_cg_maxiter=500, cg_maxiter=500) -> SinkhornOutput:
  """Solves entropic optimal transport to high accuracy by Sinkhorn–Newton–Sparse (SNS).

  The same problem as :func:`otkit.sinkhorn` (balanced or unbalanced), solved in two stages:
  log-domain Sinkhorn sweeps until the marginal error is below ``warmup_tol``, then Newton steps
  on the concave dual whose Hessian keeps only the largest entries of the plan (``density``
  times ``max(n, m)`` of them: the paper's ``λ = density / n``), each solved matrix-free by
  conjugate gradients and safeguarded by a line search that never decreases the dual
  objective. A Newton step that stalls hands over to Sinkhorn sweeps for a while.

  SNS targets small ε, where the plan is nearly sparse and Sinkhorn needs thousands of sweeps
  to reach a small error; there it reaches machine accuracy in tens of iterations. When the plan
  spreads each point's mass over more than about ``density`` partners the sparse Hessian is a
  poor model: raise ``density``, or use :func:`otkit.sinkhorn` (at large ε it is the faster one).

  Args:
    geom: :class:`otkit.PointCloud` (online) or :class:`otkit.CostMatrix`, shape ``(n, m)``.
    a: source weights ``(n,)``, non-negative; default uniform ``1/n``.
    b: target weights ``(m,)``; default uniform ``1/m``. Balanced problems need ``Σa = Σb``.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced). The paper's
      ``η`` is ``1/ε``.
    tau_a, tau_b: marginal relaxations in ``(0, 1]`` (traced); ``1`` = hard marginal.
    tol: tolerance on the L1 violation of both marginal conditions (rows plus columns). Default
      ``finfo(dtype).eps ** 0.6`` (4e-10 in float64, 7e-5 in float32). When rounding keeps the
      error above ``tol`` (float32 at small ε), the solver stops after 18 iterations without a
      1 % gain and says so: ``converged=False``, ``error`` the accuracy reached.
    warmup_iters: static cap on the Sinkhorn sweeps of stage 1 (the paper's ``N₁`` when
      ``warmup_tol=0``), ``≥ 0``.
    warmup_tol: stage 1 ends once the marginal error is at most ``max(tol, warmup_tol)``.
    density: static; the sparse Hessian keeps ``⌈density · max(n, m)⌉`` entries of the plan, the
      largest among the ``3 · density · max(n, m) / m`` largest of each column. The paper uses
      2 to 15; point clouds at small ε may need 20 or more.
    max_newton_iters: static cap on stage-2 iterations (Newton steps and fall-back sweeps).
    anneal: ε-annealing of the stage-1 sweeps, as in :func:`otkit.sinkhorn` (``"auto"``,
      ``True`` or ``False``).
    anneal_decay: the geometric factor of the annealing schedule, in ``(0, 1)``.
    init: optional warm start ``(f, g)``, shapes ``(n,)``, ``(m,)``.
    grad_mode: ``"implicit"`` (default: the implicit-function rule of :func:`otkit.sinkhorn`, one
      matrix-free CG solve at the optimum), ``"unroll"`` (backpropagates through every sweep,
      Newton step and line search; memory grows with them) or ``"envelope"`` (potentials
      treated as constants: exact first derivatives of ``value``).
    newton_cg_maxiter: static cap on conjugate-gradient iterations per Newton direction.
    cg_maxiter: static cap on conjugate-gradient iterations in the implicit backward pass.

  Returns:
    :class:`otkit.SinkhornOutput`, as from :func:`otkit.sinkhorn`: ``n_iters`` counts Sinkhorn
    sweeps plus Newton steps, ``error`` is the L1 marginal error at the returned potentials.

  References:
    Tang et al., "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024.

  Example:
    >>> import jax, otkit
    >>> C = jax.random.uniform(jax.random.key(0), (200, 200))
    >>> out = otkit.sinkhorn_newton(otkit.CostMatrix(C), epsilon=1e-3, tol=1e-4)
    >>> bool(out.converged), int(out.n_iters) < 60
    (True, True)
  """
  solver = SinkhornNewton(tol=tol, warmup_iters=warmup_iters, warmup_tol=warmup_tol,
                          density=density, max_newton_iters=max_newton_iters, anneal=anneal,
                          anneal_decay=anneal_decay, grad_mode=grad_mode,
                          newton_cg_maxiter=newton_cg_maxiter, cg_maxiter=cg_maxiter)
  return solve(geom, a, b, epsilon=epsilon, tau_a=tau_a, tau_b=tau_b, solver=solver, init=init)
