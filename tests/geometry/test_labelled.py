"""The label-augmented geometry against the dense augmented cost; solvers and reductions on it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import helpers
import otkit
from otkit.geometry import _reductions as R


def _labelled(rng, n=23, m=17, d=3, k_x=3, k_y=4):
  x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.5
  lx, ly = rng.integers(0, k_x, n), rng.integers(0, k_y, m)
  table = rng.uniform(0.0, 3.0, size=(k_x, k_y))
  return x, lx, y, ly, table


def _dense(x, lx, y, ly, table, fw=1.0, lw=1.0):
  return fw * ((x[:, None] - y[None]) ** 2).sum(-1) + lw * table[lx][:, ly]


def test_cost_matrix_is_feature_cost_plus_label_table(rng, dtype):
  x, lx, y, ly, table = _labelled(rng)
  geom = otkit.LabelledPointCloud(x.astype(dtype), lx, y.astype(dtype), ly, table.astype(dtype),
                                  feature_weight=0.5, label_weight=2.0)
  assert geom.cost_matrix.dtype == dtype and geom.shape == (23, 17)
  tol = 1e-5 if dtype == np.float32 else 1e-12
  np.testing.assert_allclose(geom.cost_matrix, _dense(x, lx, y, ly, table, 0.5, 2.0), rtol=tol,
                             atol=tol)
  np.testing.assert_allclose(geom.transpose().cost_matrix, _dense(x, lx, y, ly, table, 0.5, 2.0).T,
                             rtol=tol, atol=tol)


@pytest.mark.parametrize("chunk_size", [1, 5, 50])
def test_online_reductions_match_dense(chunk_size, rng):
  x, lx, y, ly, table = _labelled(rng)
  C = _dense(x, lx, y, ly, table)
  geom = otkit.LabelledPointCloud(x, lx, y, ly, table, chunk_size=chunk_size)
  h, ht, eps = rng.normal(size=17), rng.normal(size=23), 0.3
  np.testing.assert_allclose(R.lse_rows(geom, h, eps), logsumexp(h[None] - C / eps, axis=1),
                             rtol=1e-12)
  np.testing.assert_allclose(R.lse_rows(geom.transpose(), ht, eps),
                             logsumexp(ht[:, None] - C / eps, axis=0), rtol=1e-12)
  a, b = rng.uniform(size=23), rng.uniform(size=17)
  np.testing.assert_allclose(R.mean_cost(geom, a, b), a @ C @ b / (a.sum() * b.sum()), rtol=1e-12)


def test_sinkhorn_and_plan_functions_equal_the_dense_cost(rng):
  # 14 × 11: the dense reference solve is the compilation of test_sinkhorn.py's CostMatrix test.
  x, lx, y, ly, table = _labelled(rng, n=14, m=11)
  geom = otkit.LabelledPointCloud(x, lx, y, ly, table, chunk_size=4)
  C = _dense(x, lx, y, ly, table)
  ours = otkit.sinkhorn(geom, epsilon=0.2, tol=1e-11)
  ref = otkit.sinkhorn(otkit.CostMatrix(C), epsilon=0.2, tol=1e-11)
  assert bool(ours.converged)
  np.testing.assert_allclose(ours.value, ref.value, rtol=1e-11)
  # The dense cost's plan, in float64 NumPy from the reference potentials.
  u, v = np.full(14, 1 / 14), np.full(11, 1 / 11)
  P = helpers.plan(C, u, v, ref.f, ref.g, 0.2)
  np.testing.assert_allclose(otkit.transport_plan(geom, ours), P, atol=1e-12)
  np.testing.assert_allclose(otkit.apply_plan(geom, ours, y), P @ y, atol=1e-12)
  np.testing.assert_allclose(otkit.transport_cost(geom, ours), np.sum(C * P), rtol=1e-11)


def test_jit_and_gradient_in_the_label_table(rng):
  # 14 × 11: the dense solve is the compilation of test_sinkhorn.py's CostMatrix test.
  x, lx, y, ly, table = _labelled(rng, n=14, m=11, k_x=2, k_y=2)

  @jax.jit
  def value(table, x):
    geom = otkit.LabelledPointCloud(x, lx, y, ly, table)
    return otkit.sinkhorn(geom, epsilon=0.5, tol=1e-12, grad_mode="envelope").value

  def dense_value(table, x):
    return otkit.sinkhorn(otkit.CostMatrix(_dense(x, lx, y, ly, table)), epsilon=0.5, tol=1e-12).value

  np.testing.assert_allclose(value(table, x), dense_value(table, x), rtol=1e-12)
  g_table, g_x = jax.jit(jax.grad(value, argnums=(0, 1)))(jnp.asarray(table), jnp.asarray(x))
  d_table, d_x = rng.normal(size=table.shape), rng.normal(size=x.shape)
  h = 1e-5
  fd_table = (dense_value(table + h * d_table, x) - dense_value(table - h * d_table, x)) / (2 * h)
  fd_x = (dense_value(table, x + h * d_x) - dense_value(table, x - h * d_x)) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(g_table, d_table), fd_table, rtol=1e-6)
  np.testing.assert_allclose(jnp.vdot(g_x, d_x), fd_x, rtol=1e-6)


@pytest.mark.parametrize("change, match", [
    (dict(labels_x=np.zeros(23)), "`labels_x` must hold integer"),
    (dict(labels_y=np.zeros(5, int)), "`labels_y` must have shape"),
    (dict(labels_x=np.full(23, 3)), r"`labels_x` must lie in \[0, 3\)"),
    (dict(label_cost=np.full((3, 4), np.nan)), "`label_cost` contains"),
    (dict(label_cost=np.zeros(3)), "`label_cost` must be"),
    (dict(y=np.zeros((17, 2))), "same dimension"),
    (dict(label_weight=-1.0), "`label_weight`"),
])
def test_bad_geometry_is_reported_by_the_solver(rng, change, match):
  x, lx, y, ly, table = _labelled(rng)
  args = dict(x=x, labels_x=lx, y=y, labels_y=ly, label_cost=table)
  args.update(change)
  with pytest.raises(ValueError, match=match):
    otkit.sinkhorn(otkit.LabelledPointCloud(**args), epsilon=0.1)
