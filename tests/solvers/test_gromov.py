"""Gromov–Wasserstein against POT (``entropic_gromov_wasserstein``, the fused and KL variants),
invariances, finite differences, and the sorting-based lower bound against brute force."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import otkit

N, M = 30, 25
EPS = 0.02
TIGHT = dict(solver=otkit.Sinkhorn(tol=1e-12, max_iters=20000), outer_tol=1e-10,
             max_outer_iters=1000)
POT_TIGHT = dict(max_iter=5000, tol=1e-13, numItermax=20000, stopThr=1e-14)


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  x, y = rng.normal(size=(N, 2)) / 4, rng.normal(size=(M, 3)) / 4
  a, b = rng.uniform(0.5, 1.0, N), rng.uniform(0.5, 1.0, M)
  return x, y, a / a.sum(), b / b.sum()


X, Y, A, B = _problem()
C1, C2 = ot.dist(X, X), ot.dist(Y, Y)


def _plan(out):
  return np.asarray(otkit.transport_plan(out))


@pytest.mark.parametrize("kind", ["points", "matrices"])
def test_matches_pot_entropic_and_fused(kind):
  """Square loss, same ε and product initialisation: the value and the plan of POT, for plain
  and fused GW, on point clouds (factored costs) and on cost matrices."""
  geoms = ((otkit.PointCloud(X), otkit.PointCloud(Y)) if kind == "points"
           else (otkit.CostMatrix(C1), otkit.CostMatrix(C2)))
  plan, log = ot.gromov.entropic_gromov_wasserstein(C1, C2, A, B, epsilon=EPS, log=True,
                                                     **POT_TIGHT)
  out = otkit.gromov_wasserstein(*geoms, A, B, epsilon=EPS, **TIGHT)
  assert bool(out.converged)
  np.testing.assert_allclose(out.value, log["gw_dist"], rtol=1e-8)
  np.testing.assert_allclose(_plan(out), plan, rtol=0, atol=1e-8 * plan.max())

  rng = np.random.default_rng(1)
  fx, fy = rng.normal(size=(N, 4)) / 3, rng.normal(size=(M, 4)) / 3
  cost_xy = ot.dist(fx, fy)
  geom_xy = otkit.PointCloud(fx, fy) if kind == "points" else otkit.CostMatrix(cost_xy)
  plan, log = ot.gromov.entropic_fused_gromov_wasserstein(cost_xy, C1, C2, A, B, epsilon=EPS,
                                                           alpha=0.3, log=True, **POT_TIGHT)
  out = otkit.gromov_wasserstein(*geoms, A, B, epsilon=EPS, geom_xy=geom_xy, fused_penalty=0.7,
                                 **TIGHT)
  assert bool(out.converged)
  np.testing.assert_allclose(out.value, log["fgw_dist"], rtol=1e-8)
  np.testing.assert_allclose(_plan(out), plan, rtol=0, atol=1e-8 * plan.max())


def test_kl_loss_and_asymmetric_costs_match_pot():
  plan, log = ot.gromov.entropic_gromov_wasserstein(C1 + 0.1, C2 + 0.1, A, B, epsilon=EPS,
                                                     loss_fun="kl_loss", log=True, **POT_TIGHT)
  out = otkit.gromov_wasserstein(otkit.CostMatrix(C1 + 0.1), otkit.CostMatrix(C2 + 0.1), A, B,
                                 epsilon=EPS, loss="kl", **TIGHT)
  np.testing.assert_allclose(out.value, log["gw_dist"], rtol=1e-8)
  np.testing.assert_allclose(_plan(out), plan, rtol=0, atol=1e-8 * plan.max())
  rng = np.random.default_rng(2)
  D1, D2 = rng.uniform(size=(N, N)), rng.uniform(size=(M, M))  # not symmetric
  # (At ε = 0.02 both iterations end in the same 2-cycle; at 0.05 they converge.)
  plan, log = ot.gromov.entropic_gromov_wasserstein(D1, D2, A, B, epsilon=0.05, log=True,
                                                     **POT_TIGHT)
  out = otkit.gromov_wasserstein(otkit.CostMatrix(D1), otkit.CostMatrix(D2), A, B,
                                 epsilon=0.05, **TIGHT)
  assert bool(out.converged)
  np.testing.assert_allclose(out.value, log["gw_dist"], rtol=1e-8)
  np.testing.assert_allclose(_plan(out), plan, rtol=0, atol=1e-8 * plan.max())


def test_invariant_to_rotation_translation_and_permutation():
  rng = np.random.default_rng(3)
  rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
  perm = rng.permutation(M)
  moved = (Y @ rotation + np.array([1.0, -2.0, 0.5]))[perm]
  out = otkit.gromov_wasserstein(otkit.PointCloud(X), otkit.PointCloud(Y), A, B, epsilon=EPS,
                                 **TIGHT)
  same = otkit.gromov_wasserstein(otkit.PointCloud(X), otkit.PointCloud(moved), A, B[perm],
                                  epsilon=EPS, **TIGHT)
  np.testing.assert_allclose(same.value, out.value, rtol=1e-9)
  np.testing.assert_allclose(_plan(same), _plan(out)[:, perm], rtol=0, atol=1e-9)


def test_unbalanced_objective_and_plan_functions():
  """τ < 1 on unequal masses: the plan is not balanced, ``reg_value`` is the stated
  objective of the returned plan (recomputed here from the plan), and the plan functions accept
  the output."""
  tau = 0.8
  out = otkit.gromov_wasserstein(otkit.PointCloud(X), otkit.PointCloud(Y), A, 1.5 * B,
                                 epsilon=EPS, tau_a=tau, tau_b=tau, **TIGHT)
  assert bool(out.converged)
  plan = _plan(out)
  r, c = plan.sum(1), plan.sum(0)
  assert 0.1 < plan.sum() < 0.95  # J grows as the mass squared: less mass than either measure
  J = (np.einsum("ik,i,k", C1 ** 2, r, r) + np.einsum("jl,j,l", C2 ** 2, c, c)
       - 2 * np.sum(C1 @ plan @ C2 * plan))
  ab = np.outer(A, 1.5 * B)
  kl = lambda p, q: np.sum(p * np.log(p / q) - p + q)  # noqa: E731
  rho = EPS * tau / (1 - tau)
  np.testing.assert_allclose(out.value, J, rtol=1e-9)
  np.testing.assert_allclose(out.reg_value, J + EPS * kl(plan, ab) + rho * kl(r, A)
                             + rho * kl(c, 1.5 * B), rtol=1e-9)
  v = np.arange(M, dtype=float)
  np.testing.assert_allclose(otkit.apply_plan(out, v), plan @ v, rtol=1e-9)
  np.testing.assert_allclose(otkit.apply_plan(out, np.ones(N), axis=0), c, rtol=1e-9)
  np.testing.assert_allclose(otkit.transport_cost(out), np.sum(plan * out.geom.cost_matrix),
                             rtol=1e-9)


def _check_gradients(fn, args, mass_kept=()):
  """Directional derivatives of ``fn`` in each argument against central differences."""
  rng = np.random.default_rng(4)
  fn = jax.jit(fn)
  grads = jax.grad(fn, argnums=tuple(range(len(args))))(*args)
  for k, grad in enumerate(grads):
    direction = rng.normal(size=np.shape(args[k]))
    if k in mass_kept:
      direction -= direction.mean()  # balanced weights keep their mass
    h = 1e-5
    plus, minus = list(args), list(args)
    plus[k], minus[k] = args[k] + h * direction, args[k] - h * direction
    fd = (fn(*plus) - fn(*minus)) / (2 * h)
    np.testing.assert_allclose(np.sum(np.asarray(grad) * direction), fd, rtol=2e-6, atol=1e-9)


_SMALL = np.random.default_rng(4)
_x, _y = _SMALL.normal(size=(12, 2)) / 3, _SMALL.normal(size=(10, 3)) / 3
_fx, _fy = _SMALL.normal(size=(12, 2)) / 3, _SMALL.normal(size=(10, 2)) / 3
_a, _b = _SMALL.uniform(0.5, 1, 12), _SMALL.uniform(0.5, 1, 10)
_a, _b = _a / _a.sum(), _b / _b.sum()
_GRAD_TIGHT = dict(solver=otkit.Sinkhorn(tol=1e-13, max_iters=20000), outer_tol=1e-12,
                   max_outer_iters=2000)


def test_gradients_match_finite_differences():
  """Envelope derivatives of ``reg_value`` (float64, tight tolerances) in the points, the
  weights, ε and β of a fused problem on factored costs."""
  def fused(x, y, a, b, eps, beta, fx):
    return otkit.gromov_wasserstein(otkit.PointCloud(x), otkit.PointCloud(y), a, b,
                                    epsilon=eps, geom_xy=otkit.PointCloud(fx, _fy),
                                    fused_penalty=beta, **_GRAD_TIGHT).reg_value

  _check_gradients(fused, (_x, _y, _a, _b, 0.05, 0.3, _fx), mass_kept=(2, 3))


@pytest.mark.slow
def test_unbalanced_dense_gradients_match_finite_differences():
  def unbalanced(x, y, a, b, eps, tau):
    geoms = [otkit.CostMatrix(otkit.PointCloud(z).cost_matrix) for z in (x, y)]
    return otkit.gromov_wasserstein(*geoms, a, b, epsilon=eps, tau_a=tau, tau_b=0.9,
                                    **_GRAD_TIGHT).reg_value

  _check_gradients(unbalanced, (_x, _y, _a, _b, 0.05, 0.8))


def test_float32_jit_vmap_and_the_reported_result():
  """A batch of three float32 problems under ``jit(vmap)`` (one compilation) agrees with
  float64; a run that cannot reach its tolerance says so."""
  rng = np.random.default_rng(5)
  xs = np.stack([rng.normal(size=(N, 2)) / 4 for _ in range(3)]).astype(np.float32)
  y = Y.astype(np.float32)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def batch(xs):
    return jax.vmap(lambda x: otkit.gromov_wasserstein(otkit.PointCloud(x), otkit.PointCloud(y),
                                                       epsilon=EPS))(xs)

  out = batch(xs)
  assert out.value.dtype == jnp.float32 and out.value.shape == (3,)
  assert np.all(np.asarray(out.converged))
  for k in range(3):
    ref = otkit.gromov_wasserstein(otkit.PointCloud(xs[k].astype(float)), otkit.PointCloud(Y),
                                   epsilon=EPS, **TIGHT)
    np.testing.assert_allclose(out.value[k], ref.value, rtol=2e-2)
  # An outer tolerance below the floor of the inner solves' accuracy: the run stops improving
  # and says so (the compiled program of the float64 references).
  floor = otkit.gromov_wasserstein(otkit.PointCloud(X), otkit.PointCloud(Y), epsilon=EPS,
                                   **(TIGHT | dict(outer_tol=1e-30)))
  assert otkit.Result(int(floor.result)) == otkit.Result.STALLED and not bool(floor.converged)
  with pytest.raises(RuntimeError, match="STALLED"):
    otkit.check(floor)


def _brute_force_gw(A, B):
  """The smallest ``J`` over the ``n!`` permutation couplings (uniform weights)."""
  n = A.shape[0]
  perms = np.array(list(itertools.permutations(range(n))))
  permuted = B[perms[:, :, None], perms[:, None, :]]
  return float(np.min(np.sum((A - permuted) ** 2, axis=(1, 2)))) / n ** 2


def test_lower_bound_below_every_coupling_and_tight_on_isometries():
  """PAPERS §G.4: on random non-negative graphs of 7 nodes both bounds are at most the best of
  the 5040 permutation couplings; they are at most otkit's entropic GW value; they vanish on
  isometric pairs."""
  rng = np.random.default_rng(6)
  for _ in range(10):
    Z1, Z2 = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    G1, G2 = np.abs(Z1 @ Z1.T), np.abs(Z2 @ Z2.T)
    best = _brute_force_gw(G1, G2)
    for signature in ("strength", "eccentricity"):
      bound = otkit.gw_lower_bound(otkit.CostMatrix(G1), otkit.CostMatrix(G2),
                                   signature=signature)
      assert float(bound) <= best * (1 + 1e-12)
  for seed in range(3):
    x, y, a, b = _problem(seed)
    out = otkit.gromov_wasserstein(otkit.PointCloud(x), otkit.PointCloud(y), a, b, epsilon=EPS,
                                   **TIGHT)
    for geoms in ((otkit.PointCloud(x), otkit.PointCloud(y)),
                  (otkit.CostMatrix(ot.dist(x, x)), otkit.CostMatrix(ot.dist(y, y)))):
      for signature in ("strength", "eccentricity"):
        bound = float(otkit.gw_lower_bound(*geoms, a, b, signature=signature))
        assert 0 < bound <= float(out.value)
  # Isometries: a rotated point cloud, a permuted graph.
  rotation = np.linalg.qr(rng.normal(size=(2, 2)))[0]
  perm = rng.permutation(N)
  assert float(otkit.gw_lower_bound(otkit.PointCloud(X), otkit.PointCloud(X[perm] @ rotation),
                                    A, A[perm])) < 1e-12
  assert float(otkit.gw_lower_bound(otkit.CostMatrix(C1), otkit.CostMatrix(C1[np.ix_(perm, perm)]),
                                    A, A[perm], signature="strength")) < 1e-12


def test_lower_bound_jit_vmap_grad_and_sort_initialisation():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(20, 2))
  y = rng.normal(size=(15, 2)) * np.array([1.0, 2.0])
  fn = jax.jit(lambda x: otkit.gw_lower_bound(otkit.PointCloud(x), otkit.PointCloud(y)))
  grad = jax.grad(fn)(x)
  direction = rng.normal(size=x.shape)
  fd = (fn(x + 1e-6 * direction) - fn(x - 1e-6 * direction)) / 2e-6
  np.testing.assert_allclose(np.sum(grad * direction), fd, rtol=1e-6)
  y32 = y.astype(np.float32)
  batch = jax.vmap(lambda x: otkit.gw_lower_bound(otkit.PointCloud(x), otkit.PointCloud(y32)))(
      np.stack([x, 2 * x]).astype(np.float32))
  assert batch.dtype == jnp.float32
  np.testing.assert_allclose(batch, [fn(x), fn(2 * x)], rtol=1e-4)
  # Started from the sorted coupling (data, not a static option: the program of the float64
  # tests runs it), the run converges to a coupling of a and b.
  out = otkit.gromov_wasserstein(otkit.PointCloud(X), otkit.PointCloud(Y), A, B, epsilon=EPS,
                                 init="sort", **TIGHT)
  assert bool(out.converged)
  plan = _plan(out)
  np.testing.assert_allclose(plan.sum(1), A, atol=1e-10)
  np.testing.assert_allclose(plan.sum(0), B, atol=1e-10)
  assert float(out.value) >= float(otkit.gw_lower_bound(otkit.PointCloud(X), otkit.PointCloud(Y),
                                                        A, B))


@pytest.mark.slow
def test_sort_initialisation_matches_a_rotated_copy_point_to_point():
  rng = np.random.default_rng(8)
  perm = rng.permutation(N)
  rotation = np.linalg.qr(rng.normal(size=(2, 2)))[0]
  out = otkit.gromov_wasserstein(otkit.PointCloud(X), otkit.PointCloud(X[perm] @ rotation),
                                 A, A[perm], epsilon=1e-3, init="sort")
  assert np.array_equal(np.argmax(_plan(out), 1), np.argsort(perm))


def test_bad_inputs_raise_named_errors():
  px, py = otkit.PointCloud(X), otkit.PointCloud(Y)
  gw = otkit.gromov_wasserstein
  cases = [
      (lambda: gw(otkit.CostMatrix(np.ones((3, 4))), py, epsilon=0.1), "geom_xx"),
      (lambda: gw(px, otkit.PointCloud(Y, Y + 1.0), epsilon=0.1), "geom_yy"),
      (lambda: gw(px, py, np.ones(N - 1) / (N - 1), epsilon=0.1), "`a`"),
      (lambda: gw(px, py, b=-B, epsilon=0.1), "`b`"),
      (lambda: gw(otkit.PointCloud(np.where(X > 0, np.nan, X)), py, epsilon=0.1), "`x`"),
      (lambda: gw(px, py, epsilon=0.0), "epsilon"),
      (lambda: gw(px, py, A, 2 * B, epsilon=0.1), "total mass"),
      (lambda: gw(px, py, epsilon=0.1, geom_xy=otkit.PointCloud(X, Y[:, :2]),
                  fused_penalty=1.5), "fused_penalty"),
      (lambda: gw(px, py, epsilon=0.1, fused_penalty=0.5), "fused_penalty"),
      (lambda: gw(px, py, epsilon=0.1, geom_xy=otkit.CostMatrix(np.ones((N, N))),
                  fused_penalty=0.5), "geom_xy"),
      (lambda: gw(px, py, epsilon=0.1, loss="l1"), "loss"),
      (lambda: gw(otkit.CostMatrix(C1 - 1.0), otkit.CostMatrix(C2), epsilon=0.1, loss="kl"),
       "geom_xx"),
      (lambda: gw(px, py, epsilon=0.1, init=np.ones((N, N))), "init"),
      (lambda: gw(px, py, epsilon=0.1, init="random"), "init"),
      (lambda: gw(px, py, epsilon=0.1, max_outer_iters=0), "max_outer_iters"),
      (lambda: gw(np.ones((N, 2)), py, epsilon=0.1), "geom_xx"),
      (lambda: otkit.gw_lower_bound(px, py, signature="degree"), "signature"),
      (lambda: otkit.gw_lower_bound(otkit.CostMatrix(np.ones((2, 3))), py), "geom_xx"),
  ]
  for call, name in cases:
    with pytest.raises(ValueError, match=name):
      call()
