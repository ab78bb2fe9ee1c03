"""Random valid OT problems and an independent check of what the solver says about them.

A problem is drawn from a few numbers (:class:`Params`): sizes, dimension, dtype, the scale of the
points (1e-20 to 1e20), ε relative to the mean cost (1e-5 to 1e3), τ, zero and near-zero weights,
duplicated points. :func:`judge` recomputes the plan's marginals and the primal value in float64
NumPy from the returned potentials (not from otkit) and says whether the output is

* ``"right"``: converged, finite, its marginal error within tol and its value equal to the primal
  value of its plan (both up to the rounding of the dtype, stated in :func:`rounding`);
* ``"reported"``: not converged, and the result code says so (``otkit.check`` raises); non-finite
  numbers only with ``NON_FINITE``;
* ``"named"``: refused eagerly with an error naming the argument (a problem that the dtype cannot
  hold: points or ε that overflow or underflow when cast);
* ``"silent"``: anything else — a false "converged", a wrong value, NaN without a code.

Shared by ``tests/reliability/test_fuzz.py`` (strategies from hypothesis) and
``benchmarks/reliability.py`` (thousands of problems from NumPy's generator).
"""

from __future__ import annotations

import dataclasses
import jax.numpy as jnp
import numpy as np

import helpers
import otkit

DTYPES = ("float64", "float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Params:
  n: int
  m: int
  d: int
  dtype: str
  seed: int
  scale_exp: float  # points are scaled by 10**scale_exp
  eps_exp: float  # ε = 10**eps_exp × mean cost
  tau: float  # 1 = balanced
  zeros: int  # weights set to zero (never all of one measure)
  near_zero: bool  # one weight set to 1e-8 of the others
  duplicates: int  # points of x copied onto other points of x


@dataclasses.dataclass(frozen=True)
class Problem:
  x: np.ndarray
  y: np.ndarray
  a: np.ndarray
  b: np.ndarray
  epsilon: float
  tau: float
  dtype: str


def _weights(rng, size, zeros, near_zero):
  w = rng.uniform(0.2, 1.0, size)
  if size > 1:
    w[rng.choice(size, min(zeros, size - 1), replace=False)] = 0.0
  if near_zero and size > 1:
    w[int(np.argmax(w))] *= 1e-8
  return w / w.sum()


def make(p: Params) -> Problem:
  """The problem of ``p``, in float64 before the cast (so that its mass is exactly 1 there)."""
  rng = np.random.default_rng(p.seed)
  x = rng.normal(size=(p.n, p.d))
  y = rng.normal(size=(p.m, p.d)) * rng.uniform(0.5, 2.0) + rng.normal(size=p.d)
  if p.duplicates and p.n > 1:
    src = rng.integers(0, p.n, p.duplicates)
    x[rng.integers(0, p.n, p.duplicates)] = x[src]
  scale = 10.0 ** p.scale_exp
  x, y = x * scale, y * scale
  epsilon = 10.0 ** p.eps_exp * max(float(helpers.sq_cost(x, y).mean()), np.finfo(float).tiny)
  return Problem(x, y, _weights(rng, p.n, p.zeros, p.near_zero),
                 _weights(rng, p.m, p.zeros // 2, False), epsilon, p.tau, p.dtype)


def cast(problem: Problem):
  """``(x, y, a, b, epsilon, tau)`` as arrays of the problem's dtype."""
  dtype = jnp.dtype(problem.dtype)
  with np.errstate(over="ignore"):  # values beyond the dtype's range become inf (then refused)
    return tuple(jnp.asarray(v, dtype) for v in (problem.x, problem.y, problem.a, problem.b,
                                                problem.epsilon, problem.tau))


SOLVER = otkit.Sinkhorn(max_iters=5000)


def solve(problem: Problem, solver=SOLVER):
  """``otkit.solve`` on the cast problem (eager: inputs are checked, and the compiled solve is
  shared by all problems of one shape and dtype)."""
  x, y, a, b, epsilon, tau = cast(problem)
  return otkit.solve(otkit.PointCloud(x, y), a, b, epsilon=epsilon, tau_a=tau, tau_b=tau,
                     solver=solver)


def rounding(problem: Problem, f, g) -> float:
  """The L1 marginal error that rounding the potentials and the cost to the dtype alone can cause:
  each log-plan entry ``(f_i + g_j − C_ij)/ε`` (and each unbalanced target ``−f_i/ρ``) carries an
  absolute error ``δ`` of a few ulps of its terms, so the marginals (mass 1 each) may be off by
  ``e^δ − 1`` each; summing them in the dtype adds a few ulps."""
  ulp = float(jnp.finfo(jnp.dtype(problem.dtype)).eps)
  x, y = (np.asarray(v, float) for v in cast(problem)[:2])
  cost = helpers.sq_cost(x, y)
  # Squared distances are computed as ‖x‖² + ‖y‖² − 2⟨x, y⟩ about the mean of y: their rounding
  # scales with the squared norms of the centred points.
  centre = y.mean(0)
  norms = np.max(((x - centre) ** 2).sum(-1)) + np.max(((y - centre) ** 2).sum(-1))
  terms = np.max(np.abs(f)) + np.max(np.abs(g)) + np.max(cost) + norms
  eps = float(cast(problem)[4])
  s = 0.0 if problem.tau == 1.0 else (1.0 - problem.tau) / (eps * problem.tau)
  delta = 8.0 * ulp * terms * (1.0 / eps + s)
  # The marginals are also sums of mass 1 in the dtype (a few ulps each).
  return 2.0 * float(np.expm1(min(delta, 700.0))) + 8.0 * ulp


def recompute(problem: Problem, f, g):
  """``(marginal error, primal value, curvature)`` of the plan of the potentials ``f, g``, in
  float64. ``curvature`` bounds the second-order part of the duality gap of an unbalanced plan,
  ``ρ KL(P1‖a e^{−f/ρ}) + ρ KL(Pᵀ1‖b e^{−g/ρ})`` (0 when balanced)."""
  f, g = np.asarray(f, float), np.asarray(g, float)
  x, y, a, b, eps, tau = (np.asarray(v, float) for v in cast(problem))  # what was solved
  eps, tau = float(eps), float(tau)
  cost = helpers.sq_cost(x, y)
  with np.errstate(over="ignore", invalid="ignore"):
    log_plan = helpers.log_plan(cost, a, b, f, g, eps)
    plan = np.where((a[:, None] > 0) & (b[None] > 0), np.exp(log_plan), 0.0)
  rows, cols = plan.sum(1), plan.sum(0)
  s = 0.0 if tau == 1.0 else (1.0 - tau) / (eps * tau)
  with np.errstate(over="ignore"):
    targets = [np.where(w > 0, w * np.exp(-np.where(w > 0, h, 0.0) * s), 0.0) for w, h in ((a, f), (b, g))]
  error = np.abs(rows - targets[0]).sum() + np.abs(cols - targets[1]).sum()
  positive = plan > 0
  log_ratio = (f[:, None] + g[None] - cost) / eps  # log(P / (a ⊗ b))
  kl = np.sum(plan[positive] * (log_ratio[positive] - 1.0)) + np.sum(a) * np.sum(b)
  value, curvature = np.sum(cost * plan) + eps * kl, 0.0
  if tau < 1.0:
    rho = eps * tau / (1.0 - tau)
    for marginal, w, t in ((rows, a, targets[0]), (cols, b, targets[1])):
      value += rho * _kl(marginal, w)
      # (and the float64 rounding of ρ × KL, large when τ is within rounding of 1)
      curvature += rho * (_kl(marginal, t) + 64 * np.finfo(float).eps * (marginal.sum() + w.sum()))
  return float(error), float(value), float(curvature)


def _kl(p, q) -> float:
  """``Σ p log(p/q) − p + q`` (``0 log 0 = 0``)."""
  keep = p > 0
  with np.errstate(divide="ignore", over="ignore"):
    return float(np.sum(p[keep] * np.log(p[keep] / q[keep])) - p.sum() + q.sum())


def judge(problem: Problem, out, tol: float) -> tuple[str, str]:
  """See the module docstring."""
  result = int(out.result)
  numbers = [np.asarray(v, float) for v in (out.value, out.f, out.g, out.error)]
  finite = all(np.all(np.isfinite(v)) for v in numbers)
  if result != otkit.Result.CONVERGED:
    try:
      otkit.check(out)
    except RuntimeError:
      if finite or result == otkit.Result.NON_FINITE:
        return "reported", otkit.Result(result).name
    return "silent", f"result {result} with non-finite numbers or no error from otkit.check"
  if not finite:
    return "silent", "converged with a non-finite number"
  f, g = numbers[1], numbers[2]
  error, primal, curvature = recompute(problem, f, g)
  slack = rounding(problem, f, g)
  if not error <= tol + slack:
    return "silent", f"converged but the plan's marginal error is {error:.3g} (tol {tol:.3g})"
  # Duality: primal(P(f, g)) − D(f, g) = ⟨f, P1 − a'⟩ + ⟨g, Pᵀ1 − b'⟩ (a', b' the targets),
  # plus, unbalanced, the curvature term; there the plan is feasible, so D ≤ OT_ε ≤ primal.
  with np.errstate(over="ignore"):  # a slack of e^700 (the dtype cannot resolve the plan)
    gap = (np.max(np.abs(f)) + np.max(np.abs(g)) + problem.epsilon) * (error + slack)
  value = float(numbers[0])
  # The value itself is a sum of terms of size |f|, |g| and ε (times the mass) in the dtype.
  ulp = float(jnp.finfo(jnp.dtype(problem.dtype)).eps)
  terms = abs(primal) + abs(value) + np.max(np.abs(f)) + np.max(np.abs(g)) + problem.epsilon
  below, above = gap + curvature + 8 * ulp * terms, gap + 8 * ulp * terms
  if problem.tau < 1.0 and curvature > 0:
    above = 8 * ulp * terms + gap * slack / max(error + slack, 1e-300)  # weak duality
  if not -below <= value - primal <= above:
    return "silent", f"value {value:.6g} but the plan's primal value is {primal:.6g}"
  return "right", ""


# Shapes (n, m, d): 1 to 300 points, n = 1 against m = 1000, dimensions 1 to 16. A fixed set,
# so that the solves of one shape and dtype share a compilation.
SIZES = ((1, 1, 1), (1, 1000, 3), (1000, 1, 2), (2, 3, 1), (5, 4, 2), (7, 5, 1), (12, 9, 3),
         (30, 40, 16), (64, 64, 8), (100, 37, 5), (150, 300, 2), (300, 300, 16), (257, 1, 4),
         (3, 250, 10))


def draw(rng: np.random.Generator, sizes=SIZES, dtypes=DTYPES) -> Params:
  """A random :class:`Params` from NumPy's generator (the benchmark's distribution): scales
  10^U(−20, 20) or 10^U(−3, 3) with equal odds, ε = 10^U(−5, 3) × mean cost, τ = 1 or U(0.05, 1)
  with equal odds, up to two zero weights, a near-zero weight one time in five, up to two
  duplicated points."""
  n, m, d = sizes[rng.integers(0, len(sizes))]
  return Params(n=n, m=m, d=d, dtype=str(rng.choice(dtypes)), seed=int(rng.integers(0, 2**31)),
                scale_exp=float(rng.choice([rng.uniform(-20, 20), rng.uniform(-3, 3)])),
                eps_exp=float(rng.uniform(-5, 3)),
                tau=1.0 if rng.uniform() < 0.5 else float(rng.uniform(0.05, 1.0)),
                zeros=int(rng.integers(0, 3)), near_zero=bool(rng.uniform() < 0.2),
                duplicates=int(rng.integers(0, 3)))
