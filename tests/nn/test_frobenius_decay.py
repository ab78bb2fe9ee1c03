"""Frobenius decay against `jax.grad` of the penalty on the product, finite differences and PAPERS §B.4."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import otkit.nn
from otkit.nn import _frobenius

P, Q, R = 64, 32, 8


def product_penalty(u, v, m=None):
  """The oracle: ½‖U M Vᵀ‖_F² with the product formed explicitly."""
  w = u @ v.T if m is None else u @ m @ v.T
  return 0.5 * jnp.sum(w ** 2)


@jax.jit
def oracle_grads(factors):
  return jax.grad(lambda f: product_penalty(**f))(factors)


@jax.jit
def decay_increment(params, coeff=1.0):
  """What `frobenius_decay` adds to zero updates."""
  tx = otkit.nn.frobenius_decay(coeff)
  zeros = jax.tree.map(jnp.zeros_like, params)
  return tx.update(zeros, tx.init(params), params)[0]


def eager_decay_increment(params, coeff):
  tx = otkit.nn.frobenius_decay(coeff)
  return tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)[0]


def random_factors(rng, dtype, square, batch=()):
  factors = {"u": rng.normal(size=batch + (P, R)), "v": rng.normal(size=batch + (Q, R))}
  if square:
    factors["m"] = rng.normal(size=batch + (R, R))
  return {k: jnp.asarray(x, dtype) for k, x in factors.items()}


@pytest.fixture
def si_factors():
  w0 = np.random.default_rng(0).normal(0.0, np.sqrt(2.0 / Q), (P, Q))
  return otkit.nn.spectral_init(w0, R)


@pytest.mark.parametrize("square", [False, True], ids=["uv", "umv"])
def test_penalty_matches_product(square, rng, dtype):
  f = random_factors(rng, dtype, square)
  tol = 1e-5 if dtype == np.float32 else 1e-12
  np.testing.assert_allclose(otkit.nn.frobenius_penalty(**f), product_penalty(**f), rtol=tol)


@pytest.mark.parametrize("square", [False, True], ids=["uv", "umv"])
def test_decay_gradient_equals_jax_grad(square, rng, dtype):
  f = random_factors(rng, dtype, square)
  increment = decay_increment(f, coeff=0.3)
  expected = oracle_grads(f)
  tol = 1e-5 if dtype == np.float32 else 1e-7  # float32: relative to the largest entry
  for name in f:
    assert increment[name].dtype == dtype
    want = 0.3 * np.asarray(expected[name], np.float64)
    atol = tol * np.abs(want).max() if dtype == np.float32 else 0.0
    np.testing.assert_allclose(increment[name], want, rtol=tol, atol=atol)


def test_decay_gradient_matches_central_difference(si_factors, rng):
  u, v = si_factors
  grad = decay_increment({"u": u, "v": v})
  du, dv = rng.normal(size=u.shape), rng.normal(size=v.shape)
  h = 1e-5
  fd = (product_penalty(u + h * du, v + h * dv) - product_penalty(u - h * du, v - h * dv)) / (2 * h)
  directional = jnp.sum(grad["u"] * du) + jnp.sum(grad["v"] * dv)
  np.testing.assert_allclose(directional, fd, rtol=1e-7)


def test_rescaling_invariance(si_factors):
  u, v = si_factors
  c = 3.0

  def factor_decay(u, v):
    return 0.5 * (jnp.sum(u ** 2) + jnp.sum(v ** 2))

  np.testing.assert_allclose(otkit.nn.frobenius_penalty(c * u, v / c), otkit.nn.frobenius_penalty(u, v),
                             rtol=1e-12)
  np.testing.assert_allclose(otkit.nn.frobenius_penalty(u, v), 32.303898, atol=1e-6)
  np.testing.assert_allclose(factor_decay(u, v), 22.651388, atol=1e-6)
  np.testing.assert_allclose(factor_decay(c * u, v / c), 0.5 * (c ** 2 + c ** -2) * 22.651388,
                             atol=1e-5)
  np.testing.assert_allclose(factor_decay(c * u, v / c), 103.19, atol=5e-3)


def test_batched_factors_match_slices(rng):
  f = random_factors(rng, np.float64, True, batch=(3,))
  increment = decay_increment(f)
  for i in range(3):
    expected = oracle_grads({k: x[i] for k, x in f.items()})
    for name in f:
      np.testing.assert_allclose(increment[name][i], expected[name], rtol=1e-10)


def test_only_factor_pairs_are_decayed(rng):
  params = {
      "layer": {"u": jnp.asarray(rng.normal(size=(4, 2))), "v": jnp.asarray(rng.normal(size=(3, 2))),
                "bias": jnp.ones(3)},
      "lonely": {"u": jnp.ones((4, 2)), "kernel": jnp.ones((4, 4))},
      "u": {"kernel": jnp.ones((4, 2))}, "v": {"kernel": jnp.ones((3, 2))},  # modules named u, v
      "list": [{"u": jnp.asarray(rng.normal(size=(5, 1))), "v": jnp.asarray(rng.normal(size=(6, 1)))}],
  }
  increment = decay_increment(params)
  for name in ("u", "v"):
    np.testing.assert_allclose(increment["layer"][name], oracle_grads(
        {k: params["layer"][k] for k in ("u", "v")})[name], rtol=1e-12)
  np.testing.assert_allclose(increment["list"][0]["u"], oracle_grads(params["list"][0])["u"], rtol=1e-12)
  for leaf in (increment["layer"]["bias"], increment["lonely"]["u"], increment["lonely"]["kernel"],
               increment["u"]["kernel"], increment["v"]["kernel"]):
    assert not np.any(leaf)
  mask = otkit.nn.factor_mask(params)
  assert mask["layer"] == {"bias": False, "u": True, "v": True}
  assert mask["lonely"] == {"kernel": False, "u": False}


def flat_normal(key, shape, dtype):
  """N(0, 0.1) drawn flat: JAX compiles random draws of 3-D+ shapes slowly on CPU."""
  return 0.3 * jax.random.normal(key, (int(np.prod(shape)),), dtype).reshape(shape)


class Net(nnx.Module):

  def __init__(self, rngs):
    self.dense = otkit.nn.FactorizedDense(6, 5, rank=3, rngs=rngs)
    self.conv = otkit.nn.FactorizedConv(2, 3, (1, 3), rank=2, square=True, rngs=rngs,
                                        kernel_init=flat_normal)
    self.head = nnx.Linear(5, 2, rngs=rngs)


def test_chain_with_masked_weight_decay_is_one_gradient_step():
  """sgd over chain(FD λ, weight decay μ on the rest) = one step on λ Σ ½‖UMVᵀ‖² + μ/2 ‖rest‖²."""
  lam, mu, lr = 0.05, 0.01, 0.5
  model = Net(nnx.Rngs(0))
  params = nnx.as_pure(nnx.state(model, nnx.Param))

  def not_factors(p):
    return jax.tree.map(lambda flag: not flag, otkit.nn.factor_mask(p))

  tx = optax.chain(otkit.nn.frobenius_decay(lam), optax.add_decayed_weights(mu, mask=not_factors),
                   optax.sgd(lr))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  nnx.jit(lambda model, opt, grads: opt.update(model, grads))(
      model, optimizer, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))

  def objective(p):
    fd = product_penalty(p["dense"]["u"], p["dense"]["v"]) + product_penalty(
        p["conv"]["u"], p["conv"]["v"], p["conv"]["m"])
    rest = [p["dense"]["bias"], p["conv"]["bias"], p["head"]["kernel"], p["head"]["bias"]]
    return lam * fd + 0.5 * mu * sum(jnp.sum(x ** 2) for x in rest)

  step = jax.jit(lambda p: jax.tree.map(lambda x, g: x - lr * g, p, jax.grad(objective)(p)))
  expected = step(params)
  updated = nnx.as_pure(nnx.state(model, nnx.Param))
  for got, want in zip(jax.tree.leaves(updated), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_jit_with_traced_coeff_equals_eager(rng):
  f = random_factors(rng, np.float64, True)
  eager = eager_decay_increment(f, 0.2)
  jitted = decay_increment(f, 0.2)  # coeff is traced here
  for name in f:
    np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-12)


@pytest.mark.parametrize("coeff", [-0.1, float("nan"), float("inf"), np.ones(2)])
def test_bad_coeff_raises(coeff):
  with pytest.raises(ValueError, match="`coeff`"):
    otkit.nn.frobenius_decay(coeff)


def test_missing_params_raises():
  tx = otkit.nn.frobenius_decay(0.1)
  params = {"u": jnp.ones((3, 1)), "v": jnp.ones((2, 1))}
  with pytest.raises(ValueError, match="params"):
    tx.update(params, tx.init(params))


@pytest.mark.parametrize("shapes", [((3, 2), (4, 1), None), ((3, 2), (4, 2), (3, 3)), ((3,), (4,), None)])
def test_mismatched_factors_raise(shapes):
  params = {k: jnp.ones(s) for k, s in zip(("u", "v", "m"), shapes) if s is not None}
  with pytest.raises(ValueError, match="do not form a product"):
    _frobenius.factor_groups(params)
