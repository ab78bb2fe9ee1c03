"""Sinkhorn–Newton–Sparse: the calibrated fixture of Tang et al. (ICLR 2024), plans against POT
and a long Sinkhorn run, gradients against finite differences and Sinkhorn's, diffuse plans,
float32, jit, vmap and input errors.

Problems share shapes and options so that each compiled solve serves several tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit
from otkit.solvers import _dual
from otkit.solvers import _newton
from otkit.solvers import _newton_hessian
from otkit.solvers import _solve

# The random assignment problem of the paper: C ~ U[0, 1], n = 200, η = 1/ε = 1200, N₁ = 20
# Sinkhorn sweeps, λ = 5/n, float64.
ETA = 1200.0
PAPER = dict(density=5, warmup_iters=20, warmup_tol=0.0, anneal=False)
MAX_NEWTON_ITERS = otkit.SinkhornNewton().max_newton_iters
# A small point-cloud problem with random weights, for plans and gradients.
N, M, EPS = 14, 11, 0.05


def _assignment(dtype=np.float64, n=200, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, n)).astype(dtype)


def _small(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(N, 2))
  y = rng.normal(size=(M, 2)) * 0.7 + 0.5
  a = rng.uniform(0.3, 1.0, N)
  b = rng.uniform(0.3, 1.0, M)
  return x, y, a / a.sum(), b / b.sum()


_plan = helpers.plan
_l1_error = helpers.l1_marginal_error


def _dual_value_rounding(a, b, f, g, epsilon):
  """A few ulps of the magnitudes summed in the dual value ``⟨a, f⟩ + ⟨b, g⟩ − ε(ΣP − 1)``."""
  a, b, f, g = (np.asarray(v, np.float64) for v in (a, b, f, g))
  return 8 * helpers.EPS64 * (np.abs(a * f).sum() + np.abs(b * g).sum() + 2 * epsilon)


# ----------------------------------------------------------------------------- the paper's fixture


def test_paper_fixture_reaches_1e_10_within_60_iterations():
  C = _assignment()
  n = C.shape[0]
  u = np.full(n, 1.0 / n)
  out = otkit.sinkhorn_newton(otkit.CostMatrix(C), epsilon=1.0 / ETA, tol=1e-10, **PAPER)
  assert bool(out.converged) and int(out.n_iters) <= 60  # observed: 35, as in the paper
  error = _l1_error(_plan(C, u, u, out.f, out.g, 1.0 / ETA), u, u)
  assert error <= 1e-10
  np.testing.assert_allclose(float(out.error), error, rtol=1e-2, atol=1e-14)


def test_plain_sinkhorn_is_far_from_1e_5_after_2000_sweeps():
  # The other half of the fixture: without Newton steps the same problem is slow.
  C = _assignment()
  out = otkit.sinkhorn(otkit.CostMatrix(C), epsilon=1.0 / ETA, tol=1e-6, anneal=False,
                       max_iters=2000)
  assert not bool(out.converged) and float(out.error) > 1e-5


# ----------------------------------------------------------------------------- solutions


def test_plan_matches_pot_and_a_long_sinkhorn_run():
  x, y, a, b = _small()
  geom = otkit.PointCloud(x, y)
  C = np.asarray(geom.cost_matrix)
  out = otkit.sinkhorn_newton(geom, a, b, epsilon=EPS, tol=1e-12)
  assert bool(out.converged)
  P = _plan(C, a, b, out.f, out.g, EPS)
  P_pot = ot.sinkhorn(a, b, C, EPS, method="sinkhorn_log", stopThr=1e-15, numItermax=200000)
  # The static cap of the tight solves of test_sinkhorn.py (a shared compilation); ~100 needed.
  long_run = otkit.sinkhorn(geom, a, b, epsilon=EPS, tol=1e-13, max_iters=10000)
  assert bool(long_run.converged)
  np.testing.assert_allclose(P, P_pot, atol=1e-8 * P.max(), rtol=0)
  np.testing.assert_allclose(P, _plan(C, a, b, long_run.f, long_run.g, EPS), atol=1e-8 * P.max(),
                             rtol=0)
  # A fixed point of one Sinkhorn sweep: the f-update leaves f where it is.
  f_next = -EPS * np.log(np.exp(np.log(b)[None] + (np.asarray(out.g)[None] - C) / EPS).sum(1))
  np.testing.assert_allclose(f_next, out.f, atol=1e-10)
  # The balanced gauge ⟨a, f⟩ = ⟨b, g⟩ of `sinkhorn`.
  np.testing.assert_allclose(a @ np.asarray(out.f), b @ np.asarray(out.g), atol=1e-12)


def test_wide_problem_gives_the_transposed_plan():
  # n < m takes the other Schur complement in the Newton system.
  x, y, a, b = _small()
  C = np.asarray(otkit.PointCloud(x, y).cost_matrix)
  out = otkit.sinkhorn_newton(otkit.PointCloud(y, x), b, a, epsilon=EPS, tol=1e-12)
  assert bool(out.converged) and out.f.shape == (M,)
  P_pot = ot.sinkhorn(a, b, C, EPS, method="sinkhorn_log", stopThr=1e-15, numItermax=200000)
  np.testing.assert_allclose(_plan(C.T, b, a, out.f, out.g, EPS), P_pot.T, atol=1e-8 * P_pot.max(),
                             rtol=0)


def test_unbalanced_plan_matches_pot():
  x, y, a, b = _small()
  b = 1.5 * b
  tau_a, tau_b = 0.8, 0.6
  geom = otkit.PointCloud(x, y)
  C = np.asarray(geom.cost_matrix)
  out = otkit.sinkhorn_newton(geom, a, b, epsilon=EPS, tau_a=tau_a, tau_b=tau_b, tol=1e-12)
  assert bool(out.converged)
  reg_m = tuple(EPS * t / (1 - t) for t in (tau_a, tau_b))
  P_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, C, EPS, reg_m, method="sinkhorn_stabilized",
                                            reg_type="kl", stopThr=1e-15, numItermax=200000)
  np.testing.assert_allclose(_plan(C, a, b, out.f, out.g, EPS), P_pot, atol=1e-9, rtol=0)


def test_zero_weights():
  x, y, a, b = _small()
  a = a.copy()
  a[[2, 7]] = 0.0
  a /= a.sum()
  geom = otkit.PointCloud(x, y)
  out = otkit.sinkhorn_newton(geom, a, b, epsilon=EPS, tol=1e-12)
  assert bool(out.converged) and np.all(np.isfinite(out.f)) and np.all(np.isfinite(out.g))
  keep = a > 0
  P = _plan(np.asarray(geom.cost_matrix)[keep], a[keep], b, out.f[keep], out.g, EPS)
  assert _l1_error(P, a[keep], b) <= 1e-12


# ----------------------------------------------------------------------------- gradients


WEIGHTS = np.random.default_rng(5).normal(size=N + M)


def _loss(mode, x, a, epsilon):
  """A scalar of the potentials and the value (the value only for the envelope mode)."""
  _, y, _, b = _small()
  caps = dict(warmup_iters=100, max_newton_iters=30) if mode == "unroll" else {}  # scan lengths
  out = otkit.sinkhorn_newton(otkit.PointCloud(x, y), a, b, epsilon=epsilon, tol=1e-12,
                              grad_mode=mode, **caps)
  if mode == "envelope":
    return out.value
  return out.value + jnp.dot(WEIGHTS[:N], out.f) + jnp.dot(WEIGHTS[N:], out.g)


# Jitted once per grad mode: a jitted gradient compiles faster than an eager one. (The finite
# differences call `_loss` eagerly: its solve is the compilation the plan tests use.)
_grad_x = jax.jit(jax.grad(_loss, argnums=1), static_argnums=0)
_grad_x_a_eps = jax.jit(jax.grad(_loss, argnums=(1, 2, 3)), static_argnums=0)


def _sinkhorn_gradient(x, a, epsilon, value_only=False):
  """Sinkhorn's gradient of the same scalar in ``(x, a, ε)``, by its implicit mode (checked
  against finite differences and its other modes in test_gradients.py; the compilation is the
  one those tests share)."""
  _, y, _, b = _small()
  weights = (1.0, np.zeros(N), np.zeros(M)) if value_only else (1.0, WEIGHTS[:N], WEIGHTS[N:])
  return helpers.sinkhorn_objective_grad("implicit", x, a, epsilon, 1.0, y, b, weights,
                                         1e-13)[:3]


def test_implicit_gradient_matches_finite_differences_and_sinkhorn():
  x, _, a, _ = _small()
  grad = _grad_x_a_eps("implicit", jnp.asarray(x), jnp.asarray(a), EPS)
  reference = _sinkhorn_gradient(x, a, EPS)
  for mine, theirs in zip(grad, reference):
    np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-6 * np.abs(theirs).max())
  rng = np.random.default_rng(3)
  dx = rng.normal(size=x.shape)
  da = rng.normal(size=N)
  da -= da.mean()  # stay on Σa = Σb
  h = 1e-5
  for g, point, direction, which in ((grad[0], x, dx, 0), (grad[1], a, da, 1)):
    def shifted(s):
      args = [jnp.asarray(x), jnp.asarray(a), EPS]
      args[which] = jnp.asarray(point + s * direction)
      return float(_loss("implicit", *args))
    fd = (shifted(h) - shifted(-h)) / (2 * h)
    np.testing.assert_allclose(np.vdot(g, direction), fd, rtol=1e-5)


# Unrolled and envelope gradients through Newton steps compile long programs: -m slow (Newton's
# implicit gradient is checked by default above, and the other modes on Sinkhorn).
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["unroll", "envelope"])
def test_other_grad_modes_agree_with_sinkhorn(mode):
  x, _, a, _ = _small()
  grad = _grad_x(mode, jnp.asarray(x), jnp.asarray(a), EPS)
  reference = _sinkhorn_gradient(x, a, EPS, value_only=mode == "envelope")[0]
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())


# ----------------------------------------------------------------------------- diffuse plans


def _blobs():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(300, 2))
  y = rng.normal(size=(300, 2)) * 0.5 + [3.0, 0.0]
  C = ((x[:, None] - y[None]) ** 2).sum(-1)
  return C / C.max()


BLOBS = dict(epsilon=1e-3, warmup_iters=200, warmup_tol=0.0, anneal=False)


def test_blobs_never_lose_dual_value_and_report_truthfully():
  C = _blobs()
  geom = otkit.CostMatrix(C)
  u = np.full(300, 1 / 300)
  warm = otkit.sinkhorn(geom, epsilon=1e-3, anneal=False, max_iters=200, tol=1e-14)
  full = otkit.sinkhorn_newton(geom, tol=1e-10, **BLOBS)
  # 1e-17 is out of float64's reach: the solver must stop on its own and say so.
  floor = otkit.sinkhorn_newton(geom, tol=1e-17, **BLOBS)
  for out, tol in ((full, 1e-10), (floor, 1e-17)):
    assert np.all(np.isfinite(out.f)) and np.all(np.isfinite(out.g)) and np.isfinite(out.value)
    rounding = (_dual_value_rounding(u, u, out.f, out.g, 1e-3)
                + _dual_value_rounding(u, u, warm.f, warm.g, 1e-3))
    assert float(out.value) >= float(warm.value) - rounding
    # The reported and the recomputed error each carry the float64 rounding of 90 000 entries
    # whose exponents are O(1/ε) (about 6e-13 here): at the floor they agree to that, not to 1 %.
    error = _l1_error(_plan(C, u, u, out.f, out.g, 1e-3), u, u)
    rounding = helpers.marginal_error_rounding(C, u, u, out.f, out.g, 1e-3)
    np.testing.assert_allclose(float(out.error), error, rtol=1e-2, atol=2 * rounding)
    assert bool(out.converged) == (float(out.error) <= tol)
  assert bool(full.converged)  # here it does converge, in far fewer than Sinkhorn's 37 000 sweeps
  assert int(full.n_iters) < 400
  assert not bool(floor.converged) and float(floor.error) < 1e-12
  assert int(floor.result) == otkit.Result.STALLED
  assert int(floor.n_iters) < 200 + MAX_NEWTON_ITERS


def test_every_stage2_iteration_keeps_the_dual_objective():
  # White box: step the stage-2 loop by hand on the diffuse problem, with a sparse Hessian that
  # drops most of the plan's mass, and check the dual objective after every iteration.
  C = _blobs()
  problem = _solve.make_problem(otkit.CostMatrix(C), None, None, 1e-3, 1.0, 1.0)
  sizes = _newton_hessian.sparsity(300, 300, 2.0)
  # The warm start of test_blobs_never_lose_dual_value_and_report_truthfully (one compilation).
  warm = otkit.sinkhorn(otkit.CostMatrix(C), epsilon=1e-3, anneal=False, max_iters=200, tol=1e-14)
  geom_t = problem.geom.transpose()

  @jax.jit
  def stage2(f, g, n_iters):  # 40 iterations, one compilation
    state = _newton.start_stage2(problem, geom_t, sizes.candidates, f, g, n_iters,
                                 jnp.asarray(False), jnp.asarray(1.5))

    def iteration(s, _):
      new = jax.lax.cond(
          s.fallback > 0, lambda t: _newton.sinkhorn_sweep(problem, geom_t, t),
          lambda t: _newton.newton_step(problem, geom_t, sizes, 500, False, t), s)
      return new, (s.fallback > 0, _dual.dual_objective(problem, new.f, new.g), new.f, new.g)

    _, history = jax.lax.scan(iteration, state, None, length=40)
    return _dual.dual_objective(problem, state.f, state.g), state.f, state.g, history

  value0, f0, g0, (kinds, values, fs, gs) = stage2(warm.f, warm.g, warm.n_iters)
  values = np.concatenate([[value0], values])
  fs, gs = np.concatenate([[f0], fs]), np.concatenate([[g0], gs])
  rounding = max(_dual_value_rounding(problem.a, problem.b, f, g, 1e-3) for f, g in zip(fs, gs))
  assert np.any(kinds) and not np.all(kinds)  # both Newton steps and sweeps happened
  assert np.all(np.diff(values) >= -2 * rounding), np.diff(values).min()


# ----------------------------------------------------------------------------- float32, jit, vmap


def test_float32_stops_at_its_precision_and_says_so():
  C = _assignment(np.float32)
  geom = otkit.CostMatrix(C)
  u = np.full(200, 1 / 200)
  loose = otkit.sinkhorn_newton(geom, epsilon=np.float32(1 / ETA), tol=1e-4)
  tight = otkit.sinkhorn_newton(geom, epsilon=np.float32(1 / ETA), tol=1e-10)
  assert loose.f.dtype == jnp.float32 and bool(loose.converged)
  assert not bool(tight.converged)
  assert int(tight.result) == otkit.Result.STALLED
  assert int(tight.n_iters) < MAX_NEWTON_ITERS
  for out in (loose, tight):
    assert np.all(np.isfinite(out.f)) and np.isfinite(out.value)
    error = _l1_error(_plan(C.astype(np.float64), u, u, out.f, out.g, np.float64(np.float32(1 / ETA))),
                      u, u)
    assert error <= 2 * float(out.error) + 1e-6
  assert float(tight.error) <= 1e-5  # what float32 can hold here (observed 6e-7)


def test_jit_equals_eager_and_does_not_recompile():
  x, y, a, b = _small()

  def solve(x, a, epsilon, solver):
    return otkit.solve(otkit.PointCloud(x, y), a, b, epsilon=epsilon, solver=solver)

  eager = otkit.sinkhorn_newton(otkit.PointCloud(x, y), a, b, epsilon=EPS, tol=1e-12)
  x2, _, a2, _ = _small(seed=1)
  # A second call with new data, ε and tol of the same shapes is not traced again.
  out, _ = helpers.assert_no_recompile(solve, (x, a, EPS, otkit.SinkhornNewton(tol=1e-12)),
                                       (x2, a2, 0.08, otkit.SinkhornNewton(tol=1e-11)))
  np.testing.assert_allclose(out.f, eager.f, atol=1e-12)
  assert int(out.n_iters) == int(eager.n_iters)
  # The public function called eagerly compiles nothing new either.
  with helpers.compilations() as compiled:
    otkit.sinkhorn_newton(otkit.PointCloud(x2, y), a2, b, epsilon=0.08, tol=1e-11)
  assert not compiled, compiled


# float64 (a second batch and one more compilation per problem) runs with -m slow.
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)],
                         ids=["f32", "f64"])
def test_vmap_over_a_batch_of_four_problems(dtype):
  Cs = np.stack([_assignment(dtype, n=40, seed=s) for s in range(4)])
  eps = np.asarray([1 / 300, 1 / 400, 1 / 500, 1 / 600], dtype)
  tol = 1e-4 if dtype == np.float32 else 1e-10

  def solve(C, epsilon):
    return otkit.sinkhorn_newton(otkit.CostMatrix(C), epsilon=epsilon, tol=tol)

  batched = jax.jit(jax.vmap(solve))(Cs, eps)
  assert batched.f.shape == (4, 40) and batched.f.dtype == dtype
  u = np.full(40, 1 / 40)
  for i in range(4):
    assert bool(batched.converged[i])
    P = _plan(Cs[i].astype(np.float64), u, u, batched.f[i], batched.g[i], np.float64(eps[i]))
    assert _l1_error(P, u, u) <= 2 * tol
    if dtype == np.float64:  # one more compilation; float32 is checked by the error above
      # At this ε the potentials of nearly disconnected parts of the plan are determined only
      # loosely by the marginals; the plan and the value are determined tightly.
      single = solve(Cs[i], eps[i])
      P_single = _plan(Cs[i], u, u, single.f, single.g, eps[i])
      np.testing.assert_allclose(P, P_single, atol=1e-9, rtol=0)
      np.testing.assert_allclose(batched.value[i], single.value, rtol=1e-10)


# ----------------------------------------------------------------------------- input errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(density=0), "`density`"),
    (dict(density=-1.0), "`density`"),
    (dict(density=np.nan), "`density`"),
    (dict(density=np.inf), "`density`"),
    (dict(density="dense"), "`density`"),
    (dict(density=True), "`density`"),
    (dict(warmup_iters=-1), "`warmup_iters`"),
    (dict(warmup_iters=2.5), "`warmup_iters`"),
    (dict(warmup_iters=None), "`warmup_iters`"),
    (dict(warmup_tol=-1e-3), "`warmup_tol`"),
    (dict(warmup_tol=np.nan), "`warmup_tol`"),
    (dict(max_newton_iters=0), "`max_newton_iters`"),
    (dict(newton_cg_maxiter=0), "`newton_cg_maxiter`"),
    (dict(epsilon=0.0), "`epsilon`"),
    (dict(tol=-1.0), "`tol`"),
    (dict(grad_mode="backprop"), "`grad_mode`"),
    (dict(a=np.ones(3)), "`a`"),
])
def test_bad_inputs_raise_value_error_naming_the_argument(kwargs, match):
  x, y, _, _ = _small()
  args = dict(epsilon=EPS)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.sinkhorn_newton(otkit.PointCloud(x, y), **args)
