"""Exact assignment: scipy's linear_sum_assignment as the oracle (integer and real costs, n from 2
to 256), the optimality certificate, forbidden pairs, warm starts, jit/vmap/grad and bad input,
for both implementations (the in-graph search and SciPy on the host)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import helpers
import otkit
from otkit.solvers import _assignment

# 200 problems: (n, how many); half of each group has integer costs. Each size compiles anew:
# the default run keeps the smallest, two odd sizes and a large one; the others are slow.
SIZES = ((2, 30), pytest.param(3, 30, marks=pytest.mark.slow), (7, 30),
         pytest.param(16, 30, marks=pytest.mark.slow), (33, 30),
         pytest.param(64, 30, marks=pytest.mark.slow), (128, 12),
         pytest.param(256, 8, marks=pytest.mark.slow))

METHODS = ("jax", "host")
batched = {m: jax.jit(functools.partial(otkit.assignment, method=m)) for m in METHODS}
vmapped = {m: jax.jit(jax.vmap(functools.partial(otkit.assignment, method=m))) for m in METHODS}


def _problems(n, count, seed):
  rng = np.random.default_rng(seed)
  half = count // 2
  integer = rng.integers(0, 50, size=(half, n, n)).astype(np.float64)
  real = rng.normal(size=(count - half, n, n)) ** 2
  return integer, real


def _scipy_cost(c):
  rows, cols = linear_sum_assignment(c)
  return c[rows, cols].sum()


def _check_against_scipy(out, costs, rtol):
  for c, perm, value in zip(costs, np.asarray(out.perm), np.asarray(out.cost)):
    assert sorted(perm.tolist()) == list(range(c.shape[0]))
    expected = _scipy_cost(c)
    np.testing.assert_allclose(value, expected, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(c[np.arange(c.shape[0]), perm].sum(), value, rtol=rtol)
  assert np.all(np.asarray(out.converged))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n,count", SIZES)
def test_matches_scipy_under_jit_and_vmap(n, count, method):
  integer, real = _problems(n, count, seed=n)
  out = batched[method](jnp.asarray(integer))  # integer-valued: exact
  _check_against_scipy(out, integer, rtol=0.0)
  np.testing.assert_array_equal(np.asarray(out.gap), 0.0)
  out = vmapped[method](jnp.asarray(real))
  _check_against_scipy(out, real, rtol=1e-12)
  assert np.all(np.asarray(out.gap) <= 1e-12 * n * real.max())


@pytest.mark.parametrize("method", METHODS)
def test_integer_dtype_and_float32(rng, method):
  c = rng.integers(0, 1000, size=(20, 20))
  out = otkit.assignment(c, method=method)
  assert out.cost == _scipy_cost(c) and float(out.gap) == 0.0
  c32 = rng.random((6, 40, 40)).astype(np.float32)
  out = batched[method](c32)
  assert out.cost.dtype == jnp.float32 and out.f.dtype == jnp.float32
  # float32: the matching is optimal up to rounding of the potentials (certified by `gap`).
  for c, value, gap in zip(c32, np.asarray(out.cost), np.asarray(out.gap)):
    expected = _scipy_cost(c.astype(np.float64))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    assert gap <= 1e-4 * expected


@pytest.mark.parametrize("method", METHODS)
def test_certificate_potentials(rng, method):
  c = rng.normal(size=(20, 20))  # the shape of test_integer_dtype_and_float32: one compilation
  out = otkit.assignment(c, method=method)
  f, g = np.asarray(out.f), np.asarray(out.g)
  assert np.max(f[:, None] + g[None, :] - c) <= 1e-12
  np.testing.assert_allclose(f.sum() + g.sum(), out.cost, rtol=1e-12)
  perm = np.asarray(out.perm)
  np.testing.assert_allclose(f + g[perm], c[np.arange(20), perm], atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_forbidden_pairs_and_warm_start(rng, method):
  c = rng.random((4, 12, 12))
  c[rng.random(c.shape) < 0.4] = np.inf
  c[:, np.arange(12), np.roll(np.arange(12), 3)] = 2.0  # keep a feasible assignment
  out = otkit.assignment(c, method=method)
  for problem, value in zip(c, np.asarray(out.cost)):
    np.testing.assert_allclose(value, _scipy_cost(np.where(np.isinf(problem), 1e6, problem)),
                               rtol=1e-12)
  assert np.all(np.asarray(out.gap) <= 1e-12)
  for shift in (0.0, 1e9):  # the host path re-centres large potentials before reducing C
    warm = otkit.assignment(c, init=rng.normal(size=(4, 12)) * 10.0 + shift, method=method)
    np.testing.assert_allclose(warm.cost, out.cost, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_single_and_batched_agree_and_no_recompile(rng, method):
  c = rng.random((5, 8, 8))  # single problems of the shape of test_gradient_is_the_permutation_matrix
  many = otkit.assignment(c, chunk_size=2, method=method)  # memory blocking: the same result
  for k in range(5):
    one = otkit.assignment(c[k], method=method)
    np.testing.assert_array_equal(one.perm, many.perm[k])
  c1, init = c + 1.0, rng.normal(size=(5, 8))
  with helpers.compilations() as compiled:  # eager, new data of the same shapes
    shifted = otkit.assignment(c1, chunk_size=2, method=method)
  assert not compiled
  np.testing.assert_array_equal(shifted.perm, many.perm)  # a constant shift keeps the optimum
  # Under jit costs and warm starts are traced: one trace for both calls.
  solve = helpers.traced_once(
      lambda c, init: otkit.assignment(c, init=init, chunk_size=2, method=method))
  outs = [solve(c, np.zeros((5, 8))), solve(c1, init)]
  np.testing.assert_array_equal([o.perm for o in outs], [many.perm, many.perm])
  chex.assert_shape([outs[1].cost, outs[1].result], (5,))


@pytest.mark.parametrize("method", METHODS)
def test_gradient_is_the_permutation_matrix(rng, method):
  solve = functools.partial(otkit.assignment, method=method)
  c = rng.normal(size=(8, 8))
  grad = jax.jit(jax.grad(lambda c: solve(c).cost))(jnp.asarray(c))
  perm = np.asarray(solve(c).perm)
  np.testing.assert_array_equal(grad, np.eye(8)[perm])
  # Away from ties the optimal cost is linear in C: finite differences agree exactly.
  d = rng.normal(size=(8, 8))
  fd = (solve(c + 1e-6 * d).cost - solve(c - 1e-6 * d).cost) / 2e-6
  np.testing.assert_allclose(fd, np.sum(np.asarray(grad) * d), rtol=1e-6)
  # Batched: the gradient of the summed costs is the stack of permutation matrices.
  cs = rng.normal(size=(3, 8, 8))
  grads = jax.jit(jax.grad(lambda c: jnp.sum(jax.vmap(solve)(c).cost)))(jnp.asarray(cs))
  np.testing.assert_array_equal(grads, np.eye(8)[np.asarray(solve(cs).perm)])


@pytest.mark.parametrize("method", METHODS)
def test_failure_is_reported_inside_jit(method):
  # Every single problem is 2 × 2: one compilation for them, one for the batch.
  solve = jax.jit(functools.partial(otkit.assignment, method=method))
  out = solve(jnp.full((2, 2), jnp.nan))
  assert not bool(out.converged) and int(out.result) == otkit.Result.NON_FINITE
  with pytest.raises(RuntimeError, match="NON_FINITE"):
    otkit.check(out)
  infeasible = jnp.array([[1.0, jnp.inf], [2.0, jnp.inf]])
  out = solve(infeasible)
  assert not bool(out.converged) and int(out.result) == otkit.Result.NON_FINITE
  assert np.all(np.isfinite(np.asarray(out.perm)))
  # In a batch, each problem has its own code; check names how many failed.
  batch = solve(jnp.stack([jnp.eye(2), infeasible]))
  np.testing.assert_array_equal(batch.result, [otkit.Result.CONVERGED, otkit.Result.NON_FINITE])
  with pytest.raises(RuntimeError, match="1 of 2"):
    otkit.check(batch)
  good = solve(jnp.eye(2))
  assert int(good.result) == otkit.Result.CONVERGED and otkit.check(good) is good


def test_step_cap_is_reported_as_max_iters():
  # The exact search never reaches its cap on valid input; the code for it is MAX_ITERS.
  c = jnp.eye(3)
  out = _assignment._certify(c, jnp.arange(3), jnp.zeros(3), jnp.zeros(3), jnp.asarray(False),
                             jnp.asarray(7), capped=jnp.asarray(True))
  assert int(out.result) == otkit.Result.MAX_ITERS


def test_host_path_under_nested_vmap_and_auto(rng):
  c = rng.random((2, 3, 10, 10))
  out = jax.jit(jax.vmap(functools.partial(otkit.assignment, method="host")))(c)
  assert out.perm.shape == (2, 3, 10) and np.all(np.asarray(out.converged))
  for problem, value in zip(c.reshape(-1, 10, 10), np.asarray(out.cost).ravel()):
    np.testing.assert_allclose(value, _scipy_cost(problem), rtol=1e-12)
  # "auto" is the host path on CPU, the in-graph search on accelerators.
  expected = "host" if jax.default_backend() == "cpu" else "jax"
  assert _assignment.resolve_method("auto") == expected
  np.testing.assert_array_equal(otkit.assignment(c).perm, out.perm)


@pytest.mark.parametrize("bad,match", [
    (np.zeros((3, 4)), "square"),
    (np.zeros((0, 0)), "empty"),
    (np.zeros(5), "square"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
    (np.array([[0.0, -np.inf], [1.0, 2.0]]), "-inf"),
    (np.array([[np.inf, np.inf], [1.0, 2.0]]), "no finite entry"),
])
def test_bad_cost_matrix(bad, match):
  with pytest.raises(ValueError, match=match):
    otkit.assignment(bad)


def test_bad_options():
  with pytest.raises(ValueError, match="init"):
    otkit.assignment(np.zeros((3, 3)), init=np.zeros(4))
  with pytest.raises(ValueError, match="init"):
    otkit.assignment(np.zeros((3, 3)), init=np.array([0.0, np.inf, 0.0]))
  with pytest.raises(ValueError, match="chunk_size"):
    otkit.assignment(np.zeros((2, 3, 3)), chunk_size=0)
  with pytest.raises(TypeError, match="batch_size"):  # renamed: memory blocking is chunk_size
    otkit.assignment(np.zeros((2, 3, 3)), batch_size=2)
  with pytest.raises(ValueError, match="method"):
    otkit.assignment(np.zeros((3, 3)), method="scipy")
