"""The host path's compiled solver (an ε-scaling auction, then shortest augmenting paths) against
SciPy's linear_sum_assignment: ties, clustered points, wide ranges and tiny sizes; its
point-cloud entry; and the host path without Numba (SciPy alone) giving the same answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.optimize import linear_sum_assignment

import otkit
from otkit.estimators import _minibatch
from otkit.solvers import _assignment, _auction

pytestmark = pytest.mark.skipif(not _auction.available(), reason="needs numba")


def _optimum(cost):
  rows, cols = linear_sum_assignment(cost)
  return cost[rows, cols].sum()


def _solve(cost, f=None, g=None):
  n = cost.shape[0]
  zero = np.zeros(n)
  perm = _auction.solve(cost, zero if f is None else f, zero if g is None else g)
  assert sorted(perm.tolist()) == list(range(n))
  return perm, cost[np.arange(n), perm].sum()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12).flatmap(
    lambda n: hnp.arrays(np.float64, (n, n), elements=st.integers(0, 3).map(float))))
def test_integer_costs_with_ties_are_solved_exactly(cost):
  assert _solve(cost)[1] == _optimum(cost)  # integer sums: exact in float64


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: hnp.arrays(
    np.float64, (n, n), elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False))))
def test_real_costs_match_scipy(cost):
  np.testing.assert_allclose(_solve(cost)[1], _optimum(cost), rtol=1e-12, atol=1e-9)


def _clusters(rng, n):
  """The 8 Gaussians (radius 5, variance 0.1) and a ring: a warm start that is roughly right."""
  angle = rng.integers(0, 8, n) * np.pi / 4
  x = 5 * np.stack([np.cos(angle), np.sin(angle)], 1) + np.sqrt(0.1) * rng.normal(size=(n, 2))
  theta = rng.uniform(0, 2 * np.pi, n)
  y = 3 * np.stack([np.cos(theta), np.sin(theta)], 1) + 0.2 * rng.normal(size=(n, 2))
  return x, y


@pytest.mark.parametrize("n", [2, 65, 300])
def test_clustered_points_constant_and_offset_costs(rng, n):
  x, y = _clusters(rng, n)
  cost = np.sum((x[:, None] - y[None]) ** 2, axis=-1)
  expected = _optimum(cost)
  np.testing.assert_allclose(_solve(cost)[1], expected, rtol=1e-12)
  # Reduced by potentials (any shifts keep the optimal permutations).
  f = rng.normal(size=n)
  perm, _ = _solve(cost, f, np.min(cost - f[:, None], axis=0))
  np.testing.assert_allclose(cost[np.arange(n), perm].sum(), expected, rtol=1e-12)
  # A large common offset: the auction's steps are relative to the spread, not the level.
  np.testing.assert_allclose(_solve(cost + 1e6)[1] - 1e6 * n, expected, rtol=1e-9)
  # No spread at all: the auction is skipped.
  assert _solve(np.full((n, n), 2.5))[1] == 2.5 * n


def test_point_entry_makes_the_costs_and_the_column_potentials(rng):
  x, y = _clusters(rng, 70)
  x, y = x.astype(np.float32), (y + 1).astype(np.float32)
  f = rng.normal(size=70)
  cost = np.sum((x[:, None].astype(np.float64) - y[None]) ** 2, axis=-1)
  perm, g = _auction.solve_points(x, y, f)
  np.testing.assert_allclose(cost[np.arange(70), perm].sum(), _optimum(cost), rtol=1e-12)
  np.testing.assert_allclose(g, np.min(cost - f[:, None], axis=0), rtol=1e-12, atol=1e-12)


def test_half_precision_is_widened(rng):
  import ml_dtypes

  cost = rng.normal(size=(9, 9)) ** 2
  for dtype in (np.float16, ml_dtypes.bfloat16):
    low = cost.astype(dtype)
    wide = low.astype(np.float64)
    perm, _ = _solve(low)
    np.testing.assert_allclose(wide[np.arange(9), perm].sum(), _optimum(wide), rtol=1e-12)
    perm, _ = _auction.solve_points(low[:, :2], low[:, 2:4], np.zeros(9))
    points = np.sum((low[:, None, :2].astype(np.float64) - low[None, :, 2:4]) ** 2, axis=-1)
    np.testing.assert_allclose(points[np.arange(9), perm].sum(), _optimum(points), rtol=1e-12)


def test_non_finite_entries_are_left_to_scipy():
  cost = np.ones((3, 3))
  for bad in (np.nan, np.inf, -np.inf):
    cost[1, 2] = bad
    assert _auction.solve(cost, np.zeros(3), np.zeros(3)) is None
  x = np.zeros((3, 2))
  x[0, 0] = np.nan
  assert _auction.solve_points(x, np.ones((3, 2)), np.zeros(3)) is None
  x[0, 0] = 1e200  # finite, but its squared distances overflow
  assert _auction.solve_points(x, np.ones((3, 2)), np.zeros(3)) is None
  assert _auction.solve(np.array([[1e308, -1e308], [0.0, 1.0]]), np.zeros(2), np.zeros(2)) is None


@jax.jit
def _host_paths(costs, xs, ys):
  matrices = jax.vmap(lambda c: otkit.assignment(c, method="host"))(costs)
  points = jax.vmap(lambda x, y: _assignment.solve_host_points(
      x, y, _minibatch.gaussian_potential(x, y)))(xs, ys)
  return matrices.perm, matrices.cost, points.perm, points.cost, points.result


def test_host_path_gives_the_same_answers_with_scipy_alone(rng, monkeypatch):
  costs = rng.normal(size=(4, 40, 40)) ** 2  # real costs: one optimum
  xs, ys = rng.normal(size=(2, 4, 40, 3))
  compiled = _host_paths(costs, xs, ys)
  monkeypatch.setattr(_auction, "available", lambda: False)
  alone = _host_paths(costs, xs, ys)  # the same program: the choice is made on the host
  for a, b in zip(compiled, alone):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for x, y, value in zip(xs, ys, np.asarray(compiled[3])):
    np.testing.assert_allclose(value, _optimum(np.sum((x[:, None] - y[None]) ** 2, -1)),
                               rtol=1e-12)
  assert np.all(np.asarray(compiled[4]) == otkit.Result.CONVERGED)
  # A point cloud with a NaN is reported, not raised.
  bad = jnp.asarray(xs).at[1, 0, 0].set(jnp.nan)
  codes = np.asarray(_host_paths(costs, bad, ys)[4]).tolist()
  ok, non_finite = int(otkit.Result.CONVERGED), int(otkit.Result.NON_FINITE)
  assert codes == [ok, non_finite, ok, ok]
