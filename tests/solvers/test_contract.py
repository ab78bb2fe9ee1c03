"""The solver contract: solver objects (validated once, pytrees through jit, vmap and grad),
``otkit.solve`` against the wrappers, POT and the exact cost, result codes and ``otkit.check``,
forward-mode derivatives of the unrolled solver, the geometry identity behind the plan
functions, and the divergence with geometries and solver objects.

Problems are tiny and share shapes (14 × 11, as in test_sinkhorn.py, test_newton.py and
test_gradients.py) and static options (``Sinkhorn()``, ``Sinkhorn(max_iters=TIGHT)``,
``Sinkhorn(max_iters=2)``, ``SinkhornNewton()``) so that compilations are shared across tests.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit

N, M = 14, 11
TIGHT = 10000  # the static iteration cap of tight solves, as in test_sinkhorn.py
CONVERGED, STALLED, MAX_ITERS = (otkit.Result.CONVERGED, otkit.Result.STALLED,
                                 otkit.Result.MAX_ITERS)


def _problem(seed=0, n=N, m=M, dtype=np.float64):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 2))
  y = rng.normal(size=(m, 2)) * 0.8 + 1.0
  a, b = rng.uniform(0.3, 1.0, n), rng.uniform(0.3, 1.0, m)
  return x.astype(dtype), y.astype(dtype), (a / a.sum()).astype(dtype), (b / b.sum()).astype(dtype)


def _maybe_jit(fn, jit):
  return jax.jit(fn) if jit else fn


def _assert_converged_is_result(out):
  np.testing.assert_array_equal(out.converged, np.asarray(out.result) == CONVERGED)


# ----------------------------------------------------------------------------- solver objects


@pytest.mark.parametrize("cls, kwargs, name", [
    (otkit.Sinkhorn, dict(tol=0.0), "tol"),
    (otkit.Sinkhorn, dict(tol=-1e-3), "tol"),
    (otkit.Sinkhorn, dict(tol=np.nan), "tol"),
    (otkit.Sinkhorn, dict(tol="small"), "tol"),
    (otkit.Sinkhorn, dict(tol=np.ones(2)), "tol"),
    (otkit.Sinkhorn, dict(anneal="yes"), "anneal"),
    (otkit.Sinkhorn, dict(anneal=None), "anneal"),
    (otkit.Sinkhorn, dict(anneal_decay=0.0), "anneal_decay"),
    (otkit.Sinkhorn, dict(anneal_decay=1.0), "anneal_decay"),
    (otkit.Sinkhorn, dict(anneal_decay=True), "anneal_decay"),
    (otkit.Sinkhorn, dict(max_iters=0), "max_iters"),
    (otkit.Sinkhorn, dict(max_iters=2.5), "max_iters"),
    (otkit.Sinkhorn, dict(fixed_iters=0), "fixed_iters"),
    (otkit.Sinkhorn, dict(grad_mode="backprop"), "grad_mode"),
    (otkit.Sinkhorn, dict(cg_maxiter=0), "cg_maxiter"),
    (otkit.SinkhornNewton, dict(tol=-1.0), "tol"),
    (otkit.SinkhornNewton, dict(anneal="no"), "anneal"),
    (otkit.SinkhornNewton, dict(anneal_decay=1.5), "anneal_decay"),
    (otkit.SinkhornNewton, dict(density=0), "density"),
    (otkit.SinkhornNewton, dict(density="dense"), "density"),
    (otkit.SinkhornNewton, dict(density=np.inf), "density"),
    (otkit.SinkhornNewton, dict(grad_mode="exact"), "grad_mode"),
    (otkit.SinkhornNewton, dict(warmup_iters=-1), "warmup_iters"),
    (otkit.SinkhornNewton, dict(warmup_tol=-1e-3), "warmup_tol"),
    (otkit.SinkhornNewton, dict(max_newton_iters=0), "max_newton_iters"),
    (otkit.SinkhornNewton, dict(newton_cg_maxiter=0), "newton_cg_maxiter"),
])
def test_constructors_reject_bad_options_naming_them(cls, kwargs, name):
  with pytest.raises(ValueError, match=f"`{name}`"):
    cls(**kwargs)


def test_solver_objects_are_frozen_pytrees_with_traced_numbers_only():
  solver = otkit.Sinkhorn(tol=1e-4, max_iters=50)
  with pytest.raises(dataclasses.FrozenInstanceError):
    solver.tol = 1e-6
  leaves, treedef = jax.tree.flatten(solver)
  assert leaves == [1e-4, 0.5]  # tol, anneal_decay
  assert jax.tree.unflatten(treedef, leaves) == solver
  # Static options are part of the structure (a new value compiles anew), numbers are not.
  assert treedef != jax.tree.structure(otkit.Sinkhorn(tol=1e-4, max_iters=60))
  assert treedef == jax.tree.structure(otkit.Sinkhorn(tol=1e-6, max_iters=50))
  assert len(jax.tree.leaves(otkit.SinkhornNewton(tol=1e-9))) == 3  # tol, warmup_tol, decay
  x, y, _, _ = _problem()
  with pytest.raises(ValueError, match="`solver`"):
    otkit.solve(otkit.PointCloud(x, y), epsilon=0.1, solver="sinkhorn")


# ----------------------------------------------------------------------------- solve vs oracles


# float32 runs with -m slow: float32 plans against POT are checked by default in test_sinkhorn.py
# and test_newton.py, and solve() in float32 by the reliability fuzz suite.
@pytest.mark.parametrize("dtype", [pytest.param(np.float32, marks=pytest.mark.slow, id="f32"),
                                   pytest.param(np.float64, id="f64")])
def test_solve_equals_the_wrappers_and_pot(dtype):
  x, y, a, b = _problem(dtype=dtype)
  geom = otkit.PointCloud(x, y)
  f32 = dtype == np.float32
  tol = 1e-5 if f32 else 1e-12
  out = otkit.solve(geom, a, b, epsilon=0.1, solver=otkit.Sinkhorn(tol=tol, max_iters=TIGHT))
  chex.assert_trees_all_equal(out, otkit.sinkhorn(geom, a, b, epsilon=0.1, tol=tol,
                                                  max_iters=TIGHT))
  newton = otkit.solve(geom, a, b, epsilon=0.1, solver=otkit.SinkhornNewton(tol=tol))
  chex.assert_trees_all_equal(newton, otkit.sinkhorn_newton(geom, a, b, epsilon=0.1, tol=tol))
  assert out.f.dtype == dtype and bool(out.converged) and bool(newton.converged)
  C = helpers.sq_cost(x, y)
  a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
  pot = ot.sinkhorn2(a64 / a64.sum(), b64 / b64.sum(), C, 0.1, method="sinkhorn_log",
                     stopThr=1e-14, numItermax=100000)
  # float32: the plan is accurate to the marginal tolerance 1e-5 and to float32 rounding of the
  # O(1/ε) exponents (about 1e-6 relative).
  rtol = 1e-4 if f32 else 1e-9
  for solved in (out, newton):
    np.testing.assert_allclose(otkit.transport_cost(geom, solved), pot, rtol=rtol)


def test_small_epsilon_lies_within_the_entropic_bound_of_the_exact_cost():
  # W ≤ ⟨C, P_ε⟩ ≤ OT_ε ≤ W + ε · min(H(a), H(b)), since KL(P* ‖ a⊗b) ≤ min(H(a), H(b)) for an
  # optimal plan P* of the exact problem; the marginal error moves ⟨C, P⟩ by at most tol·max C.
  x, y, a, b = _problem()
  C = helpers.sq_cost(x, y)
  exact = ot.emd2(a, b, C)
  eps, tol = 1e-3 * C.mean(), 1e-11
  geom = otkit.PointCloud(x, y)
  out = otkit.solve(geom, a, b, epsilon=eps, solver=otkit.SinkhornNewton(tol=tol))
  assert bool(out.converged)
  cost = float(otkit.transport_cost(geom, out))
  entropy = min(-(a * np.log(a)).sum(), -(b * np.log(b)).sum())
  slack = tol * C.max() + 8 * helpers.EPS64 * exact
  assert exact - slack <= cost <= float(out.value) + slack
  assert float(out.value) <= exact + eps * entropy + slack


def test_solver_objects_pass_through_jit_and_vmap():
  x, y, a, b = _problem()
  geom = otkit.PointCloud(x, y)
  tols = np.asarray([1e-2, 1e-4, 1e-6, 1e-9])

  def solve(tol):  # a solver built inside the vmapped function, from a traced tol
    return otkit.solve(geom, a, b, epsilon=0.05, solver=otkit.Sinkhorn(tol=tol))

  batched = jax.jit(jax.vmap(solve))(tols)
  # A batch of solver objects is a pytree with batched leaves.
  solvers = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[otkit.Sinkhorn(tol=t) for t in tols])
  by_objects = jax.vmap(lambda s: otkit.solve(geom, a, b, epsilon=0.05, solver=s))(solvers)
  # Batched jit and eager reductions round differently: 1e-12 is above the rounding of the
  # O(1) potentials and of the L1 errors (sums of 22 terms of exponents O(|f|/ε) ≈ 200).
  helpers.assert_trees_close(by_objects, batched, rtol=1e-10, atol=1e-12)
  _assert_converged_is_result(batched)
  assert np.all(np.diff(batched.n_iters) >= 0) and np.all(batched.error <= tols)
  for i, tol in enumerate(tols):
    single = solve(float(tol))
    assert int(batched.n_iters[i]) == int(single.n_iters)
    np.testing.assert_allclose(batched.f[i], single.f, atol=1e-12)


# ----------------------------------------------------------------------------- result codes


def _floored():
  """A float32 problem whose error floors at ~2e-7 (float32 rounding): tol = 1e-9 stalls.

  The shapes of ``_problem``: its solves in both dtypes are compilations other tests share.
  """
  x, y, _, _ = _problem(dtype=np.float32)
  return otkit.PointCloud(x, y), 0.5, 1e-9


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_result_codes_and_check_messages(jit):
  x, y, a, b = _problem()
  geom = otkit.PointCloud(x, y)
  solve = _maybe_jit(lambda geom, solver: otkit.solve(geom, epsilon=0.5, solver=solver), jit)
  capped = solve(geom, otkit.Sinkhorn(max_iters=2))
  good = solve(geom, otkit.Sinkhorn(tol=1e-6))
  floored_geom, _, tol = _floored()
  stalled = solve(floored_geom, otkit.Sinkhorn(tol=tol))
  for out, code in ((capped, MAX_ITERS), (good, CONVERGED), (stalled, STALLED)):
    assert int(out.result) == code
    _assert_converged_is_result(out)
  assert float(stalled.error) < 1e-5 and int(stalled.n_iters) < 2000
  if not jit:  # a property of the problem, not of jit: checked once
    # In float64 the same problem reaches the tolerance: the floor was float32's.
    x64 = jnp.asarray(floored_geom.x, jnp.float64)
    assert int(solve(otkit.PointCloud(x64, jnp.asarray(floored_geom.y, jnp.float64)),
                     otkit.Sinkhorn(tol=tol)).result) == CONVERGED
  assert otkit.check(good) is good
  for out, name in ((capped, "MAX_ITERS.*`max_iters`"), (stalled, "STALLED")):
    with pytest.raises(RuntimeError, match=f"SinkhornOutput: the problem stopped with {name}"):
      otkit.check(out)


def test_newton_result_codes():
  C = np.random.default_rng(0).uniform(size=(40, 40))
  capped = otkit.solve(otkit.CostMatrix(C), epsilon=1e-2,
                       solver=otkit.SinkhornNewton(tol=1e-12, warmup_iters=0, max_newton_iters=1))
  assert int(capped.result) == MAX_ITERS
  _assert_converged_is_result(capped)
  with pytest.raises(RuntimeError, match="MAX_ITERS"):
    otkit.check(capped)


def test_check_names_the_worst_result_of_batches_and_divergences():
  x, y, a, b = _problem()
  batched = jax.vmap(lambda e: otkit.solve(otkit.PointCloud(x, y), a, b, epsilon=e,
                                           solver=otkit.Sinkhorn(max_iters=20)))(
                                               np.asarray([1.0, 0.01]))
  np.testing.assert_array_equal(batched.result, [CONVERGED, MAX_ITERS])
  _assert_converged_is_result(batched)
  with pytest.raises(RuntimeError, match="1 of 2 problem.*MAX_ITERS"):
    otkit.check(batched)
  div = otkit.sinkhorn_divergence(x, y, a, b, epsilon=0.01, solver=otkit.Sinkhorn(max_iters=2))
  assert int(div.result) == MAX_ITERS and not bool(div.converged)
  with pytest.raises(RuntimeError, match="MAX_ITERS"):
    otkit.check(div)
  with pytest.raises(TypeError, match="otkit output"):
    otkit.check((x, y))


# ----------------------------------------------------------------------------- derivatives


X6, Y5, _, _ = _problem(n=6, m=5)


def _unrolled_value(x, epsilon=0.5):
  solver = otkit.Sinkhorn(tol=1e-12, max_iters=300, grad_mode="unroll")
  return otkit.solve(otkit.PointCloud(x, Y5), epsilon=epsilon, solver=solver).value


# Compiled once for the tangent check and the finite differences of the gradient.
_unrolled_gradient = jax.jit(jax.grad(_unrolled_value))


def _annealed_value(decay):
  # 15 sweeps from ε₀ = max C ≈ 14 down to ε = 0.1 and on: the value depends on the schedule.
  solver = otkit.Sinkhorn(anneal=True, anneal_decay=decay, fixed_iters=15, grad_mode="unroll")
  return otkit.solve(otkit.PointCloud(X6, Y5), epsilon=0.1, solver=solver).value


def test_gradient_in_anneal_decay_matches_finite_differences():
  # The gradient under jit against central differences of the eager value.
  grad = jax.jit(jax.grad(_annealed_value))(0.6)
  helpers.assert_gradient_along(grad, _annealed_value, 0.6, 1.0, rtol=1e-6)
  assert abs(float(grad)) > 1e-3  # not a vacuous zero


def test_jvp_of_the_unrolled_value_matches_finite_differences():
  direction = np.random.default_rng(1).normal(size=X6.shape)
  value, tangent = jax.jvp(_unrolled_value, (jnp.asarray(X6),), (jnp.asarray(direction),))
  np.testing.assert_allclose(value, _unrolled_value(X6), rtol=1e-14)
  fd = helpers.central_difference(_unrolled_value, jnp.asarray(X6), direction)
  np.testing.assert_allclose(tangent, fd, rtol=1e-6)
  np.testing.assert_allclose(tangent, jnp.vdot(_unrolled_gradient(X6), direction), rtol=1e-10)


def test_hessian_of_the_unrolled_value_matches_finite_differences_of_the_gradient():
  hessian = jax.jit(jax.hessian(_unrolled_value))(jnp.asarray(X6))
  chex.assert_shape(hessian, (*X6.shape, *X6.shape))
  flat = np.asarray(hessian).reshape(X6.size, X6.size)
  np.testing.assert_allclose(flat, flat.T, atol=1e-9 * np.abs(flat).max())
  direction = np.random.default_rng(2).normal(size=X6.shape)
  fd = helpers.central_difference(_unrolled_gradient, jnp.asarray(X6), direction)
  np.testing.assert_allclose(jnp.tensordot(hessian, direction, 2), fd,
                             atol=1e-7 * np.abs(fd).max())


# ----------------------------------------------------------------------------- plans and geometry


def test_plan_functions_reject_another_geometry_of_the_same_shape(dtype):
  x, y, a, b = _problem(dtype=dtype)
  geom = otkit.PointCloud(x, y)
  out = otkit.solve(geom, a, b, epsilon=0.5)
  v = np.ones(M, dtype)
  calls = (otkit.transport_plan, otkit.transport_cost, lambda g, o: otkit.apply_plan(g, o, v))
  for other in (otkit.PointCloud(x + 1, y), otkit.PointCloud(x, y[::-1]),
                otkit.CostMatrix(helpers.sq_cost(x, y).astype(dtype) + 1)):
    for call in calls:
      with pytest.raises(ValueError, match="`geom` is not the geometry"):
        call(other, out)
  same = otkit.PointCloud(x.copy(), y.copy())  # equal data in new arrays is the same geometry
  chex.assert_trees_all_equal(otkit.transport_plan(same, out), otkit.transport_plan(geom, out))
  with pytest.raises(ValueError, match="shape"):
    otkit.transport_plan(otkit.PointCloud(x, y[:-1]), out)


# ----------------------------------------------------------------------------- the divergence


# Under jit in float64; float32 eagerly.
@pytest.mark.parametrize("dtype, jit", [(np.float32, False), (np.float64, False),
                                        (np.float64, True)],
                         ids=["f32-eager", "f64-eager", "f64-jit"])
def test_divergence_of_a_geometry_equals_the_points_form(dtype, jit):
  x, y, a, b = _problem(dtype=dtype)
  solver = otkit.Sinkhorn(tol=1e-5 if dtype == np.float32 else 1e-11, max_iters=TIGHT)
  by_geometry = _maybe_jit(
      lambda geom, a, b: otkit.sinkhorn_divergence(geom, a=a, b=b, epsilon=0.2, solver=solver),
      jit)(otkit.PointCloud(x, y), a, b)
  by_points = otkit.sinkhorn_divergence(x, y, a, b, epsilon=0.2, solver=solver)
  assert by_geometry.value.dtype == dtype and bool(by_geometry.converged)
  helpers.assert_trees_close(by_geometry, by_points,
                             rtol=1e-5 if dtype == np.float32 else 1e-12, atol=0)


def test_divergence_with_the_newton_solver_matches_sinkhorn():
  # n = m: the three Newton problems share one compilation (and the self-problems of Sinkhorn
  # that of the test above). Sinkhorn's divergence is checked against ott-jax's in
  # tests/estimators/test_divergence.py.
  x, y, a, b = _problem(n=N, m=N)
  epsilon = 0.05
  newton = otkit.sinkhorn_divergence(x, y, a, b, epsilon=epsilon,
                                     solver=otkit.SinkhornNewton(tol=1e-9))
  sinkhorn = otkit.sinkhorn_divergence(x, y, a, b, epsilon=epsilon,
                                       solver=otkit.Sinkhorn(tol=1e-12, max_iters=TIGHT))
  assert bool(newton.converged) and bool(sinkhorn.converged) and newton.value.dtype == np.float64
  # An L1 marginal error of 1e-9 moves each value by at most 1e-9 · max |potential|.
  np.testing.assert_allclose(newton.value, sinkhorn.value, rtol=0, atol=1e-7)
