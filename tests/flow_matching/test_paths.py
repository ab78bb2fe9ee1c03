"""Conditional paths: each target velocity is ∂_t of its path at fixed noise (PAPERS §H.3
item 3), checked by central differences in float64, and the formulas against torchcfm's."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from otkit import flow_matching as fm

RNG = np.random.default_rng(0)
X0, X1, NOISE = (RNG.normal(size=(6, 3)) for _ in range(3))
T = RNG.uniform(0.05, 0.95, 6)
KEY = jax.random.key(0)


@pytest.mark.parametrize("path", fm.PATHS)
@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_target_velocity_is_the_time_derivative_of_the_path(path, sigma):
  point = lambda t: fm.conditional_path(t, X0, X1, NOISE, path=path, sigma=sigma)[0]
  _, u = fm.conditional_path(T, X0, X1, NOISE, path=path, sigma=sigma)
  h = 1e-5
  fd = (point(T + h) - point(T - h)) / (2 * h)
  # Central differences in float64: O(h²) truncation plus rounding ≈ 1e-16 · |x| / h.
  np.testing.assert_allclose(u, fd, rtol=1e-7, atol=1e-8)
  # The same derivative by forward-mode differentiation of the path in t.
  tangent = jax.jvp(point, (jnp.asarray(T),), (jnp.ones(6),))[1]
  np.testing.assert_allclose(u, tangent, rtol=1e-10, atol=1e-12)


def test_paths_match_torchcfms_formulas():
  # torchcfm: SB-CFM's σ_t = σ √(t(1−t)); Lipman's μ_t = t x1, σ_t = 1 − (1 − σ) t; I-CFM's
  # μ_t = t x1 + (1 − t) x0 with σ_t = σ (ConditionalFlowMatcher.compute_mu_t/compute_sigma_t).
  sigma, t = 0.2, T[:, None]
  mu = t * X1 + (1 - t) * X0
  x, _ = fm.conditional_path(T, X0, X1, NOISE, path="linear", sigma=sigma)
  np.testing.assert_allclose(x, mu + sigma * NOISE, rtol=1e-12)
  x, u = fm.conditional_path(T, X0, X1, NOISE, path="schrodinger_bridge", sigma=sigma)
  np.testing.assert_allclose(x, mu + sigma * np.sqrt(t * (1 - t)) * NOISE, rtol=1e-12)
  np.testing.assert_allclose(u, (1 - 2 * t) / (2 * t * (1 - t)) * (x - mu) + X1 - X0, rtol=1e-12)
  x, u = fm.conditional_path(T, X0, X1, NOISE, path="target", sigma=sigma)
  np.testing.assert_allclose(x, t * X1 + (1 - (1 - sigma) * t) * X0, rtol=1e-12)
  np.testing.assert_allclose(u, (X1 - (1 - sigma) * x) / (1 - (1 - sigma) * t), rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sample_path_draws_times_and_points_of_the_path(dtype):
  x0, x1 = X0.astype(dtype), X1.astype(dtype)
  draws = jax.jit(lambda k: {path: fm.sample_path(k, x0, x1, path=path, sigma=0.1)
                             for path in fm.PATHS})(KEY)
  for path, (t, xt, ut) in draws.items():
    chex.assert_shape((xt, ut), x0.shape)
    chex.assert_type((t, xt, ut), dtype)
    low = 1e-4 if path == "schrodinger_bridge" else 0.0
    assert np.all((np.asarray(t) >= low) & (np.asarray(t) <= 1 - low))
    # The drawn point and target are those of the path at the drawn time.
    noise = (xt - ((1 - t[:, None]) * x0 + t[:, None] * x1)) / 0.1
    if path == "linear":
      helpers.assert_trees_close(fm.conditional_path(t, x0, x1, noise, sigma=0.1), (xt, ut),
                                 rtol=1e-4, atol=1e-5)
  # vmap over keys, and given times.
  t, xt, _ = jax.vmap(lambda k: fm.sample_path(k, x0, x1, t=0.5))(jax.random.split(KEY, 3))
  helpers.assert_trees_close(xt[0], 0.5 * (x0 + x1), rtol=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    (dict(sigma=-0.1), "sigma"),
    (dict(sigma=np.nan), "sigma"),
    (dict(path="brownian"), "path"),
    (dict(path="target", sigma=1.0), "sigma"),
    (dict(t=np.ones(2)), "t"),
    (dict(t=1.5), "t"),
])
def test_bad_input_is_named(kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    fm.sample_path(KEY, X0, X1, **kwargs)
