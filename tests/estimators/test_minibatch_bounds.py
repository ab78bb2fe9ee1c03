"""Mini-batch bounds: the calibrated table of PAPERS §A (Alvarez-Melis et al.), the invariants
lower ≤ OT (POT's exact ot.emd2) ≤ upper ≤ average on random problems, monotone budgets, the
single-batch case, the Sinkhorn inner solver, jit/grad and bad input."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import otkit

TOL = 1e-9


def _fixture():
  """PAPERS §A: n = 1000, X ~ N(0, I₂), Y = Z·diag(1, 0.5) + (2, 0); rng 0, X first."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1000, 2))
  y = rng.normal(size=(1000, 2)) * np.array([1.0, 0.5]) + np.array([2.0, 0.0])
  return x, y, rng


def _exact(x, y):
  return ot.emd2([], [], ot.dist(x, y), numItermax=10**7)


def _clouds(seed, n, d=2):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, d) + rng.normal(size=d)
  return x, y


def _check_invariants(out, exact):
  assert bool(out.converged)
  assert float(out.lower) <= exact + TOL
  assert exact <= float(out.upper) + TOL
  assert float(out.upper) <= float(out.average) + TOL


@pytest.mark.slow
def test_reproduces_the_calibrated_table():
  x, y, rng = _fixture()
  exact = _exact(x, y)
  np.testing.assert_allclose(exact, 4.2962, atol=1e-4)
  table = {50: (4.5495, 4.4704), 100: (4.4225, 4.3917), 200: (4.3653, 4.3530)}
  uppers = []
  for m, (avg, star) in table.items():
    orders = (rng.permutation(1000), rng.permutation(1000))  # drawn after the data, in order
    out = otkit.minibatch_bounds(None, x, y, batch_size=m, partition=orders)
    np.testing.assert_allclose([out.average, out.upper], [avg, star], atol=1e-4)
    _check_invariants(out, exact)
    uppers.append(float(out.upper) - exact)
  assert uppers[0] > uppers[1] > uppers[2]  # the gap U* − OT shrinks as m grows
  sorted_table = {50: (6.320, 4.3297), 100: (6.268, 4.3113), 200: (6.156, 4.3015)}
  for m, (avg, star) in sorted_table.items():
    out = otkit.minibatch_bounds(None, x, y, batch_size=m, partition="sorted")
    np.testing.assert_allclose(out.average, avg, atol=1e-3)
    np.testing.assert_allclose(out.upper, star, atol=1e-4)
    _check_invariants(out, exact)


def test_calibrated_table_at_one_batch_size():
  x, y, rng = _fixture()
  orders = (rng.permutation(1000), rng.permutation(1000))
  out = otkit.minibatch_bounds(None, x, y, batch_size=50, partition=orders)
  np.testing.assert_allclose([out.average, out.upper], [4.5495, 4.4704], atol=1e-4)
  # The paper's lower bound is not pinned down (PAPERS: "dual-LB" 4.0645 with its choice of
  # block duals); the construction here is valid and tighter on this fixture.
  assert 4.0645 - 1e-3 <= float(out.lower) <= 4.2962
  diag = out.costs[jnp.arange(20), out.pairing]
  np.testing.assert_allclose(jnp.mean(diag), out.upper, rtol=1e-12)


def test_budget_sweep_is_monotone_and_ends_at_the_optimal_coupling():
  # d = 3: the full and the 24-pair problems share their programs with
  # test_invariants_on_random_problems[2-200-25] and test_exact_methods_give_the_same_bounds.
  x, y = _clouds(1, 200, d=3)
  exact = _exact(x, y)
  key = jax.random.key(0)
  full = otkit.minibatch_bounds(key, x, y, batch_size=25)  # k = 8, all 64 pairs
  previous = np.inf
  for budget in (8, 24, 64):  # 64 = k² shares its compilation with `full`
    out = otkit.minibatch_bounds(key, x, y, batch_size=25, budget=budget)
    _check_invariants(out, exact)
    assert int(out.solved.sum()) == budget
    assert float(out.upper) <= previous + TOL
    assert float(out.upper) >= float(full.upper) - TOL
    previous = float(out.upper)
  np.testing.assert_allclose(previous, full.upper, rtol=1e-12)
  solved = np.asarray(out.solved)
  np.testing.assert_array_equal(np.isfinite(np.asarray(out.costs)), solved)
  # The full matrix: each solved entry is exact OT between the two batches.
  bx, by = np.asarray(full.batches_x), np.asarray(full.batches_y)
  for p, q in ((0, 0), (3, 5), (7, 2)):
    np.testing.assert_allclose(full.costs[p, q], _exact(x[bx[p]], y[by[q]]), rtol=1e-12)


@pytest.mark.parametrize("seed,n,m", [
    (2, 200, 25), (3, 200, 40),
    pytest.param(4, 300, 50, marks=pytest.mark.slow),
    pytest.param(5, 300, 100, marks=pytest.mark.slow)])
def test_invariants_on_random_problems(seed, n, m):
  x, y = _clouds(seed, n, d=3)
  out = otkit.minibatch_bounds(jax.random.key(seed), x, y, batch_size=m)
  _check_invariants(out, _exact(x, y))


def test_exact_methods_give_the_same_bounds():
  x, y = _clouds(2, 200, d=3)
  key = jax.random.key(2)
  host = otkit.minibatch_bounds(key, x, y, batch_size=25, budget=24, exact_method="host")
  graph = otkit.minibatch_bounds(key, x, y, batch_size=25, budget=24, exact_method="jax")
  _check_invariants(host, _exact(x, y))
  np.testing.assert_array_equal(host.solved, graph.solved)
  np.testing.assert_allclose(host.costs, graph.costs, rtol=1e-12)
  # The lower bound uses each pair's optimal potentials (recovered from the permutations on
  # the host path): equal up to the potentials' gauge and rounding.
  np.testing.assert_allclose([host.upper, host.average, host.lower],
                             [graph.upper, graph.average, graph.lower], rtol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [25, 40, 100])
def test_invariants_at_n_1000(seed, m):
  x, y = _clouds(seed + 10, 1000)
  out = otkit.minibatch_bounds(jax.random.key(seed), x, y, batch_size=m)
  _check_invariants(out, _exact(x, y))


def test_single_batch_gives_ot():
  x, y = _clouds(6, 40)
  exact = _exact(x, y)
  out = otkit.minibatch_bounds(jax.random.key(0), x, y, batch_size=40)
  np.testing.assert_allclose([out.lower, out.upper, out.average], exact, rtol=1e-10)


def test_sinkhorn_inner_gives_valid_bounds():
  x, y = _clouds(7, 200)
  exact = _exact(x, y)
  out = otkit.minibatch_bounds(jax.random.key(1), x, y, batch_size=25, inner="sinkhorn",
                               epsilon=0.1, solver=otkit.Sinkhorn(tol=1e-4, max_iters=5000))
  _check_invariants(out, exact)
  assert int(out.result) == otkit.Result.CONVERGED and otkit.check(out) is out
  capped = otkit.minibatch_bounds(jax.random.key(1), x, y, batch_size=25, inner="sinkhorn",
                                  epsilon=0.1, solver=otkit.Sinkhorn(max_iters=2, anneal=False))
  assert int(capped.result) == otkit.Result.MAX_ITERS and not bool(capped.converged)
  with pytest.raises(RuntimeError, match="MAX_ITERS"):
    otkit.check(capped)


def test_chunk_sizes_do_not_change_the_bounds():
  x, y = _clouds(2, 200, d=3)
  key = jax.random.key(2)
  ref = otkit.minibatch_bounds(key, x, y, batch_size=25, budget=24)
  out = otkit.minibatch_bounds(key, x, y, batch_size=25, budget=24, chunk_size=5,
                               transform_chunk_size=16)
  chex.assert_trees_all_close(out, ref, rtol=1e-12)
  with pytest.raises(TypeError, match="batch_chunk"):
    otkit.minibatch_bounds(key, x, y, batch_size=25, batch_chunk=5)


def test_uniform_weights_of_equal_mass_scale_the_bounds():
  x, y = _clouds(6, 40)
  key = jax.random.key(0)
  ref = otkit.minibatch_bounds(key, x, y, batch_size=10)
  w = np.full(40, 2.0 / 40)
  out = otkit.minibatch_bounds(key, x, y, w, w, batch_size=10)
  np.testing.assert_allclose([out.lower, out.upper, out.average],
                             2 * np.array([ref.lower, ref.upper, ref.average]), rtol=1e-12)
  with pytest.raises(ValueError, match="`a` and `b`"):  # unequal mass: never normalised
    otkit.minibatch_bounds(key, x, y, w, batch_size=10)


def test_float32_jit_and_grad():
  x, y = _clouds(8, 200, d=3)  # the float64 reference shares its program with other tests
  x32, y32 = x.astype(np.float32), y.astype(np.float32)
  fn = jax.jit(lambda x, y: otkit.minibatch_bounds(jax.random.key(2), x, y, batch_size=25))
  out = fn(x32, y32)
  assert out.upper.dtype == jnp.float32
  ref = otkit.minibatch_bounds(jax.random.key(2), x, y, batch_size=25)
  np.testing.assert_allclose([out.lower, out.upper, out.average],
                             [ref.lower, ref.upper, ref.average], rtol=1e-5)
  # `upper` is the cost of glued optimal plans: its gradient is the envelope one.
  grad = jax.jit(jax.grad(lambda x: otkit.minibatch_bounds(jax.random.key(2), x, y,
                                                           batch_size=25).upper))(jnp.asarray(x))
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=41), "batch_size"),
    (dict(batch_size=7), "divide"),
    (dict(batch_size=10, budget=3), "budget"),
    (dict(batch_size=10, budget=17), "budget"),
    (dict(batch_size=10, partition="kmeans"), "partition"),
    (dict(batch_size=10, partition=(np.arange(40), np.zeros(40, int))), "permutation"),
    (dict(batch_size=10, inner="sinkhorn"), "epsilon"),
    (dict(batch_size=10, solver=otkit.Sinkhorn()), "solver"),
    (dict(batch_size=10, chunk_size=0), "chunk_size"),
    (dict(batch_size=10, transform_chunk_size=0), "transform_chunk_size"),
    (dict(batch_size=10, exact_method="cpu"), "exact_method"),
])
def test_bad_options(kwargs, match):
  x, y = _clouds(9, 40)
  with pytest.raises(ValueError, match=match):
    otkit.minibatch_bounds(jax.random.key(0), x, y, **kwargs)


def test_bad_data():
  x, y = _clouds(9, 40)
  with pytest.raises(ValueError, match="same number"):
    otkit.minibatch_bounds(jax.random.key(0), x, y[:20], batch_size=10)
  with pytest.raises(ValueError, match="uniform"):
    otkit.minibatch_bounds(jax.random.key(0), x, y, np.linspace(1, 2, 40) / 60, batch_size=10)
  with pytest.raises(ValueError, match="key"):
    otkit.minibatch_bounds(None, x, y, batch_size=10)
  with pytest.raises(ValueError, match="`y`"):
    otkit.minibatch_bounds(jax.random.key(0), x, np.full_like(y, np.inf), batch_size=10)
