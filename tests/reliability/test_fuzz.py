"""Property-based tests: random valid problems, judged independently (``problems.py``).

Properties: every output is either right (converged, its plan's marginals within tol and its
value equal to its plan's primal value, recomputed in float64 NumPy), or a reported failure (a
result code that ``otkit.check`` raises on; NaN only with ``NON_FINITE``), or an eager refusal
naming the argument (a problem the dtype cannot hold); values are invariant under permutations of
the points and translations of both clouds; Sinkhorn divergences are symmetric, non-negative and
have finite gradients; 1-D values equal POT's exact ones.

The default run draws a modest number of examples over a few shapes (the compiled solves are
shared); ``-m slow`` runs the full ranges: shapes from 1 to 1000 points, dimensions to 16, all
four floating dtypes. ``benchmarks/reliability.py`` runs thousands more.
"""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otkit
import problems

SMALL = ((7, 5, 1),)
FAST = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def params(draw, sizes=SMALL, dtypes=("float32", "float64"), scales=(-20.0, 20.0),
           balanced=None):
  n, m, d = draw(st.sampled_from(sizes))
  tau = 1.0 if balanced else draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0)))
  if balanced is False:
    tau = draw(st.floats(0.05, 0.99))
  return problems.Params(
      n=n, m=m, d=d, dtype=draw(st.sampled_from(dtypes)), seed=draw(st.integers(0, 2**31 - 1)),
      scale_exp=draw(st.one_of(st.floats(*scales), st.floats(-3.0, 3.0))),
      eps_exp=draw(st.floats(-5.0, 3.0)), tau=tau, zeros=draw(st.integers(0, 2)),
      near_zero=draw(st.booleans()), duplicates=draw(st.integers(0, 2)))


def _outcome(p: problems.Params):
  problem = problems.make(p)
  try:
    out = problems.solve(problem)
  except ValueError as err:
    assert "`" in str(err), f"refused without naming the argument: {err}"
    return problem, None, "named"
  outcome, detail = problems.judge(problem, out, float(problems.SOLVER.tol_for(jnp.dtype(p.dtype))))
  assert outcome in ("right", "reported"), f"{p}: {detail}"
  return problem, out, outcome


@FAST
@given(params())
def test_solve_is_right_or_says_it_failed(p):
  _outcome(p)


@pytest.mark.slow
@LONG
@given(params(sizes=problems.SIZES, dtypes=problems.DTYPES))
def test_solve_is_right_or_says_it_failed_full_ranges(p):
  _outcome(p)


def _bound(problem, out) -> float:
  """How far ``out.value`` may be from the exact OT_ε of its problem (see ``problems.judge``)."""
  f, g = np.asarray(out.f, float), np.asarray(out.g, float)
  error, _, curvature = problems.recompute(problem, f, g)
  slack = problems.rounding(problem, f, g)
  ulp = float(jnp.finfo(jnp.dtype(problem.dtype)).eps)
  size = np.max(np.abs(f)) + np.max(np.abs(g)) + problem.epsilon
  return size * (error + slack) + curvature + 16 * ulp * (size + abs(float(out.value)))


@FAST
@given(params(scales=(-3.0, 3.0), balanced=True), st.integers(0, 2**31 - 1))
def test_value_is_invariant_under_permutation_and_translation(p, seed):
  problem, out, outcome = _outcome(p)
  if outcome != "right":
    return
  rng = np.random.default_rng(seed)
  perm_x, perm_y = rng.permutation(p.n), rng.permutation(p.m)
  shift = rng.normal(size=p.d) * np.abs(problem.x).max()
  for x, y, a, b in ((problem.x[perm_x], problem.y[perm_y], problem.a[perm_x], problem.b[perm_y]),
                     (problem.x + shift, problem.y + shift, problem.a, problem.b)):
    other = problems.Problem(x, y, a, b, problem.epsilon, problem.tau, problem.dtype)
    moved = problems.solve(other)
    if int(moved.result) != otkit.Result.CONVERGED:
      continue
    assert abs(float(moved.value) - float(out.value)) <= _bound(problem, out) + _bound(other, moved)


def _divergence_bound(div, x, y, a, b, epsilon, dtype) -> float:
  """How far a divergence may be from the exact one: the bounds of its three solves."""
  parts = (("xy", 1.0, (x, y, a, b)), ("xx", 0.5, (x, x, a, a)), ("yy", 0.5, (y, y, b, b)))
  return sum(w * _bound(problems.Problem(*arrays, epsilon, 1.0, dtype), getattr(div, k))
             for k, w, arrays in parts)


_divergence_and_grad = jax.jit(jax.value_and_grad(
    lambda x, y, a, b, eps: otkit.sinkhorn_divergence(x, y, a, b, epsilon=eps).value))


@pytest.mark.slow  # compiles a divergence and its gradient (tests/estimators checks both by default)
@settings(max_examples=4, deadline=None, derandomize=True, database=None)
@given(params(sizes=((5, 4, 2),), dtypes=("float32",), scales=(-2.0, 2.0), balanced=True))
def test_divergence_is_symmetric_nonnegative_with_a_finite_gradient(p):
  problem = problems.make(p)
  x, y, a, b, eps, _ = problems.cast(problem)
  try:
    forward = otkit.sinkhorn_divergence(x, y, a, b, epsilon=eps)
  except ValueError as err:
    assert "`" in str(err)
    return
  backward = otkit.sinkhorn_divergence(y, x, b, a, epsilon=eps)
  outs = (forward, backward)
  if any(int(o.result) != otkit.Result.CONVERGED for o in outs):
    for o in outs:
      if int(o.result) != otkit.Result.CONVERGED:
        with pytest.raises(RuntimeError):
          otkit.check(o)
    return
  args = (problem.epsilon, p.dtype)
  bound = (_divergence_bound(forward, problem.x, problem.y, problem.a, problem.b, *args)
           + _divergence_bound(backward, problem.y, problem.x, problem.b, problem.a, *args))
  assert abs(float(forward.value) - float(backward.value)) <= bound
  assert float(forward.value) >= -bound
  value, grad = _divergence_and_grad(x, y, a, b, eps)
  assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(st.sampled_from([(1, 1), (1, 6), (6, 4), (9, 9)]), st.sampled_from([1, 2]),
       st.integers(0, 2**31 - 1), st.floats(-3.0, 3.0))
def test_1d_ot_matches_pot_with_ties_and_zero_weights(sizes, p, seed, scale_exp):
  rng = np.random.default_rng(seed)
  n, m = sizes
  scale = 10.0 ** scale_exp
  u = np.round(rng.normal(size=n) * 2) / 2 * scale  # ties
  v = np.round(rng.normal(size=m) * 2) / 2 * scale
  a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, m)
  if n > 1:
    a[0] = 0.0
  a, b = a / a.sum(), b / b.sum()
  ours = float(otkit.wasserstein_1d(u, v, a, b, p=p))
  ref = float(ot.wasserstein_1d(u, v, a, b, p=p))
  size = (2 * max(np.abs(u).max(), np.abs(v).max(), 1e-300)) ** p
  tol = 64 * np.finfo(float).eps * (n + m) * size
  assert abs(ours - ref) <= tol
  if (n, m) != (6, 4):  # ot_1d at one shape: its compilations are shared by every example
    return
  # ot_1d: the same value, a plan with the right marginals, and potentials that certify it.
  out = otkit.ot_1d(u, v, a, b, p=p)
  plan, f, g = np.asarray(out.plan), np.asarray(out.f), np.asarray(out.g)
  assert abs(float(out.value) - ref) <= tol
  np.testing.assert_allclose(plan.sum(1), a, atol=1e-14)
  np.testing.assert_allclose(plan.sum(0), b, atol=1e-14)
  slack = np.abs(u[:, None] - v[None, :]) ** p - f[:, None] - g[None, :]
  assert slack.min() >= -tol and np.abs(slack[plan > 0]).max(initial=0.0) <= tol
  assert abs(a @ f + b @ g - ref) <= tol
