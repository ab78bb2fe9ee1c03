"""Gradients of Sinkhorn (implicit, unroll, envelope) against central finite differences in float64.

Every gradient of the objective below is taken in ``(x, a, ε, τ_a)`` together by one jitted
function (``helpers.sinkhorn_objective_grad``): one compilation per grad mode serves all tests.
"""

import functools

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


def _weights(mode):
  """The value plus potentials (implicit/unroll), or only the value (envelope)."""
  if mode == "envelope":
    return (1.0, np.zeros(N), np.zeros(M))
  return (1.0, WF, WG)


def _args(mode, x, a, epsilon, tau_a):
  b = B if tau_a == 1.0 else 1.3 * B
  return (mode, x, a, epsilon, tau_a, Y, b, _weights(mode))


def _loss(mode, x, a, epsilon, tau_a):
  """A scalar that depends on the potentials (implicit/unroll) or only on the value (envelope)."""
  return helpers.sinkhorn_objective_value(*_args(mode, x, a, epsilon, tau_a))


@functools.lru_cache(maxsize=None)
def _gradient(mode, epsilon, tau_a):
  """``∇_(x, a, ε, τ_a)`` of :func:`_loss` at ``(X, A, epsilon, tau_a)``."""
  return helpers.sinkhorn_objective_grad(*_args(mode, X, A, epsilon, tau_a))


def _assert_along(grad, fn, point, direction):
  helpers.assert_gradient_along(grad, fn, jnp.asarray(point), direction)


# Unrolled gradients run with -m slow here; by default the contract tests check the unrolled value's
# jvp and Hessian against finite differences.
@pytest.mark.parametrize("mode", [pytest.param(m, marks=pytest.mark.slow) if m == "unroll" else m
                                  for m in MODES])
def test_gradient_in_points(mode):
  direction = np.random.default_rng(1).normal(size=X.shape)
  _assert_along(_gradient(mode, 0.1, 1.0)[0], lambda x: _loss(mode, x, A, 0.1, 1.0), X, direction)


# Unrolled gradients in the weights run with -m slow (unrolling is checked in the points by default).
@pytest.mark.parametrize("mode", [pytest.param(m, marks=pytest.mark.slow) if m == "unroll" else m
                                  for m in MODES])
def test_gradient_in_weights(mode):
  direction = np.random.default_rng(2).normal(size=N)
  direction -= direction.mean()  # stay on the balanced constraint Σa = Σb
  _assert_along(_gradient(mode, 0.1, 1.0)[1], lambda a: _loss(mode, X, a, 0.1, 1.0), A, direction)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_in_epsilon(mode):
  _assert_along(_gradient(mode, 0.2, 1.0)[2], lambda e: _loss(mode, X, A, e, 1.0), 0.2, 1.0)


@pytest.mark.parametrize("mode", MODES)
def test_gradient_in_tau(mode):
  _assert_along(_gradient(mode, 0.2, 0.7)[3], lambda t: _loss(mode, X, A, 0.2, t), 0.7, 1.0)


@pytest.mark.parametrize("mode", ("implicit", "unroll"))
def test_gradient_in_unbalanced_weights(mode):
  direction = np.random.default_rng(3).normal(size=N)
  _assert_along(_gradient(mode, 0.2, 0.7)[1], lambda a: _loss(mode, X, a, 0.2, 0.7), A, direction)


def test_first_potential_gradient_float32_matches_float64():
  u, v = np.full(N, 1 / N), np.full(M, 1 / M)
  e0 = np.eye(N)[0]  # the objective f[0]
  args = ("implicit", X, u, 0.1, 1.0, Y, v, (0.0, e0, np.zeros(M)), 1e-5)
  g64 = helpers.sinkhorn_objective_grad(*args)[0]
  f32 = lambda v: jax.tree.map(lambda w: np.asarray(w, np.float32), v)
  g32 = helpers.sinkhorn_objective_grad(args[0], *f32(args[1:]))[0]
  assert g32.dtype == jnp.float32 and np.all(np.isfinite(g32))
  np.testing.assert_allclose(g32, g64, atol=1e-3 * np.abs(g64).max())


def test_gradient_flows_through_jit_and_vmap():
  xs = jnp.stack([jnp.asarray(_data(s)[0]) for s in range(3)])
  loss = lambda x: helpers.sinkhorn_objective(*_args("implicit", x, A, 0.1, 1.0))
  batched = jax.jit(jax.vmap(jax.grad(loss)))(xs)
  for i in range(3):
    single = helpers.sinkhorn_objective_grad(*_args("implicit", xs[i], A, 0.1, 1.0))[0]
    np.testing.assert_allclose(batched[i], single, rtol=1e-8, atol=1e-10)


def test_value_gradient_agrees_across_modes():
  value_only = (1.0, np.zeros(N), np.zeros(M))
  grads = [helpers.sinkhorn_objective_grad(m, X, A, 0.1, 1.0, Y, B, value_only)[0] for m in MODES]
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

  def objective(c):  # the solve comes back as the auxiliary output: one forward pass
    out = otkit.sinkhorn_newton(otkit.CostMatrix(c), epsilon=epsilon, tol=1e-13, cg_maxiter=60)
    return jnp.dot(weights, out.f), out

  grad, out = jax.jit(jax.grad(objective, has_aux=True))(cost)
  assert out.converged
  exact = jnp.vdot(grad, direction)

  a = np.full(n, 1.0 / n)
  plan = helpers.plan(cost, a, a, out.f, out.g, epsilon)
  hessian = np.block([[np.diag(plan.sum(1)), plan], [plan.T, np.diag(plan.sum(0))]]) / epsilon
  v = np.concatenate([a, -a])
  tangent = np.concatenate([(plan * direction).sum(1), (plan * direction).sum(0)]) / epsilon
  dz = np.linalg.solve(hessian + np.outer(v, v) / epsilon, tangent)
  np.testing.assert_allclose(exact, weights @ dz[:n], rtol=1e-6)


def _zero_weight_loss(x, a, b, wf, wg, side):
  if side == "rows":
    out = otkit.sinkhorn(otkit.PointCloud(x, Y), a, b, epsilon=0.1, tol=1e-12, max_iters=3000)
    return out.value + jnp.dot(wf, out.f) + jnp.dot(wg, jnp.sin(out.g))
  out = otkit.sinkhorn(otkit.PointCloud(Y, x), b, a, epsilon=0.1, tol=1e-12, max_iters=3000)
  return out.value + jnp.dot(wf, out.g) + jnp.dot(wg, jnp.sin(out.f))


# One compilation per side, shared by both positions of the zero.
_zero_weight_value = jax.jit(_zero_weight_loss, static_argnames="side")
_zero_weight_grad = jax.jit(jax.grad(_zero_weight_loss), static_argnames="side")


@pytest.mark.parametrize("side", ["rows", pytest.param("columns", marks=pytest.mark.slow)])
@pytest.mark.parametrize("zero_on", ["larger", "smaller"])
def test_implicit_gradient_with_a_zero_weight(side, zero_on):
  # A point of zero mass has no plan entries: the adjoint solve must keep it out, whether it is
  # on the eliminated block or on the block conjugate gradients run on.
  a, b = A.copy(), B.copy()
  (a if zero_on == "larger" else b)[3] = 0.0
  a, b = a / a.sum(), b / b.sum()
  wf, wg = np.where(a > 0, WF, 0.0), np.where(b > 0, np.sin(WG), 0.0)
  direction = np.random.default_rng(4).normal(size=X.shape)
  grad = _zero_weight_grad(jnp.asarray(X), a, b, wf, wg, side=side)
  _assert_along(grad, lambda x: _zero_weight_value(x, a, b, wf, wg, side=side), X, direction)
