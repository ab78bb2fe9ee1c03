"""Spectral initialisation against NumPy's SVD and the exact identities of PAPERS §B.4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import otkit.nn

P, Q, R = 64, 32, 8


@pytest.fixture
def w0():
  """W₀ ~ N(0, 2/q), shape (64, 32), from default_rng(0): the fixture of PAPERS §B.4."""
  return np.random.default_rng(0).normal(0.0, np.sqrt(2.0 / Q), (P, Q))


def _svd(w):
  a, s, bt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
  return a, s, bt.T


def test_eckart_young_residual(w0):
  u, v = otkit.nn.spectral_init(w0, R)
  s = _svd(w0)[1]
  residual = np.linalg.norm(w0 - np.asarray(u) @ np.asarray(v).T)
  np.testing.assert_allclose(residual, np.sqrt(np.sum(s[R:] ** 2)), rtol=1e-10)
  np.testing.assert_allclose(residual, 7.990993, atol=1e-6)


def test_product_is_numpy_truncated_svd(w0):
  u, v = otkit.nn.spectral_init(w0, R)
  a, s, b = _svd(w0)
  np.testing.assert_allclose(np.asarray(u) @ np.asarray(v).T, (a[:, :R] * s[:R]) @ b[:, :R].T,
                             atol=1e-12)


def test_balanced_factors_keep_top_singular_values(w0):
  u, v = map(np.asarray, otkit.nn.spectral_init(w0, R))
  s = _svd(w0)[1]
  np.testing.assert_allclose(np.linalg.svd(u @ v.T, compute_uv=False)[:R], s[:R], rtol=1e-10)
  np.testing.assert_allclose(u.T @ u, np.diag(s[:R]), atol=1e-12)
  np.testing.assert_allclose(v.T @ v, np.diag(s[:R]), atol=1e-12)


def test_nuclear_norm_equality(w0):
  u, v = map(np.asarray, otkit.nn.spectral_init(w0, R))
  factor_decay = 0.5 * (np.sum(u ** 2) + np.sum(v ** 2))
  nuclear = np.linalg.svd(u @ v.T, compute_uv=False).sum()
  np.testing.assert_allclose(factor_decay, nuclear, rtol=1e-12)
  np.testing.assert_allclose(nuclear, 22.651388, atol=1e-6)


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_exact_on_a_rank_r_target(rank, rng):
  target = rng.normal(size=(20, rank)) @ rng.normal(size=(rank, 12))
  u, v = otkit.nn.spectral_init(target, rank)
  np.testing.assert_allclose(np.asarray(u) @ np.asarray(v).T, target, atol=1e-12)


def test_float32_identities_and_dtype(w0):
  w = w0.astype(np.float32)
  u, v = otkit.nn.spectral_init(w, R)
  assert u.dtype == v.dtype == jnp.float32
  assert u.shape == (P, R) and v.shape == (Q, R)
  s = _svd(w)[1]
  u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
  np.testing.assert_allclose(np.linalg.norm(w - u @ v.T), np.sqrt(np.sum(s[R:] ** 2)), rtol=1e-5)
  np.testing.assert_allclose(u.T @ u, np.diag(s[:R]), atol=1e-5)
  np.testing.assert_allclose(v.T @ v, np.diag(s[:R]), atol=1e-5)


def test_jit_equals_eager(w0):
  eager = otkit.nn.spectral_init(w0, R)
  jitted = jax.jit(lambda w: otkit.nn.spectral_init(w, R))(w0)
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("rank", [0, -1, Q + 1, 2.5, True, None])
def test_bad_rank_raises(w0, rank):
  with pytest.raises(ValueError, match="`rank`"):
    otkit.nn.spectral_init(w0, rank)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_non_matrix_raises(shape):
  with pytest.raises(ValueError, match="`w_full`"):
    otkit.nn.spectral_init(np.ones(shape), 1)


def test_non_finite_raises(w0):
  w0[3, 4] = np.nan
  with pytest.raises(ValueError, match="`w_full`"):
    otkit.nn.spectral_init(w0, R)
