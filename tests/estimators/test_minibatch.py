"""The mini-batch OT estimator: each pair's cost against POT's exact ot.emd2 on the same batches,
the Sinkhorn inner solver against POT, gradients against finite differences, jit/vmap, the
sampling policy and bad input."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from scipy.special import logsumexp

import helpers
import otkit
from otkit.estimators import _minibatch

N, M, K = 120, 16, 12


def _clouds(seed=0, n=N, d=2, dtype=np.float64):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = rng.normal(size=(n, d)) * np.linspace(0.5, 1.0, d) + 1.0
  return x.astype(dtype), y.astype(dtype)


def _batches(key, x, y, m, k):
  """The indices the estimator draws for `key` (uniform weights)."""
  key_x, key_y = jax.random.split(key)
  return (np.asarray(_minibatch.sample_batches(key_x, x.shape[0], None, m, k)),
          np.asarray(_minibatch.sample_batches(key_y, y.shape[0], None, m, k)))


def _emd2(xb, yb):
  return ot.emd2([], [], ot.dist(np.asarray(xb, np.float64), np.asarray(yb, np.float64)))


# float64 on the in-graph path is checked pair by pair in
# test_in_graph_exact_inner_gradient_matches_finite_differences.
@pytest.mark.parametrize("dtype, method", [(np.float32, "host"), (np.float32, "jax"),
                                           (np.float64, "host")],
                         ids=["f32-host", "f32-jax", "f64-host"])
def test_exact_inner_matches_pot_on_every_pair(dtype, method):
  x, y = _clouds(dtype=dtype)
  key = jax.random.key(3)
  out = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=K, exact_method=method)
  ix, iy = _batches(key, x, y, M, K)
  expected = np.array([_emd2(x[i], y[j]) for i, j in zip(ix, iy)])
  rtol = 1e-5 if dtype == np.float32 else 1e-12
  np.testing.assert_allclose(out.costs, expected, rtol=rtol)
  np.testing.assert_allclose(out.value, expected.mean(), rtol=rtol)
  np.testing.assert_allclose(out.std_error, expected.std(ddof=1) / np.sqrt(K), rtol=1e-4)
  assert out.value.dtype == dtype and bool(out.converged)
  for batch in ix:  # uniform weights: no point repeated within a batch
    assert len(set(batch.tolist())) == M


def test_exact_inner_in_higher_dimension_and_other_cost():
  x, y = _clouds(d=24)  # above the warm-start dimension
  key = jax.random.key(4)
  out = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=4)
  ix, iy = _batches(key, x, y, M, 4)
  np.testing.assert_allclose(out.costs, [_emd2(x[i], y[j]) for i, j in zip(ix, iy)], rtol=1e-12)
  out = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=4, cost_fn=otkit.Euclidean())
  expected = [ot.emd2([], [], ot.dist(x[i], y[j], metric="euclidean")) for i, j in zip(ix, iy)]
  np.testing.assert_allclose(out.costs, expected, rtol=1e-12)


def _entropic_plan(c, eps, iters=5000):
  """Reference log-domain Sinkhorn (float64 NumPy, uniform weights) run to its fixed point: until
  a sweep leaves both potentials bit for bit unchanged (or ``iters`` sweeps)."""
  m = c.shape[0]
  f, g = np.zeros(m), np.zeros(m)
  for _ in range(iters):
    f_new = -eps * logsumexp((g[None, :] - c) / eps - np.log(m), axis=1)
    g_new = -eps * logsumexp((f_new[:, None] - c) / eps - np.log(m), axis=0)
    done = np.array_equal(f_new, f) and np.array_equal(g_new, g)
    f, g = f_new, g_new
    if done:
      break
  return np.exp((f[:, None] + g[None, :] - c) / eps) / m**2


@functools.lru_cache(maxsize=None)
def _entropic_costs(seed, n_batches, eps):
  """``⟨C, P_ε⟩`` of the reference plan for each pair the estimator draws from ``key(seed)``
  on ``_clouds()`` (shared by the tests of the Sinkhorn inner solver)."""
  x, y = _clouds()
  ix, iy = _batches(jax.random.key(seed), x, y, M, n_batches)
  costs = []
  for i, j in zip(ix, iy):
    c = ot.dist(x[i], y[j])
    costs.append(np.sum(_entropic_plan(c, eps) * c))
  return np.array(costs)


# The Sinkhorn inner solver of these tests (its compilations are shared).
SINKHORN = otkit.Sinkhorn(tol=1e-10, max_iters=5000)


def test_sinkhorn_inner_is_the_primal_cost_of_the_entropic_plan():
  x, y = _clouds()
  key, eps = jax.random.key(5), 0.5
  out = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=4, inner="sinkhorn", epsilon=eps,
                           solver=SINKHORN)
  ix, iy = _batches(key, x, y, M, 4)
  np.testing.assert_allclose(out.costs, _entropic_costs(5, 4, eps), rtol=1e-8)
  for cost, i, j in zip(np.asarray(out.costs), ix, iy):
    assert cost >= _emd2(x[i], y[j])  # a feasible plan's cost bounds OT from above
  assert bool(out.converged)


def _fd_check(fn, x, seed=0, h=1e-6, rtol=1e-5):
  d = np.random.default_rng(seed).normal(size=x.shape)
  grad = jax.jit(jax.grad(fn))(jnp.asarray(x))  # one compiled program
  fd = (fn(jnp.asarray(x + h * d)) - fn(jnp.asarray(x - h * d))) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(grad, d), fd, rtol=rtol)


def test_gradients_match_finite_differences():
  # The problems of test_exact_inner_matches_pot_on_every_pair[f64-host] and of
  # test_sinkhorn_inner_is_the_primal_cost_of_the_entropic_plan: the values share their programs.
  x, y = _clouds()
  exact = lambda x: otkit.minibatch_ot(jax.random.key(6), x, y, batch_size=M, n_batches=K).value
  _fd_check(exact, x)  # piecewise quadratic in x: exact away from ties
  # Implicit differentiation through Sinkhorn; the step is large enough that the solver's
  # tolerance (1e-10) does not pollute the difference quotient.
  entropic = lambda y: otkit.minibatch_ot(jax.random.key(5), x, y, batch_size=M, n_batches=4,
                                          inner="sinkhorn", epsilon=0.5, solver=SINKHORN).value
  _fd_check(entropic, y, h=1e-4, rtol=1e-5)


def _estimate(key, x, y):
  return otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=K)


# One compiled program for the tests under jit (key and points traced).
_estimate_jit = jax.jit(_estimate)


def test_jit_and_vmap_over_keys():
  x, y = _clouds()
  keys = jax.random.split(jax.random.key(7), 3)
  eager = [_estimate(k, x, y).value for k in keys]
  np.testing.assert_allclose(_estimate_jit(keys[0], x, y).value, eager[0], rtol=1e-12)
  batched = jax.vmap(_estimate, in_axes=(0, None, None))(keys, x, y)
  np.testing.assert_allclose(batched.value, eager, rtol=1e-12)


def test_weights_and_a_batch_size_that_does_not_divide_n():
  x, y = _clouds()
  a = np.zeros(N)
  a[: N // 2] = 2.0 / N  # only the first half of x carries mass: drawn with replacement
  # b given as weights too: the program of test_weights_of_equal_mass_are_used_as_given.
  b = np.full(N, 1.0 / N)
  out = otkit.minibatch_ot(jax.random.key(8), x, y, a, b, batch_size=M, n_batches=K)
  assert bool(out.converged) and np.isfinite(float(out.value))
  # The batch size is a policy, not a divisor: 7 does not divide 120.
  out = otkit.minibatch_ot(jax.random.key(8), x, y, batch_size=7, n_batches=K)
  ix, iy = _batches(jax.random.key(8), x, y, 7, K)
  np.testing.assert_allclose(out.costs, [_emd2(x[i], y[j]) for i, j in zip(ix, iy)], rtol=1e-12)


def test_random_permutations_are_the_same_on_every_backend():
  hi, lo = jax.random.bits(jax.random.key(1), (2, 3, 500), jnp.uint32)
  lo = lo.at[:, :250].set(0)  # ties of the low key: the high key still orders them
  hi = hi.at[0, 250:260].set(7)  # ties of the high key: the low key orders them
  host = np.asarray(_minibatch._argsort_host(hi, lo))
  np.testing.assert_array_equal(host, _minibatch._argsort_xla(hi, lo))
  np.testing.assert_array_equal(host, np.lexsort((np.asarray(lo), np.asarray(hi)), axis=-1))
  perms = np.asarray(_minibatch.random_permutations(jax.random.key(2), 4, 300))
  np.testing.assert_array_equal(np.sort(perms, axis=1), np.broadcast_to(np.arange(300), (4, 300)))


def test_in_graph_exact_inner_gradient_matches_finite_differences():
  # The default (host) path is checked in test_gradients_match_finite_differences.
  x, y = _clouds()
  key = jax.random.key(6)
  ix, iy = _batches(key, x, y, M, K)
  fn = jax.jit(lambda x: otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=K,
                                            exact_method="jax"))
  out = fn(x)
  expected = np.array([_emd2(x[i], y[j]) for i, j in zip(ix, iy)])
  np.testing.assert_allclose(out.costs, expected, rtol=1e-12)
  np.testing.assert_allclose(out.value, expected.mean(), rtol=1e-12)
  np.testing.assert_allclose(out.std_error, expected.std(ddof=1) / np.sqrt(K), rtol=1e-4)
  assert out.value.dtype == np.float64 and bool(out.converged)
  _fd_check(lambda x: fn(x).value, x)


def test_sampled_batches_follow_the_weights():
  w = np.array([0.0, 0.7, 0.3])
  idx = np.asarray(_minibatch.sample_batches(jax.random.key(0), 3, jnp.asarray(w), 50, 40))
  freq = np.bincount(idx.ravel(), minlength=3) / idx.size
  np.testing.assert_allclose(freq, w, atol=0.03)


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0, n_batches=2), "batch_size"),
    (dict(batch_size=N + 1, n_batches=2), "batch_size"),
    (dict(batch_size=2.5, n_batches=2), "batch_size"),
    (dict(batch_size=4, n_batches=0), "n_batches"),
    (dict(batch_size=4, n_batches=2, inner="emd"), "inner"),
    (dict(batch_size=4, n_batches=2, inner="sinkhorn"), "epsilon"),
    (dict(batch_size=4, n_batches=2, inner="sinkhorn", epsilon=0.0), "epsilon"),
    (dict(batch_size=4, n_batches=2, epsilon=0.1), "epsilon"),
    (dict(batch_size=4, n_batches=2, solver=otkit.Sinkhorn()), "solver"),
    (dict(batch_size=4, n_batches=2, inner="sinkhorn", epsilon=0.1, solver="sinkhorn"), "solver"),
    (dict(batch_size=4, n_batches=2, chunk_size=0), "chunk_size"),
    (dict(batch_size=4, n_batches=2, exact_method="scipy"), "exact_method"),
])
def test_bad_options(kwargs, match):
  x, y = _clouds()
  with pytest.raises(ValueError, match=match):
    otkit.minibatch_ot(jax.random.key(0), x, y, **kwargs)


def test_bad_data():
  x, y = _clouds()
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="key"):
    otkit.minibatch_ot(None, x, y, batch_size=4, n_batches=2)
  with pytest.raises(ValueError, match="`x`"):
    otkit.minibatch_ot(key, np.where(np.eye(N, 2) > 0, np.nan, x), y, batch_size=4, n_batches=2)
  with pytest.raises(ValueError, match="dimension"):
    otkit.minibatch_ot(key, x, y[:, :1], batch_size=4, n_batches=2)
  with pytest.raises(ValueError, match="`a`"):
    otkit.minibatch_ot(key, x, y, -np.ones(N), batch_size=4, n_batches=2)
  with pytest.raises(ValueError, match="empty"):
    otkit.minibatch_ot(key, x[:0], y, batch_size=4, n_batches=2)
  with pytest.raises(ValueError, match="`a` and `b`"):  # unequal mass: never normalised
    otkit.minibatch_ot(key, x, y, np.full(N, 2.0 / N), batch_size=4, n_batches=2)


def test_removed_options_are_errors():
  x, y = _clouds()
  with pytest.raises(TypeError, match="batch_chunk"):
    otkit.minibatch_ot(jax.random.key(0), x, y, batch_size=4, n_batches=2, batch_chunk=2)
  with pytest.raises(TypeError, match="tol"):
    otkit.minibatch_ot(jax.random.key(0), x, y, batch_size=4, n_batches=2, inner="sinkhorn",
                       epsilon=0.1, tol=1e-3)


def test_solver_tol_is_traced_under_jit():
  x, y = _clouds()
  key, eps = jax.random.key(5), 0.5

  def run(x, tol):
    solver = otkit.Sinkhorn(tol=tol, max_iters=5000)  # a solver built from a traced tol
    return otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=4, inner="sinkhorn",
                              epsilon=eps, solver=solver)

  run = helpers.traced_once(run)
  tight, loose = run(x, 1e-10), run(x, 0.5)  # one trace for both tolerances
  expected = _entropic_costs(5, 4, eps)
  np.testing.assert_allclose(tight.costs, expected, rtol=1e-8)
  assert bool(tight.converged) and bool(loose.converged)
  # The loose tolerance really stops earlier: its costs are those of the eager call with it.
  eager = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=4, inner="sinkhorn", epsilon=eps,
                             solver=otkit.Sinkhorn(tol=0.5, max_iters=5000))
  np.testing.assert_allclose(loose.costs, eager.costs, rtol=1e-12)
  assert np.max(np.abs(np.asarray(loose.costs) - expected)) > 1e-6


# With -m slow: a solver object reaching an estimator is checked by default in
# tests/solvers/test_contract.py (the divergence with the Newton solver).
@pytest.mark.slow
def test_sinkhorn_newton_inner_solver():
  x, y = _clouds()
  key, eps = jax.random.key(5), 0.5
  out = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=2, inner="sinkhorn", epsilon=eps,
                           solver=otkit.SinkhornNewton(tol=1e-10))
  # The first two pairs of key 5 (one permutation holds 7 batches of 16 points).
  np.testing.assert_allclose(out.costs, _entropic_costs(5, 4, eps)[:2], rtol=1e-8)
  assert bool(out.converged)


def test_chunk_size_does_not_change_the_result():
  x, y = _clouds()
  key = jax.random.key(9)
  ref = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=K)
  out = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=K, chunk_size=2)
  chex.assert_trees_all_close(out, ref, rtol=1e-12)


def test_result_codes_and_check():
  x, y = _clouds()
  key = jax.random.key(10)
  exact = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=K)
  chex.assert_shape(exact.result, ())
  assert int(exact.result) == otkit.Result.CONVERGED and otkit.check(exact) is exact
  capped = otkit.minibatch_ot(key, x, y, batch_size=M, n_batches=3, inner="sinkhorn",
                              epsilon=0.01, solver=otkit.Sinkhorn(max_iters=3, anneal=False))
  assert int(capped.result) == otkit.Result.MAX_ITERS and not bool(capped.converged)
  with pytest.raises(RuntimeError, match="MAX_ITERS"):
    otkit.check(capped)
  # Non-finite data inside jit is reported, not raised.
  nan = _estimate_jit(key, jnp.asarray(x).at[:, 0].set(jnp.nan), y)
  assert int(nan.result) == otkit.Result.NON_FINITE
  with pytest.raises(RuntimeError, match="NON_FINITE"):
    otkit.check(nan)


def test_weights_of_equal_mass_are_used_as_given():
  x, y = _clouds()
  key = jax.random.key(11)
  w = np.full(N, 1.0 / N)
  one = otkit.minibatch_ot(key, x, y, w, w, batch_size=M, n_batches=K)
  two = otkit.minibatch_ot(key, x, y, 2 * w, 2 * w, batch_size=M, n_batches=K)
  # The same batches (drawn with probabilities w / Σw), carrying mass 2: twice the costs.
  np.testing.assert_allclose(two.costs, 2 * np.asarray(one.costs), rtol=1e-12)
