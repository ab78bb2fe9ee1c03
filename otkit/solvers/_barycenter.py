"""Fixed-support entropic Wasserstein barycenters by iterative Bregman projections.

Given ``k`` measures ``b_1 … b_k`` (histograms on the columns of a geometry) and weights
``λ_k ≥ 0`` summing to 1, the barycenter is the histogram ``a`` on the rows that minimises
``Σ_k λ_k OT_ε(a, b_k)``, with ``OT_ε`` the balanced regularised value of :func:`otkit.solve`
(``⟨C, P⟩ + ε KL(P ‖ a⊗b)``). Iterative Bregman projections (Benamou et al. 2015) alternate,
for all ``k`` problems at once (one ``vmap``), between the projection on each ``b_k`` marginal
and the projection on a common first marginal, which is the weighted geometric mean of the
current first marginals. In the log domain, with scalings ``P_k = exp((F_k ⊕ G_k − C) / ε)``:

* ``G_k = ε log b_k − ε LSE_i((F_k,i − C_ij) / ε)`` (the column marginals are ``b_k``);
* ``ℓ_k = LSE_j((G_k,j − C_ij) / ε)`` and ``log a = Σ_k λ_k ℓ_k`` (``+ c`` for the debiased
  barycenter);
* ``F_k ← ε (log a − ℓ_k)`` (the row marginals become ``a``), so that ``Σ_k λ_k F_k = ε c``:
  the first-order condition of the barycenter (the weighted potentials sum to zero).

The debiased barycenter (Janati et al. 2020) removes the entropic blur: it minimises
``Σ_k λ_k S_ε(a, b_k)`` with the Sinkhorn divergence ``S_ε``, by a correction ``c`` with
``e^c ⊙ K e^c = a`` (``K = e^{−C/ε}`` on the barycenter's support), which needs a square,
symmetric geometry (the support with itself); ``c`` takes ``DEBIAS_STEPS`` averaged symmetric
steps per sweep.

Small ε are reached along the ε-annealing schedule of :func:`otkit.solve` (the solver object's
``anneal`` and ``anneal_decay``), which the sweeps follow from the largest cost down to ε.
Each sweep is two row reductions per measure through :mod:`otkit.geometry._reductions`, so a
point-cloud support is never stored as an ``n × n`` matrix. In float64, when the measures share one
support and its kernel ``exp(−C/ε)`` fits the memory budget (:func:`otkit.set_memory_budget`), the
reductions of all ``k`` measures are instead two matrix products with the stored kernel
(:mod:`otkit.solvers._kernel`; about ten times faster on CPU at n = 1000), and a sweep whose
products underflow (small ε) is done in the log domain, as are the sweeps after it.

The sweep ``T`` maps the state ``(F, c)`` to the next one and contracts; derivatives are taken at
its fixed point by the implicit function theorem, solving the adjoint fixed-point equation
``w = w̄ + (∂T/∂state)ᵀ w`` by the same iteration (``jax.custom_vjp``, in the log domain).

References:
  Benamou, Carlier, Cuturi, Nenna, Peyré, "Iterative Bregman projections for regularized
  transportation problems", SIAM J. Sci. Comput. 2015.
  Janati, Cuturi, Gramfort, "Debiased Sinkhorn barycenters", ICML 2020.
  Peyré, Cuturi, "Computational Optimal Transport", 2019, §9.2.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.geometry import PointCloud
from otkit.geometry import _geometry as G
from otkit.geometry import _reductions as R
from otkit.solvers import _dual, _kernel, _sinkhorn
from otkit.solvers._dual import safe_log
from otkit.solvers._output import Result, result_code
from otkit.solvers._sinkhorn import Schedule
from otkit.solvers._solver import Sinkhorn, check_solver

Array = jax.Array
DEBIAS_STEPS = 10  # averaged symmetric steps of the debiasing potential per sweep (as POT)
# tol: the L1 error of the common marginal floors near 1e-5 in float32 at small ε.
DEFAULT_SOLVER = Sinkhorn(tol=1e-4, max_iters=10000, anneal=True)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BarycenterOutput:
  """Result of :func:`barycenter` (a pytree).

  Attributes:
    weights: ``(n,)`` the barycenter, a histogram on the geometry's rows (mass of the ``b_k``).
    value: ``Σ_k λ_k OT_ε(weights, b_k)`` (the regularised values, dual form).
    f: ``(k, n)`` potentials of the ``k`` problems on the barycenter's side, and
    g: ``(k, m)`` on the measures' side, in the convention of :func:`otkit.solve`
      (the plan of problem ``k`` is ``P_k = a_i b_kj exp((f_ki + g_kj − C_ij) / ε)``).
    error: the L1 violation ``Σ_k λ_k ‖P_k 1 − a‖₁`` of the common marginal (plus, debiased,
      that of the correction's equation) at the last sweep.
    n_iters: sweeps run.
    result: an :class:`otkit.Result` code; ``converged`` is ``result == CONVERGED``.
  """

  weights: Array
  value: Array
  f: Array
  g: Array
  error: Array
  n_iters: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


class Params(NamedTuple):
  """The differentiable inputs of one barycenter problem."""

  geom: object  # (n, m), shared, or stacked (k, n, m) when `stacked`
  b: Array  # (k, m)
  lambdas: Array  # (k,)
  epsilon: Array


class State(NamedTuple):
  F: Array  # (k, n) scalings on the barycenter's side
  c: Array  # (n,) debiasing correction (zeros when not debiased)


@dataclasses.dataclass(frozen=True)
class Config:
  """The static options of the iteration."""

  stacked: bool
  debiased: bool
  max_iters: int
  kernel: bool = False  # sweeps by matrix products with a stored kernel (see _kernel)


def _per_measure(config: Config, fn, geom, *arrays):
  """``fn(geom_k, *arrays_k)`` for every measure ``k``: one ``vmap`` on accelerators, one
  ``lax.map`` on CPU, where XLA runs a ``vmap`` of two chained online reductions an order of
  magnitude slower than the same reductions one measure at a time (k = 10, n = 1000: 150 ms
  against 12 ms per sweep)."""
  if jax.default_backend() != "cpu":
    return jax.vmap(fn, in_axes=(0 if config.stacked else None,) + (0,) * len(arrays))(geom, *arrays)
  if config.stacked:
    return jax.lax.map(lambda args: fn(*args), (geom, *arrays))
  return jax.lax.map(lambda args: fn(geom, *args), arrays)


def _column_scalings(geom, F: Array, b: Array, eps: Array) -> Array:
  """``G = ε log b − ε LSE_i((F_i − C_ij) / ε)``: the column marginal becomes ``b``."""
  return eps * (safe_log(b) - R.lse_rows(geom.transpose(), F / eps, eps))


def _marginals(config: Config, state: State, p: Params, eps: Array,
               kernel: _kernel.Kernel | None = None) -> tuple[Array, Array, Array]:
  """``ℓ_k = LSE_j((G_k,j − C_ij) / ε)`` ``(k, n)`` after the column projections (the row
  marginals are ``exp(F_k / ε + ℓ_k)``), ``log a = Σ_k λ_k ℓ_k + c`` ``(n,)``, and whether the
  values can be trusted (always, unless computed with a ``kernel`` at ``eps``)."""
  if kernel is not None:
    lse, trusted_cols = _kernel.lse_cols(kernel, state.F / eps, needed=p.b > 0)
    ell, trusted_rows = _kernel.lse_rows(kernel, safe_log(p.b) - lse)
    trusted = trusted_cols & trusted_rows
  else:
    def rows(geom, F, b):
      return R.lse_rows(geom, _column_scalings(geom, F, b, eps) / eps, eps)

    ell, trusted = _per_measure(config, rows, p.geom, state.F, p.b), jnp.asarray(True)
  return ell, jnp.sum(p.lambdas[:, None] * ell, axis=0) + state.c, trusted


def _self_lse(p: Params, c: Array, eps: Array, kernel) -> tuple[Array, Array]:
  """``LSE_j(c_j − C_ij / ε)`` on the support with itself, and whether it can be trusted."""
  if kernel is None:
    return R.lse_rows(p.geom, c, eps), jnp.asarray(True)
  out, trusted = _kernel.lse_rows(kernel, c[None, :])
  return out[0], trusted


def sweep(config: Config, state: State, p: Params, eps: Array,
          kernel: _kernel.Kernel | None = None) -> tuple[State, Array, Array]:
  """One projection sweep ``T`` at ``eps`` (``p.epsilon`` once any annealing is over); returns
  the new state, the error of ``state`` and whether the sweep can be trusted (see
  :mod:`otkit.solvers._kernel`; always in the log domain, without a ``kernel``)."""
  ell, log_a, trusted = _marginals(config, state, p, eps, kernel)
  F = eps * (log_a[None, :] - ell)
  rows = jnp.exp(state.F / eps + ell)
  error = jnp.sum(p.lambdas * jnp.sum(jnp.abs(rows - jnp.exp(log_a)[None, :]), axis=1))
  c = state.c
  if config.debiased:
    lse, ok = _self_lse(p, c, eps, kernel)
    error = error + jnp.sum(jnp.abs(jnp.exp(c + lse) - jnp.exp(log_a)))

    def debias_step(_, carry):  # c ← ½ (c + log a − LSE_j(c_j − C_ij / ε)): e^c ⊙ K e^c = a
      c, ok = carry
      lse, ok_step = _self_lse(p, c, eps, kernel)
      return 0.5 * (c + log_a - lse), ok & ok_step

    c, ok = jax.lax.fori_loop(0, DEBIAS_STEPS, debias_step, (c, ok))
    trusted = trusted & ok
  return State(F, c), error, trusted


def _iterate(config: Config, p: Params, controls, init: State):
  """Sweeps along the ε schedule until the error at the target ε is at most ``tol`` (or
  ``max_iters``, or a non-finite state). ``controls = (tol, ε_start, decay)``.

  With ``config.kernel`` the sweeps are matrix products with a stored kernel: one kernel per ε
  while annealing (built in the sweep: ``nm`` exponentials, against ``2knm`` for a sweep in the
  log domain), then one at the target ε for every remaining sweep. A sweep whose kernel products
  cannot be trusted (underflow at small ε) is done again in the log domain, and so are all the
  sweeps after it (ε only decreases, and the potentials only spread)."""
  tol, start, decay = controls
  schedule = Schedule(p.epsilon, start, decay)

  def body_with(kernel_at):
    def body(carry):
      state, _, it, _, use_kernel = carry
      eps = schedule(it)
      log_sweep = lambda: sweep(config, state, p, eps)[:2] + (jnp.asarray(False),)
      if kernel_at is None:
        new, error, use_kernel = log_sweep()
      else:
        def kernel_sweep():
          new, error, trusted = sweep(config, state, p, eps, kernel_at(eps))
          return jax.lax.cond(trusted, lambda: (new, error, trusted), log_sweep)
        new, error, use_kernel = jax.lax.cond(use_kernel, kernel_sweep, log_sweep)
      finite = jnp.isfinite(error) & jnp.all(jnp.isfinite(new.F)) & jnp.all(jnp.isfinite(new.c))
      state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
      return state, error, it + 1, ~finite, use_kernel
    return body

  def cond(carry):
    _, error, it, failed, _ = carry
    done = schedule.at_target(it - 1) & (error <= tol)
    return ~done & (it < config.max_iters) & ~failed

  inf = jnp.full((), jnp.inf, init.F.dtype)
  carry = (init, inf, jnp.zeros((), jnp.int32), jnp.asarray(False), jnp.asarray(config.kernel))
  if not config.kernel:
    return jax.lax.while_loop(cond, body_with(None), carry)[:4]
  annealing = lambda carry: cond(carry) & ~schedule.at_target(carry[2])
  carry = jax.lax.while_loop(annealing, body_with(lambda eps: _kernel.build(p.geom, eps)), carry)
  # Built after the annealing loop (not hoisted before it), so one kernel lives at a time.
  carry, geom = jax.lax.optimization_barrier((carry, p.geom))
  kernel = _kernel.build(geom, p.epsilon)
  return jax.lax.while_loop(cond, body_with(lambda eps: kernel), carry)[:4]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def fixed_point(config: Config, p: Params, controls, init: State):
  """The fixed point of :func:`sweep` with the loop's diagnostics ``(error, n_iters, failed)``."""
  return _iterate(config, p, controls, init)


def _fixed_point_fwd(config, p, controls, init):
  out = _iterate(config, p, controls, init)
  return out, (out[0], p, controls)


def _fixed_point_bwd(config, residuals, cotangents):
  """Adjoint of the fixed point: ``w = w̄ + (∂T/∂state)ᵀ w`` by the same contraction, then
  ``(∂T/∂p)ᵀ w``."""
  state, p, controls = residuals
  tol = controls[0]
  w_bar = cotangents[0]
  _, vjp = jax.vjp(lambda s, q: sweep(config, s, q, q.epsilon)[0], state, p)
  scale = sum(jnp.sum(jnp.abs(t)) for t in jax.tree.leaves(w_bar)) + 1.0

  def body(carry):
    w, _, it = carry
    new = jax.tree.map(jnp.add, w_bar, vjp(w)[0])
    change = sum(jnp.sum(jnp.abs(a - b)) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(w)))
    return new, change, it + 1

  def cond(carry):
    _, change, it = carry
    return (change > tol * scale) & (it < config.max_iters)

  w, _, _ = jax.lax.while_loop(cond, body, (w_bar, jnp.full((), jnp.inf, tol.dtype),
                                            jnp.zeros((), jnp.int32)))
  p_bar = vjp(w)[1]
  return p_bar, jax.tree.map(jnp.zeros_like, controls), jax.tree.map(jnp.zeros_like, state)


fixed_point.defvjp(_fixed_point_fwd, _fixed_point_bwd)


def _output(config: Config, p: Params, state: State, error: Array, n_iters: Array,
            failed: Array, converged: Array) -> BarycenterOutput:
  """The barycenter, the potentials in :func:`otkit.solve`'s convention and the value, from the
  fixed point (differentiable through ``state`` and ``p``)."""
  eps = p.epsilon

  def fields(kernel):
    """The barycenter's log-weights and the potentials (``g``: the c-transform of ``F``, finite
    where ``b_k = 0`` too), and whether they can be trusted."""
    _, log_a, trusted = _marginals(config, state, p, eps, kernel)
    if kernel is not None:
      lse, trusted_g = _kernel.lse_cols(kernel, state.F / eps)
      return log_a, state.F - eps * log_a, -eps * lse, trusted & trusted_g
    g = _per_measure(config, lambda geom, F: -eps * R.lse_rows(geom.transpose(), F / eps, eps),
                     p.geom, state.F)
    return log_a, state.F - eps * log_a, g, trusted

  if config.kernel:  # kernel values that are not trusted have finite, zero derivatives
    # Built again here rather than taken from the loop: the fixed point's custom derivative does
    # not carry the kernel's dependence on the support and ε, which these fields need.
    *kernel_fields, trusted = fields(_kernel.build(p.geom, eps))
    log_a, f, g = jax.lax.cond(trusted, lambda: tuple(kernel_fields), lambda: fields(None)[:3])
  else:
    log_a, f, g, _ = fields(None)
  weights = jnp.exp(log_a)
  mass_b = jnp.sum(p.b, axis=1)
  # The dual value of each problem; its plan's total mass is Σ b_k (exact column marginals).
  duals = (jnp.sum(weights[None, :] * f, axis=1) + jnp.sum(jnp.where(p.b > 0, p.b * g, 0.0), axis=1)
           - eps * (mass_b - jnp.sum(weights) * mass_b))
  value = jnp.sum(p.lambdas * duals)
  return BarycenterOutput(weights=weights, value=value, f=f, g=g, error=error, n_iters=n_iters,
                          result=result_code(converged, failed, jnp.asarray(False)))


def anneal_start(config: Config, p: Params, anneal) -> Array:
  """``ε_0`` of the schedule, as :func:`otkit.solve` picks it (the largest cost; with
  ``"auto"`` only when ``ε`` is small against the mean cost), on the first measure's geometry."""
  geom = jax.tree.map(lambda leaf: leaf[0], p.geom) if config.stacked else p.geom
  a = jnp.full((geom.shape[0],), 1.0 / geom.shape[0], p.b.dtype)
  problem = _dual.Problem(geom, a, p.b[0], p.epsilon, jnp.ones_like(p.epsilon),
                          jnp.ones_like(p.epsilon))
  return _sinkhorn.anneal_start(problem, anneal)


@functools.partial(jax.jit, static_argnames=("config",))
def solve_barycenter(p: Params, tol: Array, init: State, config: Config,
                     solver: Sinkhorn) -> BarycenterOutput:
  """The jitted barycenter of validated inputs, from the state ``init``."""
  controls = (tol, anneal_start(config, p, solver.anneal),
              jnp.asarray(solver.anneal_decay, p.b.dtype))
  state, error, n_iters, failed = fixed_point(config, p, controls, init)
  # Converged: the last sweep ran at the target ε (not mid-schedule) and met the tolerance.
  at_target = Schedule(p.epsilon, *controls[1:]).at_target(n_iters - 1)
  return _output(config, p, state, error, n_iters, failed,
                 at_target & (error <= tol) & ~failed)


# ---------------------------------------------------------------------------------------------
# Validation and the public function


def _check_geometry(geoms_or_support, cost_fn, chunk_size):
  """A validated geometry ``(n, m)``, or a stack of ``k`` geometries, and whether it is stacked."""
  if isinstance(geoms_or_support, (list, tuple)):
    if not geoms_or_support:
      raise ValueError("`geoms_or_support` is an empty sequence; give one geometry per measure.")
    geoms = [g.validate() if hasattr(g, "validate") else None for g in geoms_or_support]
    if any(g is None for g in geoms):
      raise ValueError("`geoms_or_support` as a sequence must hold otkit geometries (one per "
                       "measure, same shapes).")
    if len({(type(g), g.shape) for g in geoms}) != 1:
      raise ValueError("The geometries in `geoms_or_support` must share one type and shape "
                       f"(pad the measures with zero weights); got shapes {[g.shape for g in geoms]}.")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *geoms), True, geoms[0].shape
  if hasattr(geoms_or_support, "validate"):
    if cost_fn is not None or chunk_size is not None:
      raise ValueError("When `geoms_or_support` is a geometry it carries the cost and blocking: "
                       "leave `cost_fn` and `chunk_size` unset.")
    geom = geoms_or_support.validate()
    return geom, False, geom.shape
  x = V.check_points("geoms_or_support", geoms_or_support)
  geom = PointCloud(x, x, cost_fn, chunk_size).validate()
  return geom, False, geom.shape


def _check_measures(weights, k_geoms: int | None, m: int, dtype) -> Array:
  b = V.as_float_array("weights_list", weights, dtype)
  if b.ndim != 2 or b.shape[1] != m or b.shape[0] == 0:
    raise ValueError(f"`weights_list` must hold k >= 1 histograms on the geometry's {m} columns, "
                     f"shape (k, {m}); got shape {b.shape}.")
  if k_geoms is not None and b.shape[0] != k_geoms:
    raise ValueError(f"`weights_list` has {b.shape[0]} histograms for {k_geoms} geometries.")
  V.check_finite("weights_list", b)
  values = V.concrete_values(b)
  if values is not None:
    if np.any(values < 0):
      raise ValueError(f"`weights_list` has negative entries (min {values.min():.3g}); "
                       "weights must be >= 0.")
    masses = values.sum(axis=1)
    if np.any(masses <= 0):
      raise ValueError("`weights_list` has a histogram of zero total mass.")
    resolution = max(1e-10, float(jnp.finfo(b.dtype).eps) * m)
    if np.any(np.abs(masses - masses[0]) > resolution * masses.max()):
      raise ValueError(f"The histograms of `weights_list` have different total masses "
                       f"({masses.min():.6g} to {masses.max():.6g}); the balanced barycenter "
                       "needs equal masses. Normalise them.")
  return b


def _check_lambdas(lambdas, k: int, dtype) -> Array:
  if lambdas is None:
    return jnp.full((k,), 1.0 / k, dtype)
  lam = V.as_float_array("lambdas", lambdas, dtype)
  if lam.shape != (k,):
    raise ValueError(f"`lambdas` must hold one weight per measure, shape ({k},); got {lam.shape}.")
  V.check_finite("lambdas", lam)
  values = V.concrete_values(lam)
  if values is not None:
    if np.any(values < 0):
      raise ValueError(f"`lambdas` has negative entries (min {values.min():.3g}).")
    if abs(values.sum() - 1.0) > max(1e-6, float(jnp.finfo(lam.dtype).eps) * 8 * k):
      raise ValueError(f"`lambdas` must sum to 1; got {values.sum():.6g}.")
  return lam


def barycenter(geoms_or_support, weights_list, *, lambdas=None, epsilon, debiased=False,
               cost_fn=None, chunk_size=None, solver=None) -> BarycenterOutput:
  """Fixed-support entropic Wasserstein barycenter of ``k`` histograms (one ``vmap``).

  Minimises ``Σ_k λ_k OT_ε(a, b_k)`` over histograms ``a`` on a fixed support by iterative
  Bregman projections in the log domain (stable at small ε), all ``k`` problems in one
  ``vmap``; with ``debiased=True`` it minimises ``Σ_k λ_k S_ε(a, b_k)`` with the Sinkhorn
  divergence instead (sharp barycenters at moderate ε). Runs online for point supports (no
  ``n × n`` matrix), under ``jit``; differentiable in ``weights_list``, ``lambdas``, ``ε`` and
  the geometry by implicit differentiation at the fixed point. In float64 with one shared
  support whose ``n × m`` kernel fits twice in the memory budget, the sweeps are matrix products
  with the stored kernel (log-domain sweeps where it underflows): same result, several times
  faster.

  Args:
    geoms_or_support: the common support, points ``(n, d)`` (the geometry is then
      ``PointCloud(x, x, cost_fn, chunk_size)``); or a geometry ``(n, m)`` from the
      barycenter's support (rows) to the measures' common support (columns); or a list of
      ``k`` geometries of one type and shape (measure ``k`` on its own support; pad with zero
      weights). ``debiased`` needs the square, symmetric case (one support).
    weights_list: ``(k, m)`` histograms, non-negative (zeros allowed), of equal total mass.
    lambdas: ``(k,)`` non-negative weights summing to 1; default uniform.
    epsilon: entropic regularisation ``ε > 0`` in units of the cost (traced).
    debiased: static; the debiased barycenter of Janati et al. (2020).
    cost_fn, chunk_size: for a support of points, as in :class:`otkit.PointCloud`.
    solver: an :class:`otkit.Sinkhorn` object; its ``tol`` bounds the L1 error of the common
      marginal (see :class:`BarycenterOutput`), ``max_iters`` caps the sweeps, and ``anneal``,
      ``anneal_decay`` set the ε schedule as for :func:`otkit.solve` (``"auto"``: from the
      largest cost down to ε when ε is small against the mean cost); default
      ``Sinkhorn(tol=1e-4, max_iters=10000, anneal=True)`` (in float32 the error floors near
      1e-5 at small ε; ask for less in float64): annealing saves a third to a half of
      the sweeps even at moderate ε (``benchmarks/barycenter.py``). Derivatives are always
      implicit (its ``grad_mode`` and ``fixed_iters`` do not apply).

  Returns:
    :class:`BarycenterOutput` with ``weights (n,)``, ``value``, potentials ``f (k, n)``,
    ``g (k, m)``, ``error``, ``n_iters`` and ``result``.

  References:
    Benamou, Carlier, Cuturi, Nenna, Peyré, "Iterative Bregman projections for regularized
    transportation problems", SIAM J. Sci. Comput. 2015.
    Janati, Cuturi, Gramfort, "Debiased Sinkhorn barycenters", ICML 2020.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> grid = jnp.linspace(0.0, 1.0, 50)[:, None]
    >>> bump = lambda m: jnp.exp(-((grid[:, 0] - m) / 0.05) ** 2)
    >>> hists = jnp.stack([bump(0.2), bump(0.8)])
    >>> hists = hists / hists.sum(axis=1, keepdims=True)
    >>> out = otkit.barycenter(grid, hists, epsilon=1e-3)
    >>> bool(out.converged), round(float(jnp.sum(out.weights * grid[:, 0])), 3)
    (True, 0.5)
  """
  geom, stacked, (n, m) = _check_geometry(geoms_or_support, cost_fn, chunk_size)
  dtype = geom.dtype
  k_geoms = len(geoms_or_support) if stacked else None
  b = _check_measures(weights_list, k_geoms, m, dtype)
  lam = _check_lambdas(lambdas, b.shape[0], dtype)
  eps = V.check_positive("epsilon", epsilon, dtype)
  debiased = V.check_bool("debiased", debiased)
  if debiased and (stacked or n != m):
    raise ValueError("`debiased=True` needs one square geometry (the support with itself): the "
                     "correction solves OT between the barycenter and itself.")
  solver = DEFAULT_SOLVER if solver is None else check_solver(solver)
  if not isinstance(solver, Sinkhorn):
    raise ValueError("`solver` must be an otkit.Sinkhorn object: the barycenter iterates "
                     "Bregman projections (its tol and max_iters apply).")
  # One support shared by all measures, in float64 (whose range holds the kernel at the usual ε),
  # with room for the kernel: the sweeps are matrix products (see _iterate).
  # Not under vmap: there the loops' conditionals become selects, which would run both kinds of
  # sweep and build a kernel per problem.
  batched = G.batch_size(weights_list, epsilon, lambdas, *jax.tree.leaves(geom)) > 1
  kernel = (not stacked and not batched and dtype == jnp.float64
            and getattr(geom, "mesh", None) is None and _kernel.fits(geom))
  config = Config(stacked=stacked, debiased=debiased, max_iters=solver.max_iters, kernel=kernel)
  init = State(jnp.zeros((b.shape[0], n), dtype), jnp.zeros((n,), dtype))
  return solve_barycenter(Params(geom, b.astype(dtype), lam, eps), solver.tol_for(dtype), init,
                          config, solver)
