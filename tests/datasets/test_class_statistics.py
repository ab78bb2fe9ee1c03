"""Class statistics by segment sums against NumPy, padded class members."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import otkit
from otkit.datasets import _statistics as ST


def _data(rng, dtype=np.float64):
  x = rng.normal(size=(30, 3)).astype(dtype)
  labels = np.array([4] * 12 + [9] * 17 + [-2])  # -2 has a single sample
  return x, labels


def test_matches_numpy_and_a_single_sample_has_zero_covariance(rng, dtype):
  x, labels = _data(rng, dtype)
  stats = otkit.class_statistics(x, labels)
  assert stats.classes == (-2, 4, 9)
  assert stats.means.dtype == dtype and stats.covs.shape == (3, 3, 3)
  tol = 1e-5 if dtype == np.float32 else 1e-12
  for k, c in enumerate(stats.classes):
    members = x[labels == c].astype(np.float64)
    np.testing.assert_allclose(stats.counts[k], len(members))
    np.testing.assert_allclose(stats.means[k], members.mean(0), rtol=tol, atol=tol)
    expected = np.cov(members.T, bias=True) if len(members) > 1 else np.zeros((3, 3))
    np.testing.assert_allclose(stats.covs[k], expected, rtol=tol, atol=tol)


def test_jit_with_traced_labels_and_gradient(rng):
  x, labels = _data(rng)
  codes = np.searchsorted([-2, 4, 9], labels)
  fn = jax.jit(lambda x, codes: otkit.class_statistics(x, codes, num_classes=3).covs)
  np.testing.assert_allclose(fn(x, codes), otkit.class_statistics(x, labels).covs, rtol=1e-12)
  # d tr Σ_k / dx_i = 2 (x_i − μ_k) / n_k for the members of class k.
  grad = jax.grad(lambda x: jnp.trace(fn(x, codes)[2]))(jnp.asarray(x))
  members = labels == 9
  np.testing.assert_allclose(grad[members], 2 * (x[members] - x[members].mean(0)) / 17, rtol=1e-10)
  np.testing.assert_allclose(grad[~members], 0.0)


def test_class_members_pads_each_class(rng):
  labels = jnp.array([2, 0, 2, 2, 1, 0])
  index, member = ST.class_members(labels, 3, 4)
  assert index.shape == member.shape == (3, 4)
  np.testing.assert_array_equal(member.sum(1), [2, 1, 3])
  for k in range(3):
    np.testing.assert_array_equal(np.sort(index[k][member[k]]), np.flatnonzero(labels == k))


@pytest.mark.parametrize("kwargs, match", [
    (dict(labels=np.zeros(30)), "must hold integer"),
    (dict(labels=np.zeros(29, int)), r"shape \(30,\)"),
    (dict(num_classes=4, labels=np.arange(30) % 3), "class 3 of `labels` has no samples"),
    (dict(x=np.full((30, 3), np.inf)), "`x` contains"),
])
def test_bad_inputs(rng, kwargs, match):
  x, labels = _data(rng)
  args = dict(x=x, labels=labels)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.class_statistics(**args)
