"""Sinkhorn divergence against ott-jax, POT and finite differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from ott.geometry import geometry, pointcloud
from ott.tools import sinkhorn_divergence as ott_divergence

import helpers
import otkit


def _clouds(seed=0, n=40, m=30):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 2))
  y = rng.normal(size=(m, 2)) * 0.8 + 1.0
  a, b = rng.uniform(0.3, 1, n), rng.uniform(0.3, 1, m)
  return x, y, a / a.sum(), b / b.sum()


# The solver of the tests against references: the numbers of its tests share its compilations
# (tol is traced, the other options are static).
def _solver(tol):
  return otkit.Sinkhorn(tol=tol, max_iters=20000)


@jax.jit
def _ott_divergence(x, y, a, b, epsilon):
  """ott-jax's debiased divergence, one compiled program for every ε."""
  _, ref = ott_divergence.sinkhorn_divergence(
      pointcloud.PointCloud, x, y, a=a, b=b, epsilon=epsilon,
      solve_kwargs=dict(threshold=1e-11, max_iterations=20000))
  return ref.divergence


@pytest.mark.parametrize("epsilon", [0.05, 1.0])
def test_matches_ott_jax(epsilon):
  x, y, a, b = _clouds()
  ours = otkit.sinkhorn_divergence(x, y, a, b, epsilon=epsilon, solver=_solver(1e-11))
  ref = _ott_divergence(x, y, a, b, epsilon)
  assert bool(ours.converged)
  np.testing.assert_allclose(ours.value, ref, rtol=1e-8)


def test_is_zero_between_identical_measures_and_positive_otherwise():
  x, y, a, b = _clouds()
  same = otkit.sinkhorn_divergence(x, x, a, a, epsilon=0.1, solver=_solver(1e-5))
  assert bool(same.converged)
  assert abs(float(same.value)) < 1e-6 * float(same.xy.value)
  np.testing.assert_allclose(same.xx.f, same.xx.g)
  assert float(otkit.sinkhorn_divergence(x, y, a, b, epsilon=0.1, solver=_solver(1e-3)).value) > 0


def _check_gradient(x, y, a, b, solver):
  def value(x, a):
    return otkit.sinkhorn_divergence(x, y, a, b, epsilon=0.2, solver=solver).value

  rng = np.random.default_rng(5)
  dx, da = rng.normal(size=x.shape), rng.normal(size=a.shape)
  da -= da.mean()
  gx, ga = jax.jit(jax.grad(value, argnums=(0, 1)))(jnp.asarray(x), jnp.asarray(a))  # one program
  h = 1e-5
  fd_x = (value(x + h * dx, a) - value(x - h * dx, a)) / (2 * h)
  fd_a = (value(x, a + h * da) - value(x, a - h * da)) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(gx, dx), fd_x, rtol=1e-5)
  np.testing.assert_allclose(jnp.vdot(ga, da), fd_a, rtol=1e-5)


# The envelope gradient (no linear solve) runs with -m slow; it is checked against Sinkhorn by
# default in tests/solvers/test_gradients.py.
@pytest.mark.parametrize("mode", [pytest.param("envelope", marks=pytest.mark.slow), "implicit"])
def test_gradient_matches_finite_differences(mode):
  if mode == "implicit":  # the problems of test_matches_ott_jax: the values share its programs
    _check_gradient(*_clouds(), _solver(1e-12))
  else:  # those of test_vmap_jit_and_float32[f64] and the default solver, with a tighter tol
    x, y, _, _ = _clouds(0, n=30, m=25)
    _, _, a, b = _clouds(1, n=30, m=25)
    _check_gradient(x, y, a, b, otkit.Sinkhorn(tol=1e-12, grad_mode="envelope"))


# float64 runs with -m slow (the same program as float32, one more compilation).
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)],
                         ids=["f32", "f64"])
def test_vmap_jit_and_float32(dtype):
  # 30 and 25 points: the shapes of tests/flows (the default solver's programs are shared)
  clouds = [_clouds(s, n=30, m=25) for s in range(4)]
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
    (dict(tau_a=0.0), "`tau_a`"),
    (dict(tau_b=1.5), "`tau_b`"),
    (dict(solver="sinkhorn"), "`solver`"),
    (dict(y=None), "`y` is required"),
    (dict(x=otkit.PointCloud(np.zeros((4, 2)))), "leave `y`"),
    (dict(x=otkit.CostMatrix(np.zeros((4, 5))), y=None), "no self-pairs"),
])
def test_bad_inputs(kwargs, match):
  args = dict(x=np.zeros((4, 2)), y=np.ones((5, 2)), epsilon=0.1)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.sinkhorn_divergence(**args)


def _entropic_value(u, v, cost, epsilon):
  """``⟨C, P⟩ + ε KL(P ‖ a⊗b)`` of POT's log-domain plan between uniform measures."""
  a, b = np.full(len(u), 1 / len(u)), np.full(len(v), 1 / len(v))
  plan = ot.sinkhorn(a, b, cost, epsilon, method="sinkhorn_log", stopThr=1e-11, numItermax=100000)
  ab = np.outer(a, b)
  return np.sum(cost * plan) + epsilon * np.sum(plan * np.log(plan / ab) - plan + ab)


def test_labelled_geometry_is_the_divergence_of_the_augmented_costs():
  # A LabelledPointCloud with within-dataset tables: the three problems use the augmented costs
  # λ‖x − y‖² + W[l, l'] of its self-pairs; checked against POT on the dense matrices.
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(12, 2)), rng.normal(size=(10, 2)) + 0.5
  lx, ly = rng.integers(0, 2, 12), rng.integers(0, 3, 10)
  w_xy, w_xx, w_yy = rng.uniform(size=(2, 3)), rng.uniform(size=(2, 2)), rng.uniform(size=(3, 3))
  w_xx, w_yy = w_xx + w_xx.T, w_yy + w_yy.T
  np.fill_diagonal(w_xx, 0.0)
  np.fill_diagonal(w_yy, 0.0)
  geom = otkit.LabelledPointCloud(x, lx, y, ly, w_xy, label_cost_xx=w_xx, label_cost_yy=w_yy)
  div = otkit.sinkhorn_divergence(geom, epsilon=1.0, solver=otkit.Sinkhorn(tol=1e-12,
                                                                            max_iters=10000))
  ref = (_entropic_value(x, y, ot.dist(x, y) + w_xy[lx][:, ly], 1.0)
         - 0.5 * _entropic_value(x, x, ot.dist(x, x) + w_xx[lx][:, lx], 1.0)
         - 0.5 * _entropic_value(y, y, ot.dist(y, y) + w_yy[ly][:, ly], 1.0))
  assert bool(div.converged)
  np.testing.assert_allclose(div.value, ref, rtol=1e-8)


# ----------------------------------------------------------------------------- unbalanced


def _kl(p, q):
  return np.sum(p * np.log(p / q) - p + q)


def _unbalanced_primal(cost, plan, a, b, epsilon, tau):
  """``⟨C, P⟩ + ε KL(P ‖ a⊗b) + ρ KL(P1 ‖ a) + ρ KL(Pᵀ1 ‖ b)``, ``ρ = ε τ / (1 − τ)``."""
  rho = epsilon * tau / (1 - tau)
  return (np.sum(cost * plan) + epsilon * _kl(plan, np.outer(a, b))
          + rho * _kl(plan.sum(1), a) + rho * _kl(plan.sum(0), b))


def _pot_unbalanced_value(cost, a, b, epsilon, tau):
  """The primal value (:func:`_unbalanced_primal`) of POT's unbalanced plan
  (``reg_type="kl"``)."""
  rho = epsilon * tau / (1 - tau)
  plan = ot.unbalanced.sinkhorn_unbalanced(a, b, cost, epsilon, rho, method="sinkhorn_stabilized",
                                           reg_type="kl", numItermax=100000, stopThr=1e-13)
  return _unbalanced_primal(cost, plan, a, b, epsilon, tau)


# One solver object for the unbalanced tests (their problems share its compilations).
_UNBALANCED_SOLVER = otkit.Sinkhorn(tol=1e-11, max_iters=20000, grad_mode="envelope")


@functools.partial(jax.jit, static_argnames="tau")  # ott-jax needs a concrete τ
def _ott_unbalanced(costs, a, b, epsilon, tau):
  """ott-jax's unbalanced divergence on the cost matrices ``(C_xy, C_xx, C_yy)``: its value
  and the plans of its three problems (``exp((f ⊕ g − C) / ε)``)."""
  _, ref = ott_divergence.sinkhorn_divergence(
      geometry.Geometry, cost_matrix=costs, a=a, b=b, epsilon=epsilon,
      solve_kwargs=dict(tau_a=tau, tau_b=tau, threshold=1e-12, max_iterations=20000))
  plans = [jnp.exp((f[:, None] + g[None, :] - c) / epsilon)
           for (f, g), c in zip(ref.potentials, costs)]
  return ref.divergence, plans


@pytest.mark.parametrize("tau", [0.5, 0.95])
def test_unbalanced_matches_pot_and_ott_jax(tau):
  x, y, a, b = _clouds(2, n=20, m=15)
  b = 1.6 * b  # masses 1 and 1.6
  eps = 0.5
  ours = otkit.sinkhorn_divergence(x, y, a, b, epsilon=eps, tau_a=tau, tau_b=tau,
                                   solver=_UNBALANCED_SOLVER)
  sq = lambda u, v: ((u[:, None] - v[None]) ** 2).sum(-1)  # noqa: E731
  mass_term = 0.5 * eps * (a.sum() - b.sum()) ** 2
  expected = (_pot_unbalanced_value(sq(x, y), a, b, eps, tau)
              - 0.5 * _pot_unbalanced_value(sq(x, x), a, a, eps, tau)
              - 0.5 * _pot_unbalanced_value(sq(y, y), b, b, eps, tau) + mass_term)
  assert bool(ours.converged)
  np.testing.assert_allclose(ours.value, expected, rtol=1e-7)
  # ott-jax's unbalanced problem takes the entropy relative to the counting measure (its plan
  # is POT's reg_type="entropy"), so the two values agree when every atom has unit weight.
  ones_x, ones_y = np.ones(20), np.ones(15)
  counts = otkit.sinkhorn_divergence(x, y, ones_x, ones_y, epsilon=eps, tau_a=tau, tau_b=tau,
                                     solver=_UNBALANCED_SOLVER)
  costs = (sq(x, y), sq(x, x), sq(y, y))
  np.testing.assert_allclose(counts.value, _ott_unbalanced(costs, ones_x, ones_y, eps, tau)[0],
                             rtol=1e-8)
  # For general weights the weights go into the costs (the stated mapping): KL(P ‖ a⊗b) and
  # ρ KL(P1 ‖ a) are KL(P ‖ 1), ρ KL(P1 ‖ 1) less ⟨(ε + ρ) log a ⊕ (ε + ρ) log b, P⟩ plus
  # constants that cancel in the divergence. ott-jax's reported value on those costs with unit
  # weights is otkit's.
  pairs = ((a, b), (a, a), (b, b))
  rho = eps * tau / (1 - tau)
  shifted = tuple(c - (eps + rho) * (np.log(u)[:, None] + np.log(v)[None])
                  for c, (u, v) in zip(costs, pairs))
  np.testing.assert_allclose(ours.value, _ott_unbalanced(shifted, ones_x, ones_y, eps, tau)[0],
                             rtol=1e-8)
  # With the entropy's shift alone, C − ε (log a ⊕ log b), and the weights kept, ott-jax's plans
  # are otkit's, and the divergence of the stated objective evaluated on them is otkit's value.
  mapped = tuple(c - eps * (np.log(u)[:, None] + np.log(v)[None]) for c, (u, v) in zip(costs, pairs))
  plans = [np.asarray(p) for p in _ott_unbalanced(mapped, a, b, eps, tau)[1]]
  values = [_unbalanced_primal(c, p, u, v, eps, tau) for c, p, (u, v) in zip(costs, plans, pairs)]
  np.testing.assert_allclose(ours.value, values[0] - 0.5 * values[1] - 0.5 * values[2] + mass_term,
                             rtol=1e-7)


def test_unbalanced_is_zero_at_equal_measures_nonnegative_and_differentiable():
  x, y, a, b = _clouds(3, n=20, m=15)
  solver = _UNBALANCED_SOLVER
  for tau_a, tau_b in ((0.8, 0.8), (0.8, 0.6)):  # the second pair: non-symmetric self-problems
    same = otkit.sinkhorn_divergence(x, x, 0.7 * a, 0.7 * a, epsilon=0.3, tau_a=tau_a,
                                     tau_b=tau_b, solver=solver)
    assert bool(same.converged) and abs(float(same.value)) < 1e-9
  for seed in range(2):
    mass = np.random.default_rng(seed).uniform(0.2, 3.0, 2)
    div = otkit.sinkhorn_divergence(x, y, mass[0] * a, mass[1] * b, epsilon=0.3, tau_a=0.8,
                                    tau_b=0.8, solver=solver)
    assert bool(div.converged) and float(div.value) > 0

  def value(x, a):  # the masses are free: any direction of a
    return otkit.sinkhorn_divergence(x, y, a, b, epsilon=0.3, tau_a=0.8, tau_b=0.8,
                                     solver=solver).value

  rng = np.random.default_rng(4)
  dx, da = rng.normal(size=x.shape), rng.normal(size=a.shape)
  gx, ga = jax.jit(jax.grad(value, argnums=(0, 1)))(jnp.asarray(x), jnp.asarray(a))
  helpers.assert_gradient_along(gx, lambda t: value(t, a), x, dx)
  helpers.assert_gradient_along(ga, lambda t: value(x, t), a, da)
