"""The exact fixtures of the particle scheme (potential, interaction, Langevin, OTDD contraction)
and the monotonicity of the objective along flows with small steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import otkit
import otkit.flows as fl

TAU = 0.1
B = np.array([1.0, -2.0])


def _half_sq(z):
  return 0.5 * jnp.sum(z * z)


def _potential(z):
  return 0.5 * jnp.sum((z - B.astype(z.dtype)) ** 2)


POTENTIAL = fl.potential_energy(_potential)
INTERACTION = fl.interaction_energy(_half_sq)
CONFINEMENT = fl.potential_energy(_half_sq)


# float32 accumulates one rounding per step on O(1) coordinates: 1e-5 after 10 steps.
def _tol(dtype):
  return 1e-12 if dtype == np.float64 else 1e-5


def test_potential_energy_contracts_as_one_minus_tau_to_the_k(rng, dtype):
  x0 = rng.normal(size=(7, 2)).astype(dtype)
  out = fl.gradient_flow(POTENTIAL, x0, step_size=TAU, n_steps=10)
  factor = (1.0 - TAU) ** np.arange(11)
  expected = B + factor[:, None, None] * (x0 - B)
  assert out.frames.dtype == dtype
  np.testing.assert_allclose(out.frames, expected, atol=_tol(dtype))
  # F(x_k) = (1 − τ)^{2k} F(x_0)
  np.testing.assert_allclose(out.values, factor ** 2 * out.values[0], rtol=10 * _tol(dtype))


def test_interaction_energy_keeps_the_mean_and_scales_the_spread(rng, dtype):
  x0 = rng.normal(size=(9, 3)).astype(dtype)
  out = fl.gradient_flow(INTERACTION, x0, step_size=TAU, n_steps=10)
  mean = x0.mean(0)
  factor = (1.0 - TAU) ** np.arange(11)
  np.testing.assert_allclose(out.frames.mean(1), np.broadcast_to(mean, (11, 3)),
                             atol=_tol(dtype))
  np.testing.assert_allclose(out.frames, mean + factor[:, None, None] * (x0 - mean),
                             atol=_tol(dtype))


def test_langevin_stationary_covariance_is_the_identity():
  x0 = 3.0 * np.random.default_rng(0).normal(size=(2000, 2)) + 1.0
  out = fl.gradient_flow(CONFINEMENT, x0, step_size=0.01, n_steps=3000, save_every=3000,
                         temperature=1.0, key=jax.random.key(0))
  cov = np.cov(np.asarray(out.x).T, bias=True)
  np.testing.assert_allclose(cov, np.eye(2), atol=0.1)
  assert not bool(out.failed) and int(out.result) == otkit.Result.CONVERGED


# ---------------------------------------------------------------------------------------------
# OTDD contraction (PAPERS fixture): A = three Gaussian classes, B = A + t, ½ convention, xonly.


def _three_classes(rng, centres, std, n=100):
  return np.concatenate([c + std * rng.standard_normal((n, 2)) for c in np.asarray(centres, float)])


@pytest.fixture(scope="module")
def fixture_a():
  rng = np.random.default_rng(0)
  x = _three_classes(rng, [(0, 0), (4, 0), (0, 4)], 0.5)
  return x, np.repeat(np.arange(3), 100)


def _otdd_flow(x, labels, x_t, y_t, statistics, tau, n_steps=8):
  solver = otkit.Sinkhorn(tol=1e-9, anneal=True, grad_mode="envelope")  # the default, tighter
  energy = fl.otdd_to(x_t, y_t, labels, epsilon=0.1, statistics=statistics, feature_weight=0.5,
                      label_weight=0.5, solver=solver)
  return fl.gradient_flow(energy, x, step_size=tau, n_steps=n_steps)


# "attached" is a long duplicate (its own compilation): run with -m slow. The default run flows the
# same attached OTDD energy on a translated dataset in
# tests/flows/test_dataset_flow.py::test_every_mode_contracts_a_translation[xonly-attached-0.5].
@pytest.mark.parametrize("statistics, rate", [
    ("detached", 0.75), pytest.param("attached", 0.5, marks=pytest.mark.slow)])
def test_otdd_flow_contracts_a_translation(fixture_a, statistics, rate):
  x, labels = fixture_a
  t = np.array([1.0, -0.5])
  out = _otdd_flow(x, labels, x + t, labels, statistics, 0.25)
  ratios = np.asarray(out.values / out.values[0])
  # OTDD_0 = ½‖t‖² + ½ W²(class, class + t) = ‖t‖²
  assert abs(float(out.values[0]) - 1.25) < 1e-6
  np.testing.assert_allclose(ratios, rate ** (2 * np.arange(9)), atol=1e-6)
  if statistics == "detached":  # the calibrated values
    np.testing.assert_allclose(ratios[1:6], [0.5625, 0.3164, 0.1780, 0.1001, 0.0563], atol=5e-5)
  # every particle moves by the same vector τ t (xonly) or 2τ t (attached)
  shift = np.asarray(out.frames[1] - out.frames[0])
  np.testing.assert_allclose(shift, np.broadcast_to((1.0 - rate) * t, shift.shape), atol=1e-7)


def _relative_increases(values):
  values = np.asarray(values)
  return (values[1:] - values[:-1]) / np.abs(values[:-1])


def test_otdd_flow_never_increases(fixture_a):
  x, labels = fixture_a
  rng = np.random.default_rng(1)
  x_b = _three_classes(rng, [(1, 1), (5, 0), (0, 5)], 0.7)
  out = _otdd_flow(x, labels, x_b, labels, "detached", 0.1)
  assert not bool(out.failed)
  assert float(out.values[-1]) < 0.5 * float(out.values[0])
  assert _relative_increases(out.values).max() <= 1e-6


def test_sinkhorn_flow_never_increases():
  rng = np.random.default_rng(2)
  theta = rng.uniform(0, 2 * np.pi, 80)
  y = np.stack([np.cos(theta), np.sin(theta)], 1)
  x0 = 0.3 * rng.normal(size=(60, 2))
  energy = fl.sinkhorn_divergence_to(y, epsilon=0.05,
                                     solver=otkit.Sinkhorn(tol=1e-9, grad_mode="envelope"))
  out = fl.gradient_flow(energy, x0, step_size=0.05, n_steps=40)
  assert float(out.values[-1]) < 0.1 * float(out.values[0])
  assert _relative_increases(out.values).max() <= 1e-6
