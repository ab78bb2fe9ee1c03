"""Factorised layers against flax's dense layer and convolution with the product kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import otkit.nn

TOL = {np.float32: 1e-6, np.float64: 1e-12}
ZEROS = nnx.initializers.zeros_init()  # oracle layers get the product kernel assigned


def flat_normal(key, shape, dtype):
  """N(0, 1/fan_in) drawn as a matrix: JAX compiles random draws of 3-D+ shapes slowly on CPU."""
  fan_in = int(np.prod(shape[:-1]))
  return jax.random.normal(key, (fan_in, shape[-1]), dtype).reshape(shape) / np.sqrt(fan_in)


@nnx.jit
def apply(module, x):
  return module(x)


@nnx.jit
def full_kernel(module):
  return module.full_kernel()


def n_params(module):
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def assert_close(got, want, dtype):
  """Agreement to TOL, relative to the output scale (outputs are O(1))."""
  scale = max(1.0, float(np.abs(np.asarray(want, np.float64)).max()))
  np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale)


@pytest.mark.parametrize("square", [False, True], ids=["uv", "umv"])
def test_dense_equals_linear_with_product_kernel(square, rng, dtype):
  layer = otkit.nn.FactorizedDense(24, 10, rank=4, square=square, param_dtype=dtype, rngs=nnx.Rngs(1))
  layer.bias[...] = jnp.asarray(rng.normal(size=10), dtype)
  if square:  # a generic middle factor, not the identity it starts from
    layer.m[...] = jnp.asarray(rng.normal(size=(4, 4)), dtype)
  dense = nnx.Linear(24, 10, param_dtype=dtype, kernel_init=ZEROS, rngs=nnx.Rngs(0))
  dense.kernel[...] = full_kernel(layer)
  dense.bias[...] = layer.bias[...]
  x = jnp.asarray(rng.normal(size=(3, 7, 24)), dtype)
  y = apply(layer, x)
  assert y.dtype == dtype and y.shape == (3, 7, 10)
  assert_close(y, apply(dense, x), dtype)


def test_eager_equals_jit(rng):
  layer = otkit.nn.FactorizedDense(24, 10, rank=4, square=True, rngs=nnx.Rngs(1))
  x = jnp.asarray(rng.normal(size=(3, 24)), jnp.float32)
  np.testing.assert_allclose(layer(x), apply(layer, x), rtol=1e-6, atol=1e-6)


CONV_CASES = {
    "same": dict(kernel_size=(3, 3)),
    "stride2": dict(kernel_size=(3, 3), strides=2),
    "valid-rect": dict(kernel_size=(3, 2), padding="VALID", strides=(2, 1)),
    "explicit-dilated": dict(kernel_size=(2, 3), padding=((1, 2), (0, 1)), kernel_dilation=(2, 1)),
    "int-padding": dict(kernel_size=(3, 3), padding=1, strides=(1, 2)),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_equals_conv_with_product_kernel(case, rng, dtype):
  kw = CONV_CASES[case]
  layer = otkit.nn.FactorizedConv(4, 5, rank=3, square=True, init="independent", kernel_init=ZEROS,
                                  param_dtype=dtype, rngs=nnx.Rngs(1), **kw)
  for name in ("u", "m", "v", "bias"):  # generic factors
    param = getattr(layer, name)
    param[...] = jnp.asarray(rng.normal(size=param.shape), dtype)
  conv = nnx.Conv(4, 5, param_dtype=dtype, kernel_init=ZEROS, rngs=nnx.Rngs(0), **kw)
  conv.kernel[...] = full_kernel(layer)
  conv.bias[...] = layer.bias[...]
  x = jnp.asarray(rng.normal(size=(2, 9, 8, 4)), dtype)
  y = apply(layer, x)
  assert y.dtype == dtype
  assert_close(y, apply(conv, x), dtype)


def test_conv_unbatched_and_extra_batch_axes(rng):
  layer = otkit.nn.FactorizedConv(3, 2, 3, rank=2, kernel_init=flat_normal, rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.normal(size=(2, 4, 6, 6, 3)), jnp.float32)
  y = apply(layer, x)
  assert y.shape == (2, 4, 6, 6, 2)
  np.testing.assert_allclose(apply(layer, x[1, 2]), y[1, 2], atol=1e-6)


def test_conv_kernel_matrix_layout(rng):
  kernel = rng.normal(size=(3, 2, 4, 5))
  w = np.asarray(otkit.nn.conv_kernel_matrix(kernel))
  a, b, i, o = 2, 1, 3, 4
  assert w.shape == (3 * 4, 2 * 5)
  assert w[a * 4 + i, b * 5 + o] == kernel[a, b, i, o]


@pytest.mark.parametrize("square", [False, True])
def test_parameter_counts(square):
  m = 1 if square else 0
  dense = otkit.nn.FactorizedDense(64, 256, rank_scale=0.25, square=square, init="independent",
                                   kernel_init=ZEROS, rngs=nnx.Rngs(0))
  assert dense.rank == 16
  assert n_params(dense) == 16 * (64 + 256) + m * 16 ** 2 + 256
  conv = otkit.nn.FactorizedConv(16, 32, (3, 5), rank=12, square=square, init="independent",
                                 kernel_init=ZEROS, rngs=nnx.Rngs(0))
  assert n_params(conv) == 12 * (3 * 16 + 5 * 32) + m * 12 ** 2 + 32
  bare = otkit.nn.FactorizedDense(10, 6, rank=2, use_bias=False, init="independent",
                                  kernel_init=ZEROS, rngs=nnx.Rngs(0))
  assert n_params(bare) == 2 * 16
  assert n_params(nnx.Linear(64, 256, kernel_init=ZEROS, rngs=nnx.Rngs(0))) == 64 * 256 + 256


def _truncated(w, rank):
  a, s, bt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
  return (a[:, :rank] * s[:rank]) @ bt[:rank]


def test_dense_spectral_init_is_svd_of_full_init():
  shape, rank = (48, 20), 5
  init = nnx.initializers.he_normal()
  layer = otkit.nn.FactorizedDense(*shape, rank=rank, kernel_init=init, param_dtype=jnp.float64,
                                   rngs=nnx.Rngs(3))
  w0 = init(nnx.Rngs(3).params(), shape, jnp.float64)
  np.testing.assert_allclose(layer.full_kernel(), _truncated(w0, rank), atol=1e-12)
  u, v = np.asarray(layer.u[...]), np.asarray(layer.v[...])
  np.testing.assert_allclose(u.T @ u, v.T @ v, atol=1e-12)


def test_conv_spectral_init_is_svd_of_full_init():
  shape, rank = (3, 3, 4, 6), 5
  layer = otkit.nn.FactorizedConv(4, 6, 3, rank=rank, kernel_init=flat_normal,
                                  param_dtype=jnp.float64, rngs=nnx.Rngs(3))
  k0 = flat_normal(nnx.Rngs(3).params(), shape, jnp.float64)
  np.testing.assert_allclose(otkit.nn.conv_kernel_matrix(layer.full_kernel()),
                             _truncated(otkit.nn.conv_kernel_matrix(k0), rank), atol=1e-12)


def test_independent_init_keeps_the_kernel_scale():
  """Two stacked LeCun-normal layers: Var(U Vᵀ) ≈ 1/in like a full LeCun-normal kernel."""
  layer = otkit.nn.FactorizedDense(128, 128, rank=32, init="independent", rngs=nnx.Rngs(0))
  np.testing.assert_allclose(np.var(np.asarray(full_kernel(layer))), 1.0 / 128, rtol=0.1)


def test_factorize_dense_is_eckart_young(rng):
  dense = nnx.Linear(12, 9, param_dtype=jnp.float64, bias_init=nnx.initializers.normal(1.0),
                     rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.normal(size=(5, 12)))
  full = otkit.nn.factorize_dense(dense, rank_scale=1.0, square=True)
  assert full.u.dtype == jnp.float64 and full.m.shape == (9, 9)
  np.testing.assert_allclose(apply(full, x), apply(dense, x), atol=1e-12)
  small = otkit.nn.factorize_dense(dense, rank=3)
  np.testing.assert_allclose(small.full_kernel(), _truncated(dense.kernel[...], 3), atol=1e-12)
  np.testing.assert_allclose(small.bias[...], dense.bias[...])


def test_factorize_conv_at_full_rank(rng):
  conv = nnx.Conv(3, 4, (3, 3), strides=2, padding="VALID", param_dtype=jnp.float64,
                  kernel_init=flat_normal, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.normal(size=(2, 9, 9, 3)))
  full = otkit.nn.factorize_conv(conv, rank=9)  # truncation: test_conv_spectral_init_is_svd_of_full_init
  np.testing.assert_allclose(apply(full, x), apply(conv, x), atol=1e-12)
  np.testing.assert_allclose(full.bias[...], conv.bias[...])
  assert (full.strides, full.padding, full.rank) == ((2, 2), "VALID", 9)


def test_compute_dtype_and_param_dtype():
  layer = otkit.nn.FactorizedDense(24, 10, rank=4, dtype=jnp.bfloat16, rngs=nnx.Rngs(1))
  assert layer.u.dtype == jnp.float32
  assert apply(layer, jnp.ones((2, 24), jnp.float32)).dtype == jnp.bfloat16
  conv = otkit.nn.FactorizedConv(2, 3, 3, rank=2, param_dtype=jnp.float64, kernel_init=flat_normal,
                                 rngs=nnx.Rngs(0))
  assert conv.u.dtype == jnp.float64
  assert apply(conv, jnp.ones((1, 4, 4, 2), jnp.float32)).dtype == jnp.float64


@pytest.mark.parametrize("kwargs, name", [
    (dict(rank=0), "`rank`"), (dict(rank=9), "`rank`"), (dict(rank=2.0), "`rank`"),
    (dict(rank_scale=0.0), "`rank_scale`"), (dict(rank_scale=1.5), "`rank_scale`"),
    (dict(), "exactly one"), (dict(rank=2, rank_scale=0.5), "exactly one"),
    (dict(rank=2, init="svd"), "`init`"),
])
def test_dense_bad_arguments_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    otkit.nn.FactorizedDense(16, 8, rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(rank=13), "`rank`"), (dict(rank=2, padding="CIRCULAR"), "`padding`"),
    (dict(rank=2, strides=0), "`strides`"), (dict(rank=2, kernel_size=(3, 3, 3)), "`kernel_size`"),
])
def test_conv_bad_arguments_raise(kwargs, name):
  kwargs = {"kernel_size": 3, **kwargs}
  with pytest.raises(ValueError, match=name):
    otkit.nn.FactorizedConv(4, 6, rngs=nnx.Rngs(0), **kwargs)


def test_factorize_rejects_other_layers():
  conv = nnx.Conv(2, 2, 3, kernel_init=ZEROS, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="`layer`"):
    otkit.nn.factorize_dense(conv, rank=1)
  with pytest.raises(ValueError, match="`layer`"):
    otkit.nn.factorize_conv(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), rank=1)
  with pytest.raises(ValueError, match="`rank`"):
    otkit.nn.factorize_dense(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), rank=4)
