"""The CFM loss (vmap, jit, gradients by finite differences), the samplers' orders of accuracy,
and the metrics against exact answers."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from flax import nnx

import helpers
from otkit import flow_matching as fm

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
XS = RNG.normal(size=(3, 16, 2))
YS = RNG.normal(size=(3, 16, 2)) + 2.0


def _linear_field(params):
  return lambda t, x: x @ params["w"] + t[:, None] * params["b"]


PARAMS = {"w": jnp.asarray(RNG.normal(size=(2, 2))), "b": jnp.asarray(RNG.normal(size=2))}


@pytest.mark.parametrize("coupling, path", [("exact", "linear"), ("independent", "target")])
def test_vmap_of_the_loss_equals_a_loop(coupling, path):
  loss = lambda k, x, y: fm.cfm_loss(_linear_field(PARAMS), k, x, y, coupling=coupling,
                                     path=path, sigma=0.2)
  keys = jax.random.split(KEY, 3)
  batched = jax.jit(jax.vmap(loss))(keys, XS, YS)
  loop = jnp.stack([loss(k, x, y) for k, x, y in zip(keys, XS, YS)])
  helpers.assert_trees_close(batched, loop, rtol=1e-10)


def test_gradient_of_the_loss_matches_finite_differences():
  # With the key fixed, the pairs, times and noise are fixed: the loss is a smooth function of
  # the parameters, and of the points (through the gathered pairs).
  loss = jax.jit(lambda p, x: fm.cfm_loss(_linear_field(p), KEY, x, YS[0], sigma=0.1))
  grad_p, grad_x = jax.grad(loss, argnums=(0, 1))(PARAMS, jnp.asarray(XS[0]))
  for name in ("w", "b"):
    direction = RNG.normal(size=PARAMS[name].shape)
    fn = lambda v: loss({**PARAMS, name: v}, jnp.asarray(XS[0]))
    helpers.assert_gradient_along(grad_p[name], fn, PARAMS[name], direction, rtol=1e-7)
  direction = RNG.normal(size=XS[0].shape) * 1e-3  # small enough not to change the pairing
  helpers.assert_gradient_along(grad_x, lambda x: loss(PARAMS, x), jnp.asarray(XS[0]),
                                direction, rtol=1e-7)


def test_loss_is_zero_for_the_exact_field_of_a_translation_in_float32():
  x = XS[0].astype(np.float32)
  value = fm.cfm_loss(lambda t, z: jnp.full_like(z, 1.5), KEY, x, x + 1.5)
  chex.assert_type(value, jnp.float32)
  assert float(value) < 1e-10


@pytest.mark.parametrize("method, order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_samplers_converge_at_their_order(method, order):
  # dx/dt = A x (a rotation with decay): x(1) = expm(A) x(0).
  a = jnp.array([[-0.5, 2.0], [-2.0, -0.5]])
  x0 = jnp.asarray(XS[0])
  exact = x0 @ jax.scipy.linalg.expm(a).T
  errors = [float(jnp.max(jnp.abs(fm.sample(lambda t, x: x @ a.T, x0, n_steps=n, method=method)
                                  - exact))) for n in (20, 40)]
  np.testing.assert_allclose(errors[0] / errors[1], 2.0 ** order, rtol=0.2)


def test_sample_saves_the_trajectory_and_accepts_a_model():
  model = fm.VelocityMLP(2, hidden=8, depth=1, rngs=nnx.Rngs(0))
  x0 = jnp.asarray(XS[0], jnp.float32)
  path = fm.sample(model, x0, n_steps=6, save_every=2)
  chex.assert_shape(path, (4, 16, 2))
  np.testing.assert_array_equal(path[0], x0)
  helpers.assert_trees_close(path[-1], fm.sample(model, x0, n_steps=6), rtol=1e-6)
  end = fm.sample(model, x0, n_steps=8, method="rk4")
  back = fm.sample(model, end, n_steps=8, method="rk4", t0=1.0, t1=0.0)
  helpers.assert_trees_close(back, x0, rtol=0, atol=1e-4)  # backwards, fourth order


def test_wasserstein2_and_path_energy_against_exact_values():
  x, y = XS[0], YS[0]
  n = x.shape[0]
  expected = np.sqrt(ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), helpers.sq_cost(x, y)))
  np.testing.assert_allclose(fm.wasserstein2(x, y), expected, rtol=1e-10)
  # A constant field moves every point on a straight line: PE = ‖c‖² = W₂², NPE = 0.
  out = fm.path_energy(lambda t, z: jnp.broadcast_to(jnp.array([1.0, -2.0]), z.shape), x,
                       n_steps=5)
  np.testing.assert_allclose([out.energy, out.transport, out.normalized], [5.0, 5.0, 0.0],
                             atol=1e-10)
  # A rotation moves points on arcs: PE = θ² E‖x‖² exceeds W₂² = E‖Rx − x‖² (exact RK4 here).
  theta = 1.0
  rot = lambda t, z: theta * z @ jnp.array([[0.0, 1.0], [-1.0, 0.0]])
  out = fm.path_energy(rot, x, n_steps=200, method="rk4")
  np.testing.assert_allclose(out.energy, theta ** 2 * np.mean(np.sum(x ** 2, 1)), rtol=1e-3)
  assert float(out.normalized) > 0.01


@pytest.mark.parametrize("call, name", [
    (lambda: fm.cfm_loss(None, KEY, XS[0], YS[0]), "velocity_fn"),
    (lambda: fm.cfm_loss(lambda t, x: x, KEY, XS[0], YS[0][:5]), "x1"),
    (lambda: fm.cfm_loss(lambda t, x: x, KEY, XS[0], YS[0], coupling="emd"), "coupling"),
    (lambda: fm.cfm_loss(lambda t, x: x, KEY, XS[0], YS[0], sigma=-1.0), "sigma"),
    (lambda: fm.sample(lambda t, x: x, XS[0], n_steps=0), "n_steps"),
    (lambda: fm.sample(lambda t, x: x, XS[0], method="dopri5"), "method"),
    (lambda: fm.sample(lambda t, x: x, np.full((3, 2), np.inf)), "x0"),
    (lambda: fm.wasserstein2(XS[0], YS[0][:4]), "y"),
])
def test_bad_input_is_named(call, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    call()
