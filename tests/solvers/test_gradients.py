"""Gradients of Sinkhorn (implicit, unroll, envelope) against central finite differences in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
import otkit

MODES = ("implicit", "unroll", "envelope")
N, M = 14, 11


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(N, 2))
  y = rng.normal(size=(M, 2)) * 0.7 + 0.5
  a = rng.uniform(0.3, 1.0, N)
  b = rng.uniform(0.3, 1.0, M)
  weights_f, weights_g = rng.normal(size=N), rng.normal(size=M)
  return x, y, a / a.sum(), b / b.sum(), weights_f, weights_g


X, Y, A, B, WF, WG = _data()


def _loss(mode, x, a, epsilon, tau_a):
  """A scalar that depends on the potentials (implicit/unroll) or only on the value (envelope)."""
  b = B if tau_a == 1.0 else 1.3 * B
  out = otkit.sinkhorn(otkit.PointCloud(x, Y), a, b, epsilon=epsilon, tau_a=tau_a, tol=1e-12,
                       max_iters=3000, grad_mode=mode)
  if mode == "envelope":
    return out.value
  return out.value + jnp.dot(WF, out.f) + jnp.dot(WG, out.g)


_assert_directional = helpers.assert_directional_derivative


@pytest.mark.parametrize("mode", MODES)
def test_gradient_in_points(mode):
  direction = np.random.default_rng(1).normal(size=X.shape)
  _assert_directional(lambda x: _loss(mode, x, A, 0.1, 1.0), jnp.asarray(X), direction)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_in_weights(mode):
  direction = np.random.default_rng(2).normal(size=N)
  direction -= direction.mean()  # stay on the balanced constraint Σa = Σb
  _assert_directional(lambda a: _loss(mode, X, a, 0.1, 1.0), jnp.asarray(A), direction)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_in_epsilon(mode):
  _assert_directional(lambda e: _loss(mode, X, A, e, 1.0), jnp.asarray(0.2), 1.0)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_in_tau(mode):
  _assert_directional(lambda t: _loss(mode, X, A, 0.2, t), jnp.asarray(0.7), 1.0)


@pytest.mark.parametrize("mode", ("implicit", "unroll"))
def test_gradient_in_unbalanced_weights(mode):
  direction = np.random.default_rng(3).normal(size=N)
  _assert_directional(lambda a: _loss(mode, X, a, 0.2, 0.7), jnp.asarray(A), direction)


def test_first_potential_gradient_float32_matches_float64():
  def first_potential(x, y):
    return otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=0.1, tol=1e-5, max_iters=5000).f[0]

  grad = jax.jit(jax.grad(first_potential))
  g64 = grad(jnp.asarray(X), jnp.asarray(Y))
  g32 = grad(jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32))
  assert g32.dtype == jnp.float32 and np.all(np.isfinite(g32))
  np.testing.assert_allclose(g32, g64, atol=1e-3 * np.abs(g64).max())


def test_gradient_flows_through_jit_and_vmap():
  xs = jnp.stack([jnp.asarray(_data(s)[0]) for s in range(3)])
  loss = lambda x: _loss("implicit", x, A, 0.1, 1.0)
  batched = jax.jit(jax.vmap(jax.grad(loss)))(xs)
  for i in range(3):
    np.testing.assert_allclose(batched[i], jax.grad(loss)(xs[i]), rtol=1e-8, atol=1e-10)


def test_value_gradient_agrees_across_modes():
  grads = [jax.grad(lambda x: otkit.sinkhorn(otkit.PointCloud(x, Y), A, B, epsilon=0.1, tol=1e-12,
                                             max_iters=3000, grad_mode=m).value)(jnp.asarray(X))
           for m in MODES]
  for g in grads[1:]:
    np.testing.assert_allclose(g, grads[0], rtol=1e-7, atol=1e-10)


def test_implicit_gradient_at_small_epsilon_matches_a_dense_linear_solve():
  # A near-permutation plan (ε = 1/800 on uniform costs) makes the adjoint system ill
  # conditioned (condition number 1e9; Jacobi-preconditioned CG on the full system needs over
  # 700 iterations, finite differences are useless): the oracle is the implicit function
  # theorem solved densely in NumPy, dz = (H + κ v vᵀ)⁻¹ ∂_C F · dC, with the solver's plan.
  n, epsilon = 60, 1.0 / 800
  rng = np.random.default_rng(3)
  cost = jnp.asarray(rng.uniform(size=(n, n)))
  weights, direction = rng.normal(size=n), rng.normal(size=(n, n))

  def solve(c):
    return otkit.sinkhorn_newton(otkit.CostMatrix(c), epsilon=epsilon, tol=1e-13, cg_maxiter=60)

  out = solve(cost)
  assert out.converged
  exact = jnp.vdot(jax.grad(lambda c: jnp.dot(weights, solve(c).f))(cost), direction)

  plan = np.asarray(otkit.transport_plan(otkit.CostMatrix(cost), out))
  a = np.full(n, 1.0 / n)
  hessian = np.block([[np.diag(plan.sum(1)), plan], [plan.T, np.diag(plan.sum(0))]]) / epsilon
  v = np.concatenate([a, -a])
  tangent = np.concatenate([(plan * direction).sum(1), (plan * direction).sum(0)]) / epsilon
  dz = np.linalg.solve(hessian + np.outer(v, v) / epsilon, tangent)
  np.testing.assert_allclose(exact, weights @ dz[:n], rtol=1e-6)


@pytest.mark.parametrize("side", ["rows", "columns"])
@pytest.mark.parametrize("zero_on", ["larger", "smaller"])
def test_implicit_gradient_with_a_zero_weight(side, zero_on):
  # A point of zero mass has no plan entries: the adjoint solve must keep it out, whether it is
  # on the eliminated block or on the block conjugate gradients run on.
  a, b = A.copy(), B.copy()
  (a if zero_on == "larger" else b)[3] = 0.0
  a, b = a / a.sum(), b / b.sum()
  wf, wg = np.where(a > 0, WF, 0.0), np.where(b > 0, np.sin(WG), 0.0)

  def loss(x):
    if side == "rows":
      out = otkit.sinkhorn(otkit.PointCloud(x, Y), a, b, epsilon=0.1, tol=1e-12, max_iters=3000)
      return out.value + jnp.dot(wf, out.f) + jnp.dot(wg, jnp.sin(out.g))
    out = otkit.sinkhorn(otkit.PointCloud(Y, x), b, a, epsilon=0.1, tol=1e-12, max_iters=3000)
    return out.value + jnp.dot(wf, out.g) + jnp.dot(wg, jnp.sin(out.f))

  direction = np.random.default_rng(4).normal(size=X.shape)
  _assert_directional(loss, jnp.asarray(X), direction)
