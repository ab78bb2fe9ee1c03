"""Sinkhorn divergence against ott-jax and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.geometry import pointcloud
from ott.tools import sinkhorn_divergence as ott_divergence

import otkit


def _clouds(seed=0, n=40, m=30):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 2))
  y = rng.normal(size=(m, 2)) * 0.8 + 1.0
  a, b = rng.uniform(0.3, 1, n), rng.uniform(0.3, 1, m)
  return x, y, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("epsilon", [0.05, 1.0])
def test_matches_ott_jax(epsilon):
  x, y, a, b = _clouds()
  ours = otkit.sinkhorn_divergence(x, y, a, b, epsilon=epsilon, tol=1e-11, max_iters=20000)
  _, ref = ott_divergence.sinkhorn_divergence(
      pointcloud.PointCloud, jnp.asarray(x), jnp.asarray(y), a=jnp.asarray(a), b=jnp.asarray(b),
      epsilon=epsilon, solve_kwargs=dict(threshold=1e-11, max_iterations=20000))
  assert bool(ours.converged)
  np.testing.assert_allclose(ours.value, ref.divergence, rtol=1e-8)


def test_is_zero_between_identical_measures_and_positive_otherwise():
  x, y, a, b = _clouds()
  same = otkit.sinkhorn_divergence(x, x, a, a, epsilon=0.1, tol=1e-5, max_iters=20000)
  assert bool(same.converged)
  assert abs(float(same.value)) < 1e-6 * float(same.xy.value)
  np.testing.assert_allclose(same.xx.f, same.xx.g)
  assert float(otkit.sinkhorn_divergence(x, y, a, b, epsilon=0.1).value) > 0


@pytest.mark.parametrize("mode", ["envelope", "implicit"])
def test_gradient_matches_finite_differences(mode):
  x, y, a, b = _clouds(n=15, m=12)

  def value(x, a):
    return otkit.sinkhorn_divergence(x, y, a, b, epsilon=0.2, tol=1e-12, max_iters=5000,
                                     grad_mode=mode).value

  rng = np.random.default_rng(5)
  dx, da = rng.normal(size=x.shape), rng.normal(size=a.shape)
  da -= da.mean()
  gx, ga = jax.grad(value, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(a))
  h = 1e-5
  fd_x = (value(x + h * dx, a) - value(x - h * dx, a)) / (2 * h)
  fd_a = (value(x, a + h * da) - value(x, a - h * da)) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(gx, dx), fd_x, rtol=1e-5)
  np.testing.assert_allclose(jnp.vdot(ga, da), fd_a, rtol=1e-5)


def test_vmap_jit_and_float32(dtype):
  clouds = [_clouds(s, n=20, m=20) for s in range(4)]
  xs = np.stack([c[0] for c in clouds]).astype(dtype)
  ys = np.stack([c[1] for c in clouds]).astype(dtype)
  fn = jax.jit(jax.vmap(lambda x, y: otkit.sinkhorn_divergence(x, y, epsilon=0.1).value))
  values = fn(xs, ys)
  assert values.dtype == dtype
  tol = 1e-4 if dtype == np.float32 else 1e-10
  for i in range(4):
    single = otkit.sinkhorn_divergence(xs[i], ys[i], epsilon=0.1).value
    np.testing.assert_allclose(values[i], single, rtol=tol)


@pytest.mark.parametrize("kwargs, match", [
    (dict(y=np.zeros((5, 3))), "`y`"),
    (dict(x=np.full((4, 2), np.nan)), "`x`"),
    (dict(epsilon=0.0), "`epsilon`"),
    (dict(a=np.full(4, -0.25)), "`a`"),
    (dict(b=np.full(5, 0.5)), "mass"),
])
def test_bad_inputs(kwargs, match):
  args = dict(x=np.zeros((4, 2)), y=np.ones((5, 2)), epsilon=0.1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.sinkhorn_divergence(**args)
