"""Fixed-support barycenters against POT (``ot.bregman.barycenter``, ``barycenter_debiased``,
the plans of ``ot.sinkhorn``) and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit

N = 40
GRID = np.linspace(0.0, 1.0, N)[:, None]
LAMBDAS = np.array([0.2, 0.3, 0.5])
TIGHT = otkit.Sinkhorn(tol=1e-12, max_iters=20000)


def _bump(mean, width, floor=1e-3):
  h = np.exp(-((GRID[:, 0] - mean) / width) ** 2) + floor
  return h / h.sum()


HISTS = np.stack([_bump(0.2, 0.05), _bump(0.5, 0.1), _bump(0.8, 0.04)])
COST = (GRID - GRID.T) ** 2


def _entropic_value(a, b, epsilon):
  """``⟨C, P⟩ + ε KL(P ‖ a⊗b)`` of POT's log-domain plan."""
  plan = ot.sinkhorn(a, b, COST, epsilon, method="sinkhorn_log", stopThr=1e-13,
                     numItermax=100000)
  ab = np.outer(a, b)
  return np.sum(COST * plan) + epsilon * np.sum(plan * np.log(plan / ab) - plan + ab)


def test_matches_pot_on_points_and_on_a_cost_matrix():
  eps = 0.01
  ref = ot.bregman.barycenter(HISTS.T, COST, eps, weights=LAMBDAS, method="sinkhorn_log",
                              numItermax=100000, stopThr=1e-14)
  out = otkit.barycenter(GRID, HISTS, lambdas=LAMBDAS, epsilon=eps, solver=TIGHT)
  assert bool(out.converged) and out.weights.shape == (N,) and out.f.shape == (3, N)
  np.testing.assert_allclose(out.weights, ref, rtol=0, atol=1e-10)
  expected = sum(l * _entropic_value(ref, b, eps) for l, b in zip(LAMBDAS, HISTS))
  np.testing.assert_allclose(out.value, expected, rtol=1e-8)
  # The potentials are those of otkit.solve: the plans have the right marginals.
  for k in range(3):
    plan = helpers.plan(COST, np.asarray(out.weights), HISTS[k], np.asarray(out.f[k]),
                        np.asarray(out.g[k]), eps)
    np.testing.assert_allclose(plan.sum(1), ref, atol=1e-10)
    np.testing.assert_allclose(plan.sum(0), HISTS[k], atol=1e-10)
  dense = otkit.barycenter(otkit.CostMatrix(COST), HISTS, lambdas=LAMBDAS, epsilon=eps,
                           solver=TIGHT)
  np.testing.assert_allclose(dense.weights, ref, rtol=0, atol=1e-10)


def test_measures_on_their_own_supports():
  """Each measure on a permuted copy of the grid: the same barycenter as POT's."""
  rng = np.random.default_rng(0)
  perms = [rng.permutation(N) for _ in range(3)]
  geoms = [otkit.PointCloud(GRID, GRID[p]) for p in perms]
  hists = np.stack([h[p] for h, p in zip(HISTS, perms)])
  out = otkit.barycenter(geoms, hists, lambdas=LAMBDAS, epsilon=0.01, solver=TIGHT)
  ref = ot.bregman.barycenter(HISTS.T, COST, 0.01, weights=LAMBDAS, method="sinkhorn_log",
                              numItermax=100000, stopThr=1e-14)
  np.testing.assert_allclose(out.weights, ref, rtol=0, atol=1e-10)


def test_debiased_runs_pots_iteration():
  """The debiased iteration converges slowly (a deconvolution); sweep for sweep it is POT's:
  ``n`` sweeps and the barycenter of the final state are POT's ``n + 1`` iterations."""
  eps = 0.01
  ref = ot.bregman.barycenter_debiased(HISTS.T, COST, eps, weights=LAMBDAS,
                                       method="sinkhorn_log", numItermax=300, stopThr=0.0,
                                       warn=False)
  out = otkit.barycenter(GRID, HISTS, lambdas=LAMBDAS, epsilon=eps, debiased=True,
                         solver=otkit.Sinkhorn(tol=1e-30, max_iters=299))
  assert int(out.n_iters) == 299 and not bool(out.converged)
  np.testing.assert_allclose(out.weights, ref, rtol=0, atol=1e-10)
  # Debiasing removes the blur: the debiased barycenter is sharper (less entropy).
  plain = otkit.barycenter(GRID, HISTS, lambdas=LAMBDAS, epsilon=eps, solver=TIGHT)
  entropy = lambda w: -float(jnp.sum(w * jnp.log(w)))  # noqa: E731
  assert entropy(out.weights) < entropy(plain.weights)


@pytest.mark.parametrize("epsilon,debiased", [(0.01, False), (0.01, True), (2e-5, False)])
def test_kernel_sweeps_equal_the_log_domain(monkeypatch, epsilon, debiased):
  """float64 on one support: the sweeps are matrix products with the stored kernel; at ε = 2e-5
  the kernel underflows (C/ε up to 5·10⁴) and the sweeps fall back to the log domain. The same
  sweeps (converged or not) give the same state."""
  from otkit.solvers import _kernel

  run = lambda: otkit.barycenter(GRID, HISTS, lambdas=LAMBDAS, epsilon=epsilon,
                                 debiased=debiased, solver=otkit.Sinkhorn(tol=1e-8, max_iters=300))
  products = lambda: str(jax.make_jaxpr(lambda: run())()).count("dot_general")  # a new trace
  with_kernel, fast = products(), run()
  monkeypatch.setattr(_kernel, "fits", lambda geom: False)
  assert products() < with_kernel  # the kernel's matrix products are gone
  slow = run()
  assert int(fast.n_iters) == int(slow.n_iters) and int(fast.result) == int(slow.result)
  np.testing.assert_allclose(fast.weights, slow.weights, rtol=0, atol=1e-12)
  np.testing.assert_allclose(fast.f, slow.f, rtol=0, atol=1e-9 * np.abs(slow.f).max())
  np.testing.assert_allclose(fast.value, slow.value, rtol=1e-10)


def test_kernel_fallback_keeps_gradients_finite_and_equal(monkeypatch):
  """At ε = 2e-5 the kernel's products underflow: its rejected values must not leak NaN into the
  derivatives, which equal those of the log domain alone."""
  from otkit.solvers import _kernel

  def value(hists):
    return otkit.barycenter(GRID, hists, lambdas=LAMBDAS, epsilon=2e-5,
                            solver=otkit.Sinkhorn(tol=1e-8, max_iters=50)).value

  grad = lambda: jax.grad(lambda h: value(h))(jnp.asarray(HISTS))  # a new trace each call
  with_kernel = grad()
  monkeypatch.setattr(_kernel, "fits", lambda geom: False)
  alone = grad()
  assert np.all(np.isfinite(with_kernel))
  np.testing.assert_allclose(with_kernel, alone, rtol=1e-9, atol=1e-12 * np.abs(alone).max())


def test_kernel_path_is_left_under_vmap_and_for_blocked_supports():
  from otkit.solvers import _kernel

  products = lambda fn: str(jax.make_jaxpr(fn)(jnp.asarray(HISTS))).count("dot_general")
  one = lambda h: otkit.barycenter(GRID, h, lambdas=LAMBDAS, epsilon=0.01).weights
  batched = lambda h: jax.vmap(one)(jnp.stack([h, h]))
  blocked = lambda h: otkit.barycenter(GRID, h, lambdas=LAMBDAS, epsilon=0.01,
                                       chunk_size=8).weights
  assert _kernel.fits(otkit.PointCloud(GRID, GRID))
  assert products(batched) < products(one) and products(blocked) < products(one)


def test_gradients_match_finite_differences():
  """In the histograms, λ, the support points and ε (one compiled gradient)."""
  w = np.random.default_rng(0).normal(size=N)

  def loss(hists, lambdas, support=GRID, epsilon=0.01):
    out = otkit.barycenter(support, hists, lambdas=lambdas, epsilon=epsilon, solver=TIGHT)
    return jnp.dot(out.weights, w) + out.value

  g_hists, g_lambdas, g_support, g_eps = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
      HISTS, LAMBDAS, GRID, 0.01)
  rng = np.random.default_rng(1)
  d_hists = rng.normal(size=HISTS.shape) * HISTS  # relative moves, masses kept equal
  d_hists -= HISTS * d_hists.sum(1, keepdims=True)
  d_lambdas = rng.normal(size=3)
  d_lambdas -= d_lambdas.mean()
  helpers.assert_gradient_along(g_hists, lambda t: loss(t, LAMBDAS), HISTS, d_hists, rtol=1e-6)
  helpers.assert_gradient_along(g_lambdas, lambda t: loss(HISTS, t), LAMBDAS, d_lambdas,
                                rtol=1e-6)
  d_support = rng.normal(size=GRID.shape) * 0.01
  helpers.assert_gradient_along(g_support, lambda t: loss(HISTS, LAMBDAS, t), GRID, d_support,
                                rtol=1e-6)
  helpers.assert_gradient_along(g_eps, lambda t: loss(HISTS, LAMBDAS, GRID, t), 0.01, 1.0,
                                h=1e-6, rtol=1e-5)


def test_jit_vmap_and_float32():
  hists = HISTS.astype(np.float32)
  batch = np.stack([hists, hists[::-1]])
  fn = jax.jit(jax.vmap(lambda h: otkit.barycenter(GRID.astype(np.float32), h, epsilon=0.01,
                                                   solver=otkit.Sinkhorn(tol=1e-5))))
  out = fn(batch)
  assert out.weights.dtype == np.float32 and out.weights.shape == (2, N)
  assert bool(jnp.all(out.converged))
  ref = ot.bregman.barycenter(HISTS.T, COST, 0.01, method="sinkhorn_log", numItermax=100000,
                              stopThr=1e-14)
  np.testing.assert_allclose(out.weights[0], ref, atol=1e-5)
  np.testing.assert_allclose(out.weights[1], ref, atol=1e-5)  # uniform λ: order is irrelevant


def test_not_converged_while_annealing():
  """A cap reached before the ε schedule ends is reported, whatever the error there."""
  out = otkit.barycenter(GRID, HISTS, epsilon=1e-3,
                         solver=otkit.Sinkhorn(tol=10.0, max_iters=3, anneal=True))
  assert int(out.n_iters) == 3 and float(out.error) <= 10.0
  assert int(out.result) == int(otkit.Result.MAX_ITERS)


@pytest.mark.parametrize("kwargs, match", [
    (dict(weights_list=np.ones((3, N + 1)) / (N + 1)), "`weights_list`"),
    (dict(weights_list=HISTS[0]), "`weights_list`"),
    (dict(weights_list=np.where(np.arange(N) == 3, np.nan, HISTS)), "`weights_list`"),
    (dict(weights_list=HISTS - 0.05), "negative"),
    (dict(weights_list=HISTS * np.array([[1.0], [1.0], [2.0]])), "masses"),
    (dict(lambdas=np.array([0.5, 0.7, -0.2])), "`lambdas`"),
    (dict(lambdas=np.array([0.2, 0.2, 0.2])), "sum to 1"),
    (dict(lambdas=np.array([0.5, 0.5])), "`lambdas`"),
    (dict(epsilon=0.0), "`epsilon`"),
    (dict(geoms_or_support=np.full((N, 1), np.nan)), "`geoms_or_support`"),
    (dict(geoms_or_support=otkit.CostMatrix(np.ones((N, N + 1)))), "`weights_list`"),
    (dict(geoms_or_support=otkit.CostMatrix(np.ones((N + 1, N))), debiased=True), "square"),
    (dict(solver=otkit.SinkhornNewton()), "`solver`"),
])
def test_bad_inputs(kwargs, match):
  args = dict(geoms_or_support=GRID, weights_list=HISTS, epsilon=0.01)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.barycenter(**args)


# ----------------------------------------------------------------------------- free support


def _exact_cost(points, clouds, weights, lambdas):
  """``Σ_k λ_k W₂²`` between uniform ``points`` and each weighted cloud, by POT's exact EMD."""
  points = np.asarray(points, np.float64)
  a = np.full(len(points), 1 / len(points))
  return sum(l * ot.emd2(a, w, ot.dist(points, y)) for l, y, w in zip(lambdas, clouds, weights))


def _clouds(seed, k=3, m=20):
  rng = np.random.default_rng(seed)
  return np.stack([rng.normal(size=(m, 2)) * (1 + i) + 3 * i for i in range(k)]), rng


def test_free_support_exact_is_pots_iteration():
  ys, rng = _clouds(0)
  x0 = rng.normal(size=(20, 2))
  out = otkit.free_support_barycenter(x0, ys, n_points=20, lambdas=LAMBDAS)
  ref = ot.lp.free_support_barycenter(list(ys), [np.full(20, 0.05)] * 3, x0, weights=LAMBDAS,
                                      numItermax=100, stopThr=1e-7)
  assert bool(out.converged)
  uniform = [np.full(20, 0.05)] * 3
  expected = _exact_cost(ref, ys, uniform, LAMBDAS)
  np.testing.assert_allclose(_exact_cost(out.points, ys, uniform, LAMBDAS), expected, rtol=1e-12)
  np.testing.assert_allclose(out.cost, expected, rtol=1e-12)
  costs = np.asarray(out.costs)[: int(out.n_iters) + 1]
  assert np.all(np.diff(costs) <= 1e-12 * costs[0])  # never increases


def test_free_support_on_digits():
  """Three bundled images of a 3, each as 32 points drawn from its ink, and a barycenter of 32
  points from the same start as POT's."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = digits.images[digits.target == 3][:3]
  rng = np.random.default_rng(0)
  grid = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij"), -1).reshape(-1, 2)
  clouds = np.stack([grid[rng.choice(64, 32, p=im.ravel() / im.sum())] + rng.uniform(-0.5, 0.5, (32, 2))
                     for im in images])
  x0 = clouds[0] + rng.normal(scale=0.1, size=(32, 2))
  out = otkit.free_support_barycenter(x0, clouds, n_points=32)
  ref = ot.lp.free_support_barycenter(list(clouds), [np.full(32, 1 / 32)] * 3, x0,
                                      numItermax=100, stopThr=1e-7)
  uniform, thirds = [np.full(32, 1 / 32)] * 3, np.full(3, 1 / 3)
  assert _exact_cost(out.points, clouds, uniform, thirds) <= (
      _exact_cost(ref, clouds, uniform, thirds) * (1 + 1e-12))


def test_free_support_entropic_with_sizes_and_weights():
  rng = np.random.default_rng(1)
  clouds = [rng.normal(size=(15, 2)), rng.normal(size=(25, 2)) + 2.0]
  weights = [w / w.sum() for w in (rng.uniform(0.5, 1, 15), rng.uniform(0.5, 1, 25))]
  x0 = rng.normal(size=(10, 2)) + 1.0
  out = otkit.free_support_barycenter(x0, clouds, weights, n_points=10, epsilon=1e-3,
                                      solver=otkit.Sinkhorn(tol=1e-6))
  ref = ot.lp.free_support_barycenter(clouds, weights, x0, numItermax=100, stopThr=1e-7)
  halves = np.full(2, 0.5)
  assert _exact_cost(out.points, clouds, weights, halves) <= (
      _exact_cost(ref, clouds, weights, halves) * (1 + 1e-3))


def test_free_support_from_a_key_under_jit():
  ys, _ = _clouds(2, m=12)
  fn = jax.jit(lambda key, ys: otkit.free_support_barycenter(key, ys, n_points=12).points)
  points = fn(jax.random.key(0), ys)
  assert points.shape == (12, 2) and bool(jnp.all(jnp.isfinite(points)))
  # The mean of a barycenter is the λ-average of the means.
  np.testing.assert_allclose(points.mean(0), ys.mean(1).mean(0), atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(xs=np.zeros((3, 20))), "`xs`"),
    (dict(xs=[np.zeros((4, 2)), np.zeros((5, 3))]), "dimension"),
    (dict(n_points=10), "`n_points`"),
    (dict(key_or_init=np.zeros((5, 2))), "`key_or_init`"),
    (dict(lambdas=np.array([0.5, 0.6, -0.1])), "`lambdas`"),
    (dict(weights=np.full((3, 20), 0.05) * np.array([[1.0], [1.0], [2.0]])), "total weights"),
    (dict(epsilon=-1.0), "`epsilon`"),
    (dict(solver=otkit.Sinkhorn()), "`solver`"),
    (dict(n_iters=0), "`n_iters`"),
])
def test_free_support_bad_inputs(kwargs, match):
  ys, rng = _clouds(3)
  args = dict(key_or_init=rng.normal(size=(20, 2)), xs=ys, n_points=20)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.free_support_barycenter(**args)
