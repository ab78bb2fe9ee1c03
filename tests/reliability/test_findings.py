"""Regression tests of inputs that once gave silently wrong outputs (one test per finding)."""

import jax
import numpy as np
import ot
import pytest

import otkit


def _kl(p, q):
  """``Σ p log(p/q) − p + q`` with ``0 log 0 = 0``."""
  p, q = np.asarray(p, float), np.asarray(q, float)
  terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / q), 0.0)
  return np.sum(terms - p + q)


def test_unbalanced_zero_weight_gives_a_finite_value(dtype):
  # b = (0, 1): the zero-weight target point must not enter the dual objective as 0 × ∞.
  # Oracle: POT's unbalanced plan of the same problem without that point, whose objective
  # ⟨C,P⟩ + ε KL(P‖a⊗b) + ρ KL(P1‖a) + ρ KL(Pᵀ1‖b), ρ = ε τ/(1 − τ), is evaluated here.
  x, y = np.array([[0.0], [1.0], [2.0]], dtype), np.array([[0.0], [3.0]], dtype)
  a, b = np.full(3, 1 / 3, dtype), np.array([0.0, 1.0], dtype)
  eps, tau = 0.01, 0.5
  out = otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=eps, tau_a=tau, tau_b=tau)
  assert bool(out.converged) and np.isfinite(out.value)
  rho = eps * tau / (1 - tau)
  cost = (x.astype(float) - 3.0) ** 2
  plan = ot.unbalanced.sinkhorn_unbalanced(a.astype(float), np.ones(1), cost, eps, (rho, rho),
                                           reg_type="kl", method="sinkhorn_stabilized",
                                           numItermax=100000, stopThr=1e-14)
  ref = (np.sum(cost * plan) + eps * _kl(plan, a[:, None] * 1.0)
         + rho * _kl(plan.sum(1), a) + rho * _kl(plan.sum(0), np.ones(1)))
  np.testing.assert_allclose(out.value, ref, rtol=1e-5 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("field, message", [("x", "`x` contains"), ("a", "`a` has negative"),
                                            ("b", "different total mass")])
def test_arrays_closed_over_by_a_jitted_function_are_checked(field, message):
  # The same checks as an eager call: NaN points, negative weights, unequal mass.
  x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
  y, a, b = x + 1.0, np.full(5, 0.2, np.float32), None
  if field == "x":
    x[0, 0] = np.nan
  elif field == "a":
    a[:2] = -0.2, 0.6
  else:
    b = np.full(5, 0.4, np.float32)
  with pytest.raises(ValueError, match=message):
    jax.jit(lambda: otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=0.1).value)()


@pytest.mark.parametrize("command", ["distance", "otdd"])
@pytest.mark.parametrize("content", ["empty", "garbage", "complex"])
def test_cli_unreadable_files_give_one_line_and_exit_2(tmp_path, capsys, command, content):
  from otkit import cli

  good = tmp_path / "good.npz"
  np.savez(good, x=np.ones((4, 2)), y=np.zeros(4, int))
  bad = tmp_path / ("bad.npz" if command == "otdd" else "bad.npy")
  if content == "empty":
    bad.write_bytes(b"")
  elif content == "garbage":
    bad.write_text("not an array\n")
  elif command == "otdd":
    np.savez(bad, x=np.ones((4, 2)) + 1j, y=np.zeros(4, int))
  else:
    np.save(bad, np.ones((4, 2)) + 1j)
  other = good if command == "otdd" else tmp_path / "y.npy"
  if command == "distance":
    np.save(other, np.ones((4, 2)))
  assert cli.main([command, str(bad), str(other), "--epsilon", "0.1"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"otkit {command}: error:") and "bad.np" in err[0]


@pytest.mark.parametrize("kwargs", [dict(p=-1.0), dict(p=0.5), dict(power=0.0), dict(power=-1.0)])
def test_pnorm_outside_its_range_raises(kwargs):
  with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}` of PNorm"):
    otkit.PNorm(**kwargs)


@pytest.mark.parametrize("cost_fn", [pytest.param(otkit.PNorm(2.0, 1.0), marks=pytest.mark.slow),
                                     otkit.PNorm(1.5, 1.0)])
def test_divergence_gradient_with_p_norms_is_finite_at_coincident_points(cost_fn):
  # The self-problem OT(x, x) has zero distances on its diagonal, where t ↦ t^(1/p) has an
  # infinite derivative: the gradient must stay finite and match central differences (float64).
  x = np.random.default_rng(0).normal(size=(6, 2))
  solver = otkit.Sinkhorn(tol=1e-12, max_iters=5000, grad_mode="envelope")

  def value(x):
    return otkit.sinkhorn_divergence(x, x[::-1] + 0.3, epsilon=0.5, cost_fn=cost_fn,
                                     solver=solver).value

  grad = jax.grad(value)(x)
  assert np.all(np.isfinite(grad))
  direction = np.random.default_rng(1).normal(size=x.shape)
  h = 1e-6
  fd = (value(x + h * direction) - value(x - h * direction)) / (2 * h)
  np.testing.assert_allclose(np.vdot(grad, direction), fd, rtol=1e-6)


@pytest.mark.parametrize("bad, message", [(np.ones((4, 2)) + 1j, "real numbers"),
                                          ("abc", "array of numbers"),
                                          ([[1.0, 2.0], [3.0]], "array of numbers")])
def test_complex_strings_and_ragged_lists_name_the_argument(bad, message):
  key, good = jax.random.key(0), np.ones((4, 2))
  calls = [lambda: otkit.sinkhorn(otkit.PointCloud(bad, good), epsilon=1.0),
           lambda: otkit.sliced_wasserstein(key, bad, good),
           lambda: otkit.wasserstein_1d(good[:, 0], bad),
           lambda: otkit.gaussian_w2(bad, np.eye(2), np.zeros(2), np.eye(2))]
  for call in calls:
    with pytest.raises(ValueError, match=message):
      call()


def test_derived_quantities_validate_their_inputs():
  x = np.random.default_rng(0).normal(size=(5, 2))
  geom = otkit.PointCloud(x, x + 1.0)
  out = otkit.solve(geom, epsilon=0.5)
  with pytest.raises(ValueError, match="`vec` must have shape"):
    otkit.apply_plan(geom, out, np.ones(7))
  with pytest.raises(TypeError, match="`out` must be an otkit output"):
    otkit.check(None)
  with pytest.raises(ValueError, match="`out` must be an otkit.SinkhornOutput"):
    otkit.transport_cost(geom, None)
  energy = otkit.flows.sinkhorn_divergence_to(x, epsilon=0.1)
  with pytest.raises(ValueError, match="`x` contains"):
    energy(np.where(np.arange(10).reshape(5, 2) == 0, np.nan, x))
  with pytest.raises(ValueError, match="total mass"):
    otkit.flows.sinkhorn_divergence_to(x, np.full(5, 0.4), epsilon=0.1)


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_half_precision_default_weights_pass_the_mass_check(dtype_name):
  # Uniform 1/11 weights sum to 1 only to the dtype's resolution (bfloat16: 1.0078).
  x = jax.numpy.asarray(np.random.default_rng(0).normal(size=(11, 2)), dtype_name)
  out = otkit.sinkhorn(otkit.PointCloud(x, x + 1.0), epsilon=1.0, max_iters=50)
  assert out.f.dtype == x.dtype and np.isfinite(np.float32(out.value))
  with pytest.raises(ValueError, match="total mass"):
    otkit.sinkhorn(otkit.PointCloud(x, x + 1.0), None, jax.numpy.full(11, 0.2, dtype_name),
                   epsilon=1.0)


@pytest.mark.parametrize("scale, epsilon", [(1e18, 0.1), (1e30, 0.1), (1.0, 1e-12)])
def test_extreme_scales_are_never_reported_as_answers(scale, epsilon):
  # float32 cannot represent these problems' costs (1e36, 1e60) or kernels (C/ε = 1e12): eagerly,
  # costs that overflow are refused naming the points; traced (no values to check), the result
  # says so (NON_FINITE, or not converged) and otkit.check raises; never a finite-looking answer.
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(20, 2)).astype(np.float32), rng.normal(size=(15, 2)).astype(np.float32)
  solve = lambda x, y: otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=epsilon)  # noqa: E731
  if scale > 1:
    with pytest.raises(ValueError, match="`x` and `y` are too far apart for float32"):
      solve(scale * x, scale * y)
  outputs = [jax.jit(solve)(scale * x, scale * y)] + ([] if scale > 1 else [solve(x, y)])
  for out in outputs:
    assert not bool(out.converged)
    if not (np.isfinite(out.error) and np.all(np.isfinite(out.f)) and np.isfinite(out.value)):
      assert int(out.result) == otkit.Result.NON_FINITE
    with pytest.raises(RuntimeError):
      otkit.check(out)


def _one_d_problems_with_zero_weights(count):
  """Random 7 × 5 problems on [0, 1] with two (or fewer) zero source weights and one zero target
  weight, in float32."""
  rng = np.random.default_rng(0)
  problems = []
  for _ in range(count):
    x, y = rng.uniform(size=(7, 1)).astype(np.float32), rng.uniform(size=(5, 1)).astype(np.float32)
    a = rng.uniform(size=7).astype(np.float32)
    a[rng.integers(0, 7, 2)] = 0
    b = rng.uniform(size=5).astype(np.float32)
    b[rng.integers(0, 5, 1)] = 0
    problems.append((x, y, a / a.sum(), b / b.sum()))
  return problems


def test_float32_small_epsilon_plateaus_are_not_mistaken_for_the_precision_floor():
  # ε = 1e-4 × mean cost: the error stays on long plateaus (mass shifting between nearly separate
  # blocks) for thousands of sweeps. Where ott-jax's Sinkhorn reaches tol 1e-3, otkit must too
  # (these stopped after ~325 sweeps at errors 0.06 and 0.32, reported as a floor).
  from ott.geometry import pointcloud
  from ott.problems.linear import linear_problem
  from ott.solvers.linear import sinkhorn as ott_sinkhorn

  reference = ott_sinkhorn.Sinkhorn(max_iterations=50000, threshold=1e-3)
  problems = _one_d_problems_with_zero_weights(7)
  for x, y, a, b in (problems[0], problems[6]):
    epsilon = 1e-4 * float(np.mean((x - y.T) ** 2))
    theirs = reference(linear_problem.LinearProblem(pointcloud.PointCloud(x, y, epsilon=epsilon),
                                                    a, b))
    assert bool(theirs.converged)
    ours = otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=epsilon, max_iters=50000)
    assert int(ours.result) == otkit.Result.CONVERGED and float(ours.error) <= 1e-3


def test_a_float32_precision_floor_is_reported_as_stalled():
  # tol = 1e-8 is below what float32 can reach at this ε: the run stops at the floor, says so,
  # and the error it reports is the one recomputed from its potentials (float64 plan). The error
  # creeps down on the floor for a while (how long depends on the rounding: 6e3 to 1.7e4 sweeps
  # on one CPU under two XLA optimisation levels), so the cap leaves room.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(30, 2)).astype(np.float32)
  y = (0.8 * rng.normal(size=(30, 2)) + 1.0).astype(np.float32)
  out = otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=0.05, tol=1e-8, max_iters=150_000)
  assert int(out.result) == otkit.Result.STALLED and int(out.n_iters) < 150_000
  cost = ((x[:, None, :].astype(float) - y[None].astype(float)) ** 2).sum(-1)
  plan = np.exp((np.asarray(out.f, float)[:, None] + np.asarray(out.g, float)[None] - cost) / 0.05)
  plan /= 30 * 30
  error = np.abs(plan.sum(1) - 1 / 30).sum() + np.abs(plan.sum(0) - 1 / 30).sum()
  # float32 sums of 30 entries of size 1/30 round at ~2e-6 per marginal.
  assert error < 1e-4 and abs(error - float(out.error)) < 1e-5


@pytest.mark.parametrize("args, message", [((np.ones(3), np.ones((2, 1))), "`u` must be a non-empty factor"),
                                           ((np.ones((3, 2)), np.ones((2, 1))), "same rank"),
                                           ((np.full((3, 1), np.nan), np.ones((2, 1))), "`u` contains"),
                                           ((np.ones((3, 2)), np.ones((2, 2)), np.ones((3, 3))), "`m`")])
def test_frobenius_penalty_validates_its_factors(args, message):
  nn = pytest.importorskip("otkit.nn")
  with pytest.raises(ValueError, match=message):
    nn.frobenius_penalty(*args)


def test_the_sweep_that_ends_annealing_does_not_declare_convergence():
  # Found by the fuzz suite: the last annealing sweep updates g at the previous ε, so its column
  # error is 0 there but not at the target ε; convergence was declared on that stale error (the
  # plan's true L1 error 3.3e-3 against tol 1e-3, float64, an unbalanced problem).
  import problems

  p = problems.Params(n=5, m=4, d=2, dtype="float64", seed=1, scale_exp=0.0, eps_exp=-2.75,
                      tau=0.8125, zeros=0, near_zero=True, duplicates=1)
  problem = problems.make(p)
  out = problems.solve(problem)
  error, _, _ = problems.recompute(problem, out.f, out.g)
  assert int(out.result) == otkit.Result.CONVERGED
  assert error <= 1e-3 and abs(error - float(out.error)) < 1e-12
