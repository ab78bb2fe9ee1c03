"""gradient_flow and the energies: values against POT and brute force, gradients against finite
differences, jit/vmap/grad, optax steps, the stopping rule, failures and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import ot
import pytest
from scipy.special import logsumexp

import helpers
import otkit
import otkit.flows as fl


# The solver objects of the energies: their defaults (envelope gradients; the OTDD solver
# annealed) with a tighter tolerance.
def _divergence_solver(tol):
  return otkit.Sinkhorn(tol=tol, grad_mode="envelope")


def _otdd_solver(tol):
  return otkit.Sinkhorn(tol=tol, anneal=True, grad_mode="envelope")


def _half_sq(z):
  return 0.5 * jnp.sum(z * z)


def _quartic(z):
  return 0.25 * jnp.sum(z ** 4)


def _gauss(z):
  return jnp.exp(-jnp.sum(z * z))


QUADRATIC = fl.potential_energy(_half_sq)
MIXED = fl.potential_energy(_quartic) + 0.5 * fl.interaction_energy(_gauss)


# ---------------------------------------------------------------------------------------------
# Energies against brute force and POT


def test_potential_and_interaction_values_match_brute_force(rng):
  x = rng.normal(size=(6, 3))
  pairs = sum(float(_gauss(x[i] - x[j])) for i in range(6) for j in range(6))
  expected = np.mean([float(_quartic(p)) for p in x]) + 0.5 * 0.5 * pairs / 36
  assert abs(float(MIXED(x)) - expected) < 1e-12
  chunked = fl.interaction_energy(_gauss, chunk_size=4)
  assert abs(float(chunked(x)) - 0.5 * pairs / 36) < 1e-12


def test_energy_algebra(rng):
  x = rng.normal(size=(5, 2))
  p, w = float(QUADRATIC(x)), float(fl.interaction_energy(_gauss)(x))
  combos = {
      "sum": (QUADRATIC + fl.interaction_energy(_gauss), p + w),
      "total": (fl.total(QUADRATIC, fl.interaction_energy(_gauss)), p + w),
      "scale": (3.0 * QUADRATIC - fl.interaction_energy(_gauss) / 2.0, 3 * p - w / 2),
      "function": (QUADRATIC + (lambda z: jnp.sum(z)), p + float(np.sum(x))),
  }
  for name, (energy, expected) in combos.items():
    assert abs(float(energy(x)) - expected) < 1e-12, name


def test_kde_entropy_matches_brute_force(rng):
  x, h = rng.normal(size=(40, 2)), 0.3
  sq = ((x[:, None] - x[None]) ** 2).sum(-1)
  log_rho = logsumexp(-0.5 * sq / h ** 2, axis=1) - np.log(40) - np.log(2 * np.pi * h * h)
  assert abs(float(fl.kde_entropy(h)(x)) - log_rho.mean()) < 1e-12
  assert abs(float(fl.kde_entropy(h, chunk_size=7)(x)) - log_rho.mean()) < 1e-12


def _entropic_ot(x, y, eps, sweeps=3000):
  """``⟨C, P⟩ + ε KL(P ‖ a⊗b)`` by log-domain Sinkhorn in NumPy (float64), cost ``ot.dist``;
  a symmetric problem (``x is y``) by the averaged update, which converges much faster. Runs
  ``sweeps`` sweeps, or until one leaves both potentials bit for bit unchanged."""
  a, b = np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y))
  cost = ot.dist(x, y)  # ‖x − y‖², POT's convention
  f, g = np.zeros(len(x)), np.zeros(len(y))
  for _ in range(sweeps):
    f_old, g_old = f, g
    f_new = -eps * logsumexp((g[None] - cost) / eps, b=b[None], axis=1)
    f = 0.5 * (f + f_new) if x is y else f_new
    g = f if x is y else -eps * logsumexp((f[:, None] - cost) / eps, b=a[:, None], axis=0)
    if np.array_equal(f, f_old) and np.array_equal(g, g_old):
      break
  plan = np.outer(a, b) * np.exp((f[:, None] + g[None] - cost) / eps)
  assert np.abs(plan.sum(1) - a).sum() < 1e-13
  return np.sum(plan * cost) + eps * np.sum(plan * np.log(plan / np.outer(a, b)))


@pytest.fixture(scope="module")
def clouds():
  rng = np.random.default_rng(3)
  return rng.normal(size=(30, 2)), rng.normal(size=(25, 2)) + [1.0, 0.5]


def test_sinkhorn_divergence_to_matches_log_domain_sinkhorn(clouds):
  x, y = clouds
  eps = 0.5
  expected = (_entropic_ot(x, y, eps) - 0.5 * _entropic_ot(x, x, eps)
              - 0.5 * _entropic_ot(y, y, eps))
  energy = fl.sinkhorn_divergence_to(y, epsilon=eps, solver=_divergence_solver(1e-11))
  assert abs(float(energy(x)) - expected) < 1e-9


def test_sliced_wasserstein_to_matches_pot(clouds):
  x, y = clouds
  key = jax.random.key(4)
  energy = fl.sliced_wasserstein_to(key, y, n_projections=16)
  from otkit.estimators._sliced import directions
  thetas = np.asarray(directions(key, 16, 2, jnp.float64))
  pot = ot.sliced_wasserstein_distance(x, y, projections=thetas.T, p=2)
  assert abs(float(energy(x)) - pot ** 2) < 1e-10


@pytest.mark.parametrize("name", [
    "sinkhorn", pytest.param("otdd-attached", marks=pytest.mark.slow), "mixed"])
def test_gradients_match_finite_differences(clouds, name):
  x, y = clouds
  labels = np.arange(30) % 2
  energies = {
      "sinkhorn": fl.sinkhorn_divergence_to(y, epsilon=0.2, solver=_divergence_solver(1e-11)),
      "otdd-attached": fl.otdd_to(y, np.arange(25) % 3, labels, epsilon=0.5,
                                  statistics="attached", solver=_otdd_solver(1e-11)),
      "mixed": MIXED,
  }
  energy = energies[name]
  v = np.random.default_rng(5).normal(size=x.shape)
  h = 1e-5
  # The gradient compiled as one program; the values eagerly (for "sinkhorn", the programs of
  # test_sinkhorn_divergence_to_matches_log_domain_sinkhorn: ε is traced).
  slope = jnp.vdot(jax.jit(jax.grad(energy))(jnp.asarray(x)), v)
  plus, minus = energy(x + h * v), energy(x - h * v)
  fd = float(plus - minus) / (2 * h)
  assert abs(float(slope) - fd) < 1e-6 * max(1.0, abs(fd))


@pytest.mark.slow
def test_otdd_to_matches_otkit_otdd_and_detaches_statistics(clouds):
  x, y = clouds
  labels, y_t = np.arange(30) % 2, np.arange(25) % 3
  solver = _otdd_solver(1e-10)
  expected = float(otkit.otdd(x, labels, y, y_t, epsilon=0.5, solver=solver).value)
  detached = fl.otdd_to(y, y_t, labels, epsilon=0.5, solver=solver)
  attached = fl.otdd_to(y, y_t, labels, epsilon=0.5, solver=solver, statistics="attached")
  both = jax.jit(lambda energies, x: [jax.value_and_grad(e)(x) for e in energies])
  (v_d, g_d), (v_a, g_a) = both((detached, attached), jnp.asarray(x))
  assert abs(float(v_d) - expected) < 1e-8 and abs(float(v_a) - expected) < 1e-8
  assert float(jnp.max(jnp.abs(g_d - g_a))) > 1e-4  # the class statistics pull too


# ---------------------------------------------------------------------------------------------
# The flow: jit, vmap, grad, dtypes, recompilation


def test_flow_under_jit_equals_eager(rng, dtype):
  x0 = rng.normal(size=(8, 2)).astype(dtype)
  eager = fl.gradient_flow(MIXED, x0, step_size=0.05, n_steps=6, save_every=4)
  jitted = jax.jit(lambda x: fl.gradient_flow(MIXED, x, step_size=0.05, n_steps=6,
                                              save_every=4))(x0)
  assert eager.frames.shape == (3, 8, 2) and eager.frames.dtype == dtype
  assert eager.steps.tolist() == [0, 4, 6] and eager.values.shape == (7,)
  np.testing.assert_allclose(eager.frames, jitted.frames, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(eager.values[eager.steps], jax.jit(jax.vmap(MIXED))(eager.frames),
                             rtol=1e-5 if dtype == np.float32 else 1e-12)


def _all_steps(energy, x, tau, n):
  """Forward Euler written out step by step (the oracle of the scan)."""
  xs, grad = [jnp.asarray(x)], jax.jit(jax.grad(energy))
  for _ in range(n):
    xs.append(xs[-1] - tau * xs[-1].shape[0] * grad(xs[-1]))
  return xs


def test_flow_matches_explicit_euler(rng):
  x0 = rng.normal(size=(8, 2))
  out = fl.gradient_flow(MIXED, x0, step_size=0.05, n_steps=6)
  np.testing.assert_allclose(out.frames, np.stack(_all_steps(MIXED, x0, 0.05, 6)), atol=1e-12)


def test_vmap_over_initial_points_and_step_sizes(rng, dtype):
  x0 = rng.normal(size=(4, 8, 2)).astype(dtype)
  taus = np.array([0.01, 0.02, 0.05, 0.1], dtype)
  run = lambda x, t: fl.gradient_flow(MIXED, x, step_size=t, n_steps=5).frames  # noqa: E731
  batched = jax.vmap(run)(x0, taus)
  assert batched.shape == (4, 6, 8, 2) and batched.dtype == dtype
  for i in range(4):
    np.testing.assert_allclose(batched[i], run(x0[i], taus[i]), rtol=1e-5, atol=1e-6)


def test_grad_through_the_flow_matches_the_closed_form(rng):
  # x_N = (1 − τ)^N x_0 for V = ½‖x‖²: d/dτ Σ x_N = −N (1 − τ)^{N−1} Σ x_0
  x0 = rng.normal(size=(5, 2))
  final = lambda tau: jnp.sum(fl.gradient_flow(QUADRATIC, x0, step_size=tau,  # noqa: E731
                                               n_steps=7).x)
  expected = -7 * 0.9 ** 6 * x0.sum()
  assert abs(float(jax.grad(final)(0.1)) - expected) < 1e-10


def test_second_call_does_not_recompile(rng):
  x0 = rng.normal(size=(8, 2))
  x1 = x0 + 1.0
  fl.gradient_flow(MIXED, x0, step_size=0.1, n_steps=3)
  with helpers.compilations() as compiled:  # eager, new data and step size
    eager = fl.gradient_flow(MIXED, x1, step_size=0.2, n_steps=3)
  assert not compiled
  np.testing.assert_allclose(eager.frames, np.stack(_all_steps(MIXED, x1, 0.2, 3)), atol=1e-12)
  # Under jit every numeric knob is traced: one trace for both calls.
  run = helpers.traced_once(
      lambda x, step_size, tol, temperature, key: fl.gradient_flow(
          MIXED, x, step_size=step_size, n_steps=3, tol=tol, temperature=temperature, key=key))
  first = run(x0, 0.1, 0.0, 0.0, jax.random.key(0))
  second = run(x1, 0.2, 1e-9, 0.0, jax.random.key(1))
  np.testing.assert_allclose(first.frames, np.stack(_all_steps(MIXED, x0, 0.1, 3)), atol=1e-12)
  np.testing.assert_allclose(second.frames, eager.frames, atol=1e-12)


@pytest.fixture(scope="module")
def circle():
  rng = np.random.default_rng(6)
  theta = rng.uniform(0, 2 * np.pi, 48)
  return np.stack([np.cos(theta), np.sin(theta)], 1), 0.3 * rng.normal(size=(4, 40, 2))


def test_vmap_over_four_sinkhorn_flows(circle):
  y, x0 = circle
  x0, y = x0.astype(np.float32), y.astype(np.float32)
  energy = fl.sinkhorn_divergence_to(y, epsilon=0.05, solver=_divergence_solver(1e-4))
  batched = jax.vmap(lambda x: fl.gradient_flow(energy, x, step_size=0.1, n_steps=20))(x0)
  assert batched.frames.shape == (4, 21, 40, 2) and batched.frames.dtype == np.float32
  assert not bool(jnp.any(batched.failed))
  np.testing.assert_array_equal(batched.result, otkit.Result.CONVERGED)
  assert otkit.check(batched) is batched
  assert bool(jnp.all(batched.values[:, -1] < 0.1 * batched.values[:, 0]))
  # each flow of the batch follows forward Euler on its own: compare one step of flow 2 with
  # the gradient of the same functional (float32, solver tolerance 1e-4)
  x = jnp.asarray(x0[2])
  step = x - 0.1 * 40 * jax.jit(jax.grad(energy))(x)
  np.testing.assert_allclose(batched.frames[2, 1], step, atol=2e-3)


@pytest.mark.slow
def test_warm_started_and_cold_sinkhorn_flows_agree(circle):
  y, x0 = circle
  flows = [fl.gradient_flow(fl.sinkhorn_divergence_to(y, epsilon=0.05,
                                                      solver=_divergence_solver(1e-9),
                                                      warm_start=warm), x0[0],
                            step_size=0.1, n_steps=10) for warm in (True, False)]
  np.testing.assert_allclose(flows[0].frames, flows[1].frames, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Optimisers, stopping, failures, progress


def test_sgd_is_euler_and_adam_descends(rng):
  x0 = rng.normal(size=(8, 2))
  euler = fl.gradient_flow(MIXED, x0, step_size=0.05, n_steps=5)
  sgd = fl.gradient_flow(MIXED, x0, step_size=0.05, n_steps=5, optimizer=optax.sgd(1.0))
  np.testing.assert_allclose(euler.frames, sgd.frames, atol=1e-12)
  adam = fl.gradient_flow(MIXED, x0, step_size=0.05, n_steps=30, optimizer=optax.adam(1.0))
  assert float(adam.values[-1]) < 0.5 * float(adam.values[0])


def test_stopping_rule_freezes_the_flow(rng):
  x0 = rng.normal(size=(8, 2))
  out = fl.gradient_flow(QUADRATIC, x0, step_size=0.1, n_steps=100, tol=1e-3, save_every=1)
  k = int(out.n_steps)
  assert bool(out.stopped) and 0 < k < 100
  deltas = np.abs(np.diff(np.asarray(out.values)))
  assert deltas[k - 1] <= 1e-3 and np.all(deltas[:k - 1] > 1e-3)
  np.testing.assert_array_equal(out.frames[k:], np.broadcast_to(out.frames[k], (101 - k, 8, 2)))
  assert int(out.result) == otkit.Result.CONVERGED and otkit.check(out) is out
  # The same tolerance, too few steps to meet it: the flow reports the cap.
  short = fl.gradient_flow(QUADRATIC, x0, step_size=0.1, n_steps=k - 1, tol=1e-3)
  assert not bool(short.stopped) and int(short.result) == otkit.Result.MAX_ITERS
  with pytest.raises(RuntimeError, match="MAX_ITERS"):
    otkit.check(short)
  # Without a tolerance every step is the goal: running them all is a success.
  assert int(fl.gradient_flow(QUADRATIC, x0, step_size=0.1, n_steps=3).result) == 0


def test_divergent_flow_is_reported_without_nan(rng):
  x0 = rng.normal(size=(8, 2)).astype(np.float32)
  out = fl.gradient_flow(QUADRATIC, x0, step_size=1e3, n_steps=60)
  assert bool(out.failed) and int(out.n_steps) < 60
  assert bool(jnp.all(jnp.isfinite(out.frames))) and bool(jnp.all(jnp.isfinite(out.values)))
  assert int(out.result) == otkit.Result.NON_FINITE and not bool(out.converged)
  with pytest.raises(RuntimeError, match="NON_FINITE"):
    otkit.check(out)


def test_progress_bar_runs(rng, capsys):
  out = fl.gradient_flow(QUADRATIC, rng.normal(size=(4, 2)), step_size=0.1, n_steps=4,
                         save_every=2, progress=True)
  jax.effects_barrier()
  assert int(out.n_steps) == 4


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("energy, message", [
    (lambda x: x, "must return a scalar"),
    (lambda x: jnp.sum(x, axis=1), "must return a scalar"),
    (lambda x: jnp.sum(x).astype(jnp.int32), "floating"),
    (fl.potential_energy(lambda z: z), "`V` must return a scalar"),
    (fl.interaction_energy(lambda z: z * z), "`W` must return a scalar"),
    (fl.potential_energy(lambda z: z @ jnp.ones(3)), "`V` failed"),
    ("energy", "must be an otkit.flows.Energy or a function"),
    (3.0, "must be an otkit.flows.Energy or a function"),
])
def test_bad_functionals_raise(energy, message):
  with pytest.raises(ValueError, match=message):
    fl.gradient_flow(energy, np.zeros((4, 2)), step_size=0.1, n_steps=2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(step_size=0.0), "`step_size` must be a finite number > 0"),
    (dict(step_size=-0.1), "`step_size` must be a finite number > 0"),
    (dict(step_size=np.nan), "`step_size` must be a finite number > 0"),
    (dict(step_size=np.inf), "`step_size` must be a finite number > 0"),
    (dict(step_size=np.ones(2)), "`step_size` must be a scalar"),
    (dict(n_steps=0), "`n_steps`"),
    (dict(n_steps=2.5), "`n_steps`"),
    (dict(save_every=0), "`save_every`"),
    (dict(optimizer="adam"), "`optimizer` must be an optax"),
    (dict(temperature=1.0), "`key` is required"),
    (dict(temperature=-1.0, key=jax.random.key(0)), "`temperature`"),
    (dict(tol=-1.0), "`tol`"),
])
def test_bad_options_raise(kwargs, message):
  options = dict(step_size=0.1, n_steps=2) | kwargs
  with pytest.raises(ValueError, match=message):
    fl.gradient_flow(QUADRATIC, np.zeros((4, 2)), **options)


def test_langevin_flow_needs_a_key_even_under_jit():
  x0 = np.zeros((4, 2))
  with pytest.raises(ValueError, match="`key` is required"):  # a traced temperature may be > 0
    jax.jit(lambda t: fl.gradient_flow(QUADRATIC, x0, step_size=0.1, n_steps=2,
                                       temperature=t))(0.5)
  # Without noise no key is drawn from or needed, and none is made up.
  out = fl.gradient_flow(QUADRATIC, x0, step_size=0.1, n_steps=2, temperature=0.0)
  assert int(out.result) == otkit.Result.CONVERGED


@pytest.mark.parametrize("x0, message", [
    (np.zeros(4), "`x0` must have shape"),
    (np.zeros((0, 2)), "`x0` is empty"),
    (np.full((3, 2), np.nan), "`x0` contains"),
])
def test_bad_particles_raise(x0, message):
  with pytest.raises(ValueError, match=message):
    fl.gradient_flow(QUADRATIC, x0, step_size=0.1, n_steps=2)


def test_bad_energy_arguments_raise():
  y = np.zeros((5, 2))
  with pytest.raises(ValueError, match="`epsilon`"):
    fl.sinkhorn_divergence_to(y, epsilon=0.0)
  with pytest.raises(ValueError, match="`y` has dimension 2"):
    fl.gradient_flow(fl.sinkhorn_divergence_to(y, epsilon=0.1), np.zeros((4, 3)),
                     step_size=0.1, n_steps=1)
  with pytest.raises(ValueError, match="`bandwidth`"):
    fl.kde_entropy(-1.0)
  with pytest.raises(ValueError, match="`key` is required"):
    fl.sliced_wasserstein_to(None, y)
  with pytest.raises(ValueError, match="`b` have different total mass"):  # never normalised
    fl.sliced_wasserstein_to(jax.random.key(0), y, np.full(5, 0.4))
  with pytest.raises(ValueError, match="`labels` has 5 entries"):
    energy = fl.otdd_to(y, np.arange(5) % 2, np.arange(5) % 2, epsilon=0.1)
    fl.gradient_flow(energy, np.zeros((4, 2)), step_size=0.1, n_steps=1)
  with pytest.raises(ValueError, match="scaled by a scalar"):
    QUADRATIC * np.ones(2)
  with pytest.raises(ValueError, match="`V` must be a function"):
    fl.potential_energy(3.0)
