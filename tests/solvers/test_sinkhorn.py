"""Sinkhorn against POT (plans, exact limit, unbalanced), float32 robustness, jit/vmap, input errors.

Most problems are 14 × 11 (the shapes of test_contract.py, test_newton.py and test_gradients.py) and
tight solves use ``max_iters=TIGHT``: eager calls with equal shapes and static options share
one compilation. Result codes and ``otkit.check`` are tested in test_contract.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit


N, M = 14, 11
TIGHT = 10000  # the static iteration cap of the tight solves (they need at most ~5200 sweeps)


def _problem(rng, n=N, m=M, d=2, uniform=False):
  x = rng.normal(size=(n, d))
  y = rng.normal(size=(m, d)) * 0.8 + 1.0
  a = np.full(n, 1 / n) if uniform else rng.uniform(0.2, 1.0, n)
  b = np.full(m, 1 / m) if uniform else rng.uniform(0.2, 1.0, m)
  return x, y, a / a.sum(), b / b.sum()


_sq_cost = helpers.sq_cost


@pytest.mark.parametrize("epsilon", [0.05, 0.5])
def test_plan_matches_pot_sinkhorn_log(rng, epsilon):
  x, y, a, b = _problem(rng)
  C = _sq_cost(x, y)
  geom = otkit.PointCloud(x, y)
  out = otkit.sinkhorn(geom, a, b, epsilon=epsilon, tol=1e-12, max_iters=TIGHT)
  assert bool(out.converged)
  P_pot = ot.sinkhorn(a, b, C, epsilon, method="sinkhorn_log", stopThr=1e-14, numItermax=100000)
  np.testing.assert_allclose(otkit.transport_plan(geom, out), P_pot, atol=1e-6, rtol=0)
  np.testing.assert_allclose(otkit.transport_cost(geom, out), np.sum(C * P_pot), rtol=1e-6)


def test_dense_and_online_geometries_agree(rng):
  x, y, a, b = _problem(rng)
  online = otkit.PointCloud(x, y, chunk_size=4)  # blocks of 4, 4, 4 and 2 rows
  dense = otkit.CostMatrix(_sq_cost(x, y))
  out1 = otkit.sinkhorn(online, a, b, epsilon=0.1, tol=1e-10)
  out2 = otkit.sinkhorn(dense, a, b, epsilon=0.1, tol=1e-10)
  np.testing.assert_allclose(out1.f, out2.f, atol=1e-8)
  np.testing.assert_allclose(out1.g, out2.g, atol=1e-8)


# The squared-Euclidean cost runs by default; a p-norm cost (evaluated pair by pair) and unrolled
# gradients with -m slow (each is checked by default elsewhere).
@pytest.mark.parametrize("cost_fn, grad_mode", [(None, "implicit"),
                                                pytest.param(None, "unroll", marks=pytest.mark.slow),
                                                pytest.param(otkit.PNorm(p=1.5), "implicit",
                                                             marks=pytest.mark.slow)])
def test_stored_cost_matrix_path_matches_pot_and_online_gradients(rng, cost_fn, grad_mode):
  # d = 20 (or a cost evaluated pair by pair) in the automatic mode stores the cost matrix.
  x, y, a, b = _problem(rng, n=30, m=25, d=20)
  auto = otkit.PointCloud(x, y, cost_fn=cost_fn)
  assert auto.prefers_dense
  C = np.asarray(auto.cost_matrix)

  def value(x, epsilon, tol, chunk_size):  # ε and tol are traced: one compilation per geometry
    geom = otkit.PointCloud(x, y, cost_fn=cost_fn, chunk_size=chunk_size)
    out = otkit.sinkhorn(geom, a, b, epsilon=epsilon, tol=tol, max_iters=2000,
                         grad_mode=grad_mode)
    return out.value, out

  grad = jax.jit(jax.grad(value, has_aux=True), static_argnums=3)
  _, out = grad(x, 0.05 * C.mean(), 1e-12, None)
  assert bool(out.converged)
  P_pot = ot.sinkhorn(a, b, C, 0.05 * C.mean(), method="sinkhorn_log", stopThr=1e-14,
                      numItermax=100000)
  np.testing.assert_allclose(otkit.transport_plan(auto, out), P_pot, atol=1e-8, rtol=0)
  dense, _ = grad(x, 0.2 * C.mean(), 1e-10, None)
  online, _ = grad(x, 0.2 * C.mean(), 1e-10, 7)
  np.testing.assert_allclose(dense, online, rtol=1e-7, atol=1e-10)


def test_transport_cost_approaches_exact_emd(rng):
  x, y, a, b = _problem(rng)
  C = _sq_cost(x, y)
  exact = ot.emd2(a, b, C)
  geom = otkit.PointCloud(x, y)
  gaps = []
  for scale in (1e-1, 1e-2, 1e-3):
    out = otkit.sinkhorn(geom, a, b, epsilon=scale * C.mean(), tol=1e-8, max_iters=TIGHT)
    assert bool(out.converged)
    gaps.append(float(otkit.transport_cost(geom, out)) - exact)
  assert gaps[0] > gaps[1] > gaps[2] >= -1e-8
  assert gaps[2] < 1e-3 * exact


@pytest.mark.parametrize("tau_a, tau_b", [(0.5, 0.5), (0.8, 0.3), (0.95, 0.6)])
def test_unbalanced_plan_matches_pot(rng, tau_a, tau_b):
  # otkit's tau relates to POT's marginal penalty by reg_m = ε τ / (1 − τ) (τ = 1: hard marginal);
  # POT 0.9.7 calls its log-stabilised unbalanced solver "sinkhorn_stabilized".
  x, y, a, b = _problem(rng)
  b = 1.7 * b  # different masses
  C = _sq_cost(x, y)
  eps = 0.1
  reg_m = tuple(eps * t / (1 - t) for t in (tau_a, tau_b))
  geom = otkit.PointCloud(x, y)
  out = otkit.sinkhorn(geom, a, b, epsilon=eps, tau_a=tau_a, tau_b=tau_b, tol=1e-12,
                       max_iters=TIGHT)
  assert bool(out.converged)
  P_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, C, eps, reg_m, method="sinkhorn_stabilized",
                                            reg_type="kl", stopThr=1e-15, numItermax=100000)
  np.testing.assert_allclose(otkit.transport_plan(geom, out), P_pot, atol=1e-7, rtol=0)


# n = 1000 is the long check; n = 200 behaves alike (500 sweeps fall short, ~8400 converge).
@pytest.mark.parametrize("n", [200, pytest.param(1000, marks=pytest.mark.slow)])
def test_float32_small_epsilon_is_finite_and_converged_is_truthful(rng, n):
  x = rng.normal(size=(n, 2)).astype(np.float32)
  y = (rng.normal(size=(n, 2)) * 0.8 + [1.0, 0.0]).astype(np.float32)
  C = _sq_cost(x.astype(np.float64), y.astype(np.float64))
  eps = 1e-4 * C.mean()
  for max_iters in (500, 20000):
    out = otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=np.float32(eps), max_iters=max_iters)
    assert out.f.dtype == np.float32
    assert np.all(np.isfinite(out.f)) and np.all(np.isfinite(out.g)) and np.isfinite(out.value)
    # Marginal error of the returned potentials recomputed independently in float64.
    u = np.full(n, 1 / n)
    error = helpers.l1_marginal_error(helpers.plan(C, u, u, out.f, out.g, eps), u, u)
    if bool(out.converged):
      assert error <= 2e-3  # tol = 1e-3 on the rows, a float32 margin
    else:
      assert error > 1e-3 and int(out.n_iters) == max_iters
  assert bool(out.converged), "20000 sweeps suffice at this ε"


def test_annealing_and_warm_start_reach_the_same_solution(rng):
  x, y, a, b = _problem(rng)
  geom = otkit.PointCloud(x, y)
  cold = otkit.sinkhorn(geom, a, b, epsilon=0.02, anneal=False, tol=1e-10, max_iters=TIGHT)
  hot = otkit.sinkhorn(geom, a, b, epsilon=0.02, anneal=True, tol=1e-10, max_iters=TIGHT)
  warm = otkit.sinkhorn(geom, a, b, epsilon=0.02, init=(cold.f, cold.g), tol=1e-10)
  assert int(warm.n_iters) <= 2
  for out in (hot, warm):
    np.testing.assert_allclose(out.f, cold.f, atol=1e-7)
    np.testing.assert_allclose(out.g, cold.g, atol=1e-7)


def test_fixed_iters_performs_exactly_that_many_sweeps(rng):
  # The shapes and fixed_iters of test_vmap_equals_loop: one compilation.
  x, y, a, b = _problem(rng, n=12, m=10)
  out = otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=0.5, fixed_iters=60, tol=1e-6)
  assert int(out.n_iters) == 60 and bool(out.converged)
  out = otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=0.01, fixed_iters=60, tol=1e-6)
  assert int(out.n_iters) == 60 and not bool(out.converged)


def test_apply_plan_matches_dense_plan(rng):
  x, y, a, b = _problem(rng)
  geom = otkit.PointCloud(x, y, chunk_size=4)
  out = otkit.sinkhorn(geom, a, b, epsilon=0.1, tol=1e-9)
  P = np.asarray(otkit.transport_plan(geom, out))
  v, w = rng.normal(size=(M, 3)), rng.normal(size=N)
  np.testing.assert_allclose(otkit.apply_plan(geom, out, v, axis=1), P @ v, atol=1e-12)
  np.testing.assert_allclose(otkit.apply_plan(geom, out, w, axis=0), P.T @ w, atol=1e-12)
  np.testing.assert_allclose(P.sum(1), a, atol=1e-9)


def test_jit_equals_eager_and_does_not_recompile(rng):
  x, y, a, b = _problem(rng)
  x2, y2, a2, b2 = _problem(np.random.default_rng(1))

  def solve(x, y, a, b, eps, solver):
    return otkit.solve(otkit.PointCloud(x, y), a, b, epsilon=eps, solver=solver)

  eager = otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=0.1)
  # New data, ε and tol of the same shapes: one trace for both calls.
  jitted, _ = helpers.assert_no_recompile(solve, (x, y, a, b, 0.1, otkit.Sinkhorn()),
                                          (x2, y2, a2, b2, 0.2, otkit.Sinkhorn(tol=1e-6)))
  np.testing.assert_allclose(jitted.f, eager.f, atol=1e-12)
  np.testing.assert_allclose(jitted.value, eager.value, rtol=1e-12)
  assert int(jitted.result) == int(eager.result)


def test_points_closed_over_by_a_jitted_function(rng):
  # Concrete arrays captured by a caller's traced function are still checked, eagerly.
  x, y, a, b = _problem(rng)
  y = jnp.asarray(y)
  loss = jax.jit(lambda x: otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=0.1).value)
  np.testing.assert_allclose(loss(x), otkit.sinkhorn(otkit.PointCloud(x, y), a, b,
                                                     epsilon=0.1).value, rtol=1e-12)
  bad = y.at[0, 0].set(np.nan)
  with pytest.raises(ValueError, match="`y` contains 1 NaN"):
    jax.jit(lambda x: otkit.sinkhorn(otkit.PointCloud(x, bad), epsilon=0.1).value)(x)
  # Literal options written inside the traced function are known too.
  with pytest.raises(ValueError, match="`epsilon` must be a finite number > 0"):
    jax.jit(lambda x: otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=-1.0).value)(x)
  with pytest.raises(ValueError, match="`tau_a` must lie in"):
    jax.jit(lambda x: otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=0.1, tau_a=2.0).value)(x)


def test_public_function_does_not_recompile_for_new_data(rng):
  x, y, a, b = _problem(rng)
  otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=0.1)
  x2, y2, a2, b2 = _problem(np.random.default_rng(2))
  with helpers.compilations() as compiled:
    otkit.sinkhorn(otkit.PointCloud(x2, y2), a2, b2, epsilon=0.3, tol=1e-5)
    otkit.solve(otkit.PointCloud(x2, y2), a2, b2, epsilon=0.2, solver=otkit.Sinkhorn(tol=1e-4))
  assert not compiled, compiled


# fixed_iters is tested in float64; float32 only with the adaptive loop.
@pytest.mark.parametrize("dtype, fixed_iters", [pytest.param(np.float64, None, marks=pytest.mark.slow),
                                                (np.float64, 60), (np.float32, None)],
                         ids=["f64-None", "f64-60", "f32-None"])
def test_vmap_equals_loop(dtype, fixed_iters):
  batch = [_problem(np.random.default_rng(i), n=12, m=10) for i in range(8)]
  xs, ys, as_, bs = (np.stack([p[k] for p in batch]).astype(dtype) for k in range(4))
  eps = np.linspace(0.05, 0.5, 8).astype(dtype)

  def solve(x, y, a, b, e):
    return otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=e, tol=1e-4,
                          fixed_iters=fixed_iters)

  batched = jax.vmap(solve)(xs, ys, as_, bs, eps)
  tol = 1e-4 if dtype == np.float32 else 1e-12  # float32: batched reductions sum in another order
  for i in range(8):
    single = solve(xs[i], ys[i], as_[i], bs[i], eps[i])
    np.testing.assert_allclose(batched.f[i], single.f, atol=tol)
    np.testing.assert_allclose(batched.value[i], single.value, rtol=tol)
    # float32 rounding can move the stopping test across the tolerance by a few sweeps where the
    # error falls slowly (one or two, depending on the compiler's summation order)
    assert abs(int(batched.n_iters[i]) - int(single.n_iters)) <= (3 if dtype == np.float32 else 0)
    assert bool(batched.converged[i]) == bool(single.converged)


@pytest.mark.parametrize("kwargs, match", [
    (dict(a=np.ones(N - 1) / (N - 1)), "`a`"),
    (dict(b=np.ones(3)), "`b`"),
    (dict(a=np.r_[-0.1, np.full(N - 1, 1.1 / (N - 1))]), "`a`"),
    (dict(a=np.r_[np.nan, np.full(N - 1, 1 / (N - 1))]), "`a`"),
    (dict(b=np.r_[np.inf, np.full(M - 1, 1 / (M - 1))]), "`b`"),
    (dict(b=np.full(M, 2 / M)), "mass"),
    (dict(epsilon=0.0), "`epsilon`"),
    (dict(epsilon=-1.0), "`epsilon`"),
    (dict(epsilon=np.nan), "`epsilon`"),
    (dict(tau_a=0.0), "`tau_a`"),
    (dict(tau_b=1.5), "`tau_b`"),
    (dict(tol=0.0), "`tol`"),
    (dict(max_iters=0), "`max_iters`"),
    (dict(grad_mode="backprop"), "`grad_mode`"),
    (dict(init=(np.zeros(3), np.zeros(M))), "`init`"),
])
def test_bad_inputs_raise_value_error_naming_the_argument(rng, kwargs, match):
  x, y, _, _ = _problem(rng)
  args = dict(epsilon=0.1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.sinkhorn(otkit.PointCloud(x, y), **args)


def test_unequal_mass_is_fine_when_unbalanced(rng):
  x, y, a, b = _problem(rng)
  out = otkit.sinkhorn(otkit.PointCloud(x, y), a, 2 * b, epsilon=0.1, tau_b=0.9)
  assert np.isfinite(out.value)


def test_plan_functions_under_jit_vmap_and_grad(rng):
  x, y, a, b = _problem(rng)
  v = rng.normal(size=M)

  def summaries(x):
    geom = otkit.PointCloud(x, y)
    out = otkit.sinkhorn(geom, a, b, epsilon=0.2, tol=1e-12, max_iters=TIGHT)
    return otkit.transport_cost(geom, out), otkit.apply_plan(geom, out, v, axis=1)

  jitted = jax.jit(summaries)  # compiled once, for the batch loop and the finite differences
  cost, moved = jitted(x)
  eager_cost, eager_moved = summaries(x)
  np.testing.assert_allclose(cost, eager_cost, rtol=1e-12)
  np.testing.assert_allclose(moved, eager_moved, rtol=1e-12)
  xs = np.stack([x, x + 0.5, 2 * x])
  batched_cost, _ = jax.jit(jax.vmap(summaries))(xs)
  for i in range(3):
    np.testing.assert_allclose(batched_cost[i], jitted(xs[i])[0], rtol=1e-10)
  direction = rng.normal(size=x.shape)
  grad = jax.jit(jax.grad(lambda x: summaries(x)[0]))(jnp.asarray(x))
  h = 1e-5
  fd = (jitted(x + h * direction)[0] - jitted(x - h * direction)[0]) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=1e-5)
