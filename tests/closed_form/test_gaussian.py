"""Gaussian (Bures–Wasserstein) distance, map and barycentre against POT, exact OT between
samples, closed forms and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit


def _cov(rng, d, rank=None, scale=1.0):
  f = rng.normal(size=(d, d if rank is None else rank)) * scale
  return f @ f.T


def _pair(seed, d, ranks=(None, None)):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=d), _cov(rng, d, ranks[0]), rng.normal(size=d) + 1.0,
          _cov(rng, d, ranks[1], 0.7))


def _sym(rng, shape):
  t = rng.normal(size=shape)
  return t + np.swapaxes(t, -1, -2) if t.ndim >= 2 else t


@pytest.mark.parametrize("d", [1, 3, 10])
def test_w2_matches_pot(d):
  for seed in range(3):
    m0, c0, m1, c1 = _pair(seed, d)
    expected = ot.gaussian.bures_wasserstein_distance(m0, m1, c0, c1) ** 2
    np.testing.assert_allclose(otkit.gaussian_w2(m0, c0, m1, c1), expected, rtol=1e-8)


def test_w2_closed_forms():
  m0, m1 = np.zeros(3), np.array([1.0, 2.0, 0.0])
  c0, c1 = np.diag([1.0, 4.0, 0.0]), np.diag([9.0, 0.0, 1.0])
  # commuting covariances: Σ (√λ₀ − √λ₁)²
  np.testing.assert_allclose(otkit.gaussian_w2(m0, c0, m1, c1), 5.0 + 4.0 + 4.0 + 1.0, atol=1e-12)
  np.testing.assert_allclose(otkit.gaussian_w2(m0, c0, m0, c0), 0.0, atol=1e-12)


def test_w2_equals_exact_ot_between_1d_samples():
  rng = np.random.default_rng(0)
  n = 100_000
  x, y = rng.normal(size=n) * 1.3 - 0.5, rng.normal(size=n) * 0.6 + 1.0
  expected = otkit.gaussian_w2(np.array([-0.5]), np.array([[1.69]]), np.array([1.0]),
                               np.array([[0.36]]))
  sampled = ot.emd2_1d(x, y)
  # the sample-to-sample W₂² fluctuates by O(n^{-1/2}) around the population value
  np.testing.assert_allclose(sampled, expected, rtol=1e-2)


def test_w2_of_sample_moments_is_the_gelbrich_lower_bound_of_exact_ot():
  rng = np.random.default_rng(1)
  n = 1500
  f0, f1 = np.array([[1.0, 0.0], [0.5, 0.8]]), np.array([[1.5, 0.3], [0.0, 0.5]])
  x = rng.normal(size=(n, 2)) @ f0.T
  y = rng.normal(size=(n, 2)) @ f1.T + 1.0
  sampled = ot.emd2([], [], ot.dist(x, y), numItermax=10**7)
  population = otkit.gaussian_w2(np.zeros(2), f0 @ f0.T, np.ones(2), f1 @ f1.T)
  moments = otkit.gaussian_w2(x.mean(0), np.cov(x.T, bias=True), y.mean(0), np.cov(y.T, bias=True))
  # W₂ between two measures is at least W₂ between Gaussians with their moments (Gelbrich); over
  # 20 seeds the gap was 0.55–0.81 %, and the gap to the population value −6 % to +14 %
  assert 0.0 <= sampled / moments - 1.0 <= 0.02
  np.testing.assert_allclose(sampled, population, rtol=0.25)


def _check_grads(f, args, seed=0, rtol=1e-6):
  rng = np.random.default_rng(seed)
  tangents = [_sym(rng, np.shape(t)) for t in args]
  grads = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)  # one compiled program
  h = 1e-6
  plus = f(*(t + h * dt for t, dt in zip(args, tangents)))
  minus = f(*(t - h * dt for t, dt in zip(args, tangents)))
  directional = sum(jnp.vdot(g, dt) for g, dt in zip(grads, tangents))
  np.testing.assert_allclose(directional, (plus - minus) / (2 * h), rtol=rtol)


def test_w2_gradients_match_finite_differences():
  _check_grads(otkit.gaussian_w2, _pair(3, 4))


def test_w2_gradients_are_finite_for_singular_covariances():
  d = 4
  rng = np.random.default_rng(4)
  singular = [np.zeros((d, d)), np.eye(d), _cov(rng, d, 1), _cov(rng, d, 2),
              np.diag([1.0, 1e-12, 0.0, 3.0])]
  m0, m1 = np.zeros(d), np.ones(d)
  grad = jax.jit(jax.grad(otkit.gaussian_w2, argnums=(0, 1, 2, 3)))
  for c0 in singular:
    for c1 in singular:
      grads = grad(m0, c0, m1, c1)
      assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
  # the gradient in C₀ is I − A with A the map; along the range of C₀ it is the true one
  c0, c1 = _cov(rng, d, 2), _cov(rng, d)
  a, _ = otkit.gaussian_map(m0, c0, m1, c1)
  np.testing.assert_allclose(grad(m0, c0, m1, c1)[1], np.eye(d) - a, atol=1e-8)


def test_map_pushes_forward_and_matches_pot():
  m0, c0, m1, c1 = _pair(5, 5)
  a, b = otkit.gaussian_map(m0, c0, m1, c1)
  np.testing.assert_allclose(a, a.T, atol=1e-12)
  np.testing.assert_allclose(a @ c0 @ a, c1, atol=1e-9)
  np.testing.assert_allclose(a @ m0 + b, m1, atol=1e-12)
  pot_a, pot_b = ot.gaussian.bures_wasserstein_mapping(m0, m1, c0, c1)
  np.testing.assert_allclose(a, pot_a, atol=1e-9)
  np.testing.assert_allclose(b, np.ravel(pot_b), atol=1e-9)
  # the map's transport cost is W₂²
  rng = np.random.default_rng(0)
  x = rng.multivariate_normal(m0, c0, size=200_000)
  cost = np.mean(np.sum((x @ np.asarray(a).T + b - x) ** 2, axis=1))
  np.testing.assert_allclose(cost, otkit.gaussian_w2(m0, c0, m1, c1), rtol=2e-2)


def test_map_gradients():
  m0, c0, m1, c1 = _pair(6, 3)
  _check_grads(lambda *args: jnp.sum(jnp.sin(otkit.gaussian_map(*args)[0])), (m0, c0, m1, c1))
  for c in (np.eye(3), np.diag([2.0, 0.0, 0.0])):
    g = jax.grad(lambda c0, c1: jnp.sum(otkit.gaussian_map(m0, c0, m1, c1)[0]), argnums=(0, 1))(
        c, c)
    assert all(bool(jnp.all(jnp.isfinite(t))) for t in g)


def test_vmap_jit_and_dtype(dtype):
  pairs = [_pair(s, 3) for s in range(4)]
  args = [np.stack([p[i] for p in pairs]).astype(dtype) for i in range(4)]
  values = jax.jit(jax.vmap(otkit.gaussian_w2))(*args)
  a, b = jax.vmap(otkit.gaussian_map)(*args)
  assert values.dtype == dtype and a.dtype == dtype and a.shape == (4, 3, 3)
  tol = 2e-4 if dtype == np.float32 else 1e-10
  for i in range(4):
    p64 = [np.float64(t[i]) for t in args]
    expected = ot.gaussian.bures_wasserstein_distance(p64[0], p64[2], p64[1], p64[3]) ** 2
    np.testing.assert_allclose(values[i], expected, rtol=tol)
    np.testing.assert_allclose(a[i] @ p64[1] @ a[i], p64[3], rtol=tol, atol=tol)
  grads = jax.grad(lambda c0: jnp.sum(jax.vmap(otkit.gaussian_w2)(args[0], c0, *args[2:])))(
      args[1])
  assert grads.dtype == dtype and bool(jnp.all(jnp.isfinite(grads)))


def _gaussians(seed, k, d):
  rng = np.random.default_rng(seed)
  w = rng.uniform(0.2, 1.0, k)
  return rng.normal(size=(k, d)), np.stack([_cov(rng, d) + 0.1 * np.eye(d) for _ in range(k)]), \
      w / w.sum()


def test_barycenter_matches_pot_and_is_a_fixed_point():
  means, covs, w = _gaussians(7, 4, 3)
  bar = otkit.gaussian_barycenter(means, covs, w)
  assert bool(bar.converged) and int(bar.n_iters) < 100
  assert int(bar.result) == otkit.Result.CONVERGED and otkit.check(bar) is bar
  pot_mean, pot_cov = ot.gaussian.bures_wasserstein_barycenter(means, covs, w, num_iter=1000,
                                                               eps=1e-14)
  np.testing.assert_allclose(bar.mean, pot_mean, atol=1e-12)
  np.testing.assert_allclose(bar.cov, pot_cov, atol=1e-9)
  # optimality: the maps from the barycentre average to the identity
  maps = [otkit.gaussian_map(bar.mean, bar.cov, m, c)[0] for m, c in zip(means, covs)]
  np.testing.assert_allclose(sum(wk * a for wk, a in zip(w, maps)), np.eye(3), atol=1e-9)


def test_barycenter_of_commuting_covariances():
  covs = np.stack([np.diag([1.0, 4.0, 0.0]), np.diag([9.0, 0.0, 1.0]), np.diag([4.0, 1.0, 1.0])])
  w = np.array([0.5, 0.25, 0.25])
  bar = otkit.gaussian_barycenter(np.zeros((3, 3)), covs, w)
  expected = np.diag(np.einsum("k,ki->i", w, np.sqrt(np.diagonal(covs, axis1=1, axis2=2))) ** 2)
  np.testing.assert_allclose(bar.cov, expected, atol=1e-10)


def test_barycenter_gradients_are_implicit_and_match_finite_differences():
  means, covs, w = _gaussians(8, 3, 3)

  def f(means, covs, w):
    bar = otkit.gaussian_barycenter(means, covs, w)
    return jnp.sum(jnp.sin(bar.cov)) + jnp.sum(bar.mean ** 2)

  _check_grads(f, (means, covs, w), rtol=1e-5)


def test_barycenter_vmap_jit_and_dtype(dtype):
  problems = [_gaussians(s, 3, 2) for s in range(3)]
  means, covs, w = (np.stack([p[i] for p in problems]).astype(dtype) for i in range(3))
  bars = jax.jit(jax.vmap(otkit.gaussian_barycenter))(means, covs, w)
  assert bars.cov.dtype == dtype and bars.cov.shape == (3, 2, 2) and bool(jnp.all(bars.converged))
  grads = jax.grad(lambda c: jnp.sum(jax.vmap(otkit.gaussian_barycenter)(means, c, w).cov))(covs)
  assert grads.dtype == dtype and bool(jnp.all(jnp.isfinite(grads)))
  tol = 1e-4 if dtype == np.float32 else 1e-9
  for i in range(3):
    _, ref = ot.gaussian.bures_wasserstein_barycenter(*(np.float64(t[i]) for t in
                                                         (means, covs, w)), num_iter=1000,
                                                      eps=1e-14)
    np.testing.assert_allclose(bars.cov[i], ref, rtol=tol, atol=tol)


def test_no_recompile_on_second_call():
  m0, c0, m1, c1 = _pair(9, 3)
  first = otkit.gaussian_w2(m0, c0, m1, c1)
  with helpers.compilations() as compiled:  # eager, new data of the same shapes
    second = otkit.gaussian_w2(m1, c1, m0, c0)
  assert not compiled
  expected = ot.gaussian.bures_wasserstein_distance(m0, m1, c0, c1) ** 2
  np.testing.assert_allclose([first, second], [expected, expected], rtol=1e-8)
  fn = helpers.traced_once(otkit.gaussian_w2)  # under jit: one trace for both
  np.testing.assert_allclose([fn(m0, c0, m1, c1), fn(m1, c1, m0, c0)], [first, second],
                             rtol=1e-12)


def test_barycenter_result_codes():
  means, covs, w = _gaussians(7, 4, 3)
  capped = otkit.gaussian_barycenter(means, covs, w, max_iters=1)
  assert int(capped.result) == otkit.Result.MAX_ITERS and not bool(capped.converged)
  with pytest.raises(RuntimeError, match="MAX_ITERS"):
    otkit.check(capped)
  nan = jax.jit(otkit.gaussian_barycenter)(means, jnp.asarray(covs).at[0, 0, 0].set(jnp.nan), w)
  assert int(nan.result) == otkit.Result.NON_FINITE
  with pytest.raises(RuntimeError, match="NON_FINITE"):
    otkit.check(nan)


@pytest.mark.parametrize("kwargs, match", [
    (dict(m0=np.zeros((2, 2))), "`m0`"),
    (dict(m1=np.zeros(3)), "`m1`"),
    (dict(C0=np.zeros((2, 3))), "`C0`"),
    (dict(C1=np.eye(3)), "`C1`"),
    (dict(C0=np.array([[1.0, 0.5], [0.0, 1.0]])), "symmetric"),
    (dict(C1=np.diag([1.0, -1.0])), "positive semi-definite"),
    (dict(C0=np.array([[np.nan, 0.0], [0.0, 1.0]])), "`C0`"),
    (dict(m1=np.array([np.inf, 0.0])), "`m1`"),
])
@pytest.mark.parametrize("fn", [otkit.gaussian_w2, otkit.gaussian_map])
def test_bad_inputs(fn, kwargs, match):
  args = dict(m0=np.zeros(2), C0=np.eye(2), m1=np.ones(2), C1=np.eye(2))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    fn(args["m0"], args["C0"], args["m1"], args["C1"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(means=np.zeros(2)), "`means`"),
    (dict(covs=np.stack([np.eye(2)] * 2)), "`covs`"),
    (dict(covs=np.stack([np.eye(2), np.diag([1.0, -2.0]), np.eye(2)])), "`covs`"),
    (dict(weights=np.array([0.5, 0.7, -0.2])), "`weights`"),
    (dict(weights=np.ones(2)), "`weights`"),
    (dict(max_iters=0), "`max_iters`"),
    (dict(tol=-1.0), "`tol`"),
])
def test_barycenter_bad_inputs(kwargs, match):
  args = dict(means=np.zeros((3, 2)), covs=np.stack([np.eye(2)] * 3), weights=None)
  options = {k: kwargs.pop(k) for k in ("max_iters", "tol") if k in kwargs}
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.gaussian_barycenter(**args, **options)
