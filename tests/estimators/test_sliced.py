"""Sliced and max-sliced Wasserstein: POT with the same directions, exact 1-D values, unbiasedness
and variance reduction of the control variates (fixtures of Nguyen & Ho), gradients."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit
from otkit.estimators import _sliced

CVS = (None, "lower", "upper")
# The number of directions of the tests on `_clouds()` where it does not matter: one compiled
# `directions` program, and estimator programs shared between tests of the same options.
L = 50


def _clouds(seed=0, n=60, m=40, d=3, weighted=False):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = rng.normal(size=(m, d)) * np.linspace(0.5, 1.5, d) + 0.7
  if not weighted:
    return x, y, None, None
  a, b = rng.uniform(0.2, 1.0, n), rng.uniform(0.2, 1.0, m)
  return x, y, a / a.sum(), b / b.sum()


# Fixtures of PAPERS §F, drawn in order from rng 0.
def _gauss10():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 10))
  return x, rng.normal(size=(500, 10)) * np.linspace(0.5, 2, 10) + 0.5


def _gauss50():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1000, 50))
  return x, rng.normal(size=(1000, 50)) * np.linspace(0.5, 2, 50) + np.linspace(-1, 1, 50)


def _blob_ring():
  rng = np.random.default_rng(0)
  x = 0.3 * rng.normal(size=(1024, 3))
  u, xi = rng.uniform(0, 2 * np.pi, 1024), rng.normal(size=1024)
  return x, 2 * np.stack([np.cos(u), np.sin(u), 0.1 * xi], axis=1) + np.array([1.0, 0.0, 0.0])


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_pot_with_the_same_directions(p, weighted):
  x, y, a, b = _clouds(weighted=weighted)
  key = jax.random.key(0)
  out = otkit.sliced_wasserstein(key, x, y, a, b, n_projections=50, p=p)
  theta = np.asarray(_sliced.directions(key, 50, 3, jnp.float64))
  expected = ot.sliced_wasserstein_distance(x, y, a, b, projections=theta.T, p=p) ** p
  np.testing.assert_allclose(out.value, expected, rtol=1e-10)
  _, log = ot.sliced_wasserstein_distance(x, y, a, b, projections=theta.T, p=p, log=True)
  terms = np.asarray(log["projected_emds"])
  np.testing.assert_allclose(out.std_error, terms.std(ddof=1) / np.sqrt(50), rtol=1e-8)


def test_one_dimension_is_exact():
  x, y, a, b = _clouds(d=1, weighted=True)
  for weights, cv in (((None, None), None), ((None, None), "lower"), ((a, b), "upper")):
    exact = otkit.wasserstein_1d(x[:, 0], y[:, 0], *weights, p=1.5)
    out = otkit.sliced_wasserstein(jax.random.key(1), x, y, *weights, n_projections=5, p=1.5,
                                   control_variate=cv)
    np.testing.assert_allclose(out.value, exact, rtol=1e-12)
    assert float(out.std_error) < 1e-12


def test_chunk_size_and_sort_implementation_do_not_change_the_value():
  x, y, _, _ = _clouds()
  key = jax.random.key(2)
  ref = otkit.sliced_wasserstein(key, x, y, n_projections=50, control_variate="upper")
  for kwargs in (dict(chunk_size=7), dict(sort_impl="xla"), dict(chunk_size=64, sort_impl="numpy")):
    out = otkit.sliced_wasserstein(key, x, y, n_projections=50, control_variate="upper", **kwargs)
    np.testing.assert_allclose(out.value, ref.value, rtol=1e-12)
    np.testing.assert_allclose(out.std_error, ref.std_error, rtol=1e-10)


def test_identical_measures_give_zero():
  x, _, a, _ = _clouds(weighted=True)
  for cv, weights in ((None, (None, None)), ("lower", (a, a)), ("upper", (None, None))):
    out = otkit.sliced_wasserstein(jax.random.key(3), x, x, *weights, n_projections=L,
                                   control_variate=cv)
    assert float(out.value) == 0.0 and float(out.std_error) == 0.0


def test_control_variate_means_match_monte_carlo():
  x, y, a, b = _clouds(weighted=True)
  e_low, e_up = _sliced._expectations(x, y, a, b)
  theta = np.random.default_rng(0).normal(size=(10**6, 3))
  theta /= np.linalg.norm(theta, axis=1, keepdims=True)
  mx, my = a @ x, b @ y
  g_low = (theta @ (mx - my)) ** 2
  cov_x, cov_y = (x - mx).T @ ((x - mx) * a[:, None]), (y - my).T @ ((y - my) * b[:, None])
  g_up = g_low + np.einsum("li,ij,lj->l", theta, cov_x + cov_y, theta)
  for g, e in ((g_low, e_low), (g_up, e_up)):
    assert abs(g.mean() - float(e)) <= 3 * g.std() / np.sqrt(len(g))


def test_single_projection_has_an_infinite_standard_error():
  x, y, _, _ = _clouds()
  out = otkit.sliced_wasserstein(jax.random.key(0), x, y, n_projections=1, control_variate="lower")
  assert np.isfinite(float(out.value)) and float(out.std_error) == np.inf


def test_lower_variate_is_exact_for_a_translation():
  x, _, _, _ = _clouds()
  shift = np.array([1.0, -2.0, 0.5])
  out = otkit.sliced_wasserstein(jax.random.key(4), x, x + shift, n_projections=L,
                                 control_variate="lower")
  # W(θ) = (θᵀc)² = G_low(θ) for every θ: the coefficient is 1 and the estimate is ‖c‖²/d
  np.testing.assert_allclose(out.coef, 1.0, rtol=1e-10)
  np.testing.assert_allclose(out.value, np.sum(shift ** 2) / 3, rtol=1e-10)
  assert float(out.std_error) < 1e-10


@functools.lru_cache(maxsize=None)
def _replicates(name, n_projections=100, n_keys=200):
  """Estimates of SW₂² and their standard errors over ``n_keys`` keys for each estimator, and a
  10⁵-direction reference."""
  x, y = {"gauss10": _gauss10, "gauss50": _gauss50, "blob_ring": _blob_ring}[name]()
  keys = jax.random.split(jax.random.key(7), n_keys)

  @jax.jit
  def estimates(keys, x, y):  # one key at a time: a shorter compilation than a vmap
    return jax.lax.map(lambda key: [otkit.sliced_wasserstein(
        key, x, y, n_projections=n_projections, control_variate=cv) for cv in CVS], keys)

  outs = estimates(keys, x, y)
  ref = otkit.sliced_wasserstein(jax.random.key(123), x, y, n_projections=100_000)
  return ({cv: np.asarray(o.value) for cv, o in zip(CVS, outs)}, ref,
          {cv: np.asarray(o.std_error) for cv, o in zip(CVS, outs)})


@pytest.mark.parametrize("cv", CVS)
def test_unbiased_over_200_keys(cv):
  values, ref, _ = _replicates("gauss10")
  se = np.sqrt(values[cv].var(ddof=1) / len(values[cv]) + float(ref.std_error) ** 2)
  assert abs(values[cv].mean() - float(ref.value)) <= 3 * se


def test_control_variates_cut_the_variance_on_the_gaussian_fixture():
  values, _, _ = _replicates("gauss10")
  var = {cv: values[cv].var(ddof=1) for cv in CVS}
  # calibrated (1000 repetitions): 6.1× (lower) and 2.9× (upper)
  assert var[None] / var["lower"] >= 2.0
  assert var[None] / var["upper"] >= 2.0


@pytest.mark.slow
@pytest.mark.parametrize("name, cv, factor", [("gauss50", "lower", 20.0), ("gauss50", "upper", 2.0),
                                              ("blob_ring", "lower", 2.0),
                                              ("blob_ring", "upper", 20.0)])
def test_variance_reduction_and_bias_on_the_other_fixtures(name, cv, factor):
  values, ref, _ = _replicates(name)
  assert values[None].var() / values[cv].var() >= factor
  se = np.sqrt(values[cv].var(ddof=1) / len(values[cv]) + float(ref.std_error) ** 2)
  assert abs(values[cv].mean() - float(ref.value)) <= 3 * se


def test_standard_error_matches_the_spread_over_keys():
  values, _, std_errors = _replicates("gauss10")
  for cv in CVS:  # the standard error of one estimate (the first key) against the spread
    np.testing.assert_allclose(std_errors[cv][0], values[cv].std(ddof=1), rtol=0.5)


def test_gradient_matches_finite_differences():
  # The clouds and directions of test_matches_pot_with_the_same_directions[False-2] and of
  # test_weights_of_equal_mass_are_used_as_given: the values share their programs (but "lower").
  x, y, a, b = _clouds(weighted=True)
  rng = np.random.default_rng(0)
  dx, da, db = rng.normal(size=x.shape), rng.normal(size=a.shape), rng.normal(size=b.shape)
  # The weights move along directions that keep both masses equal (they grow by 0.3 h).
  da, db = da - da.mean() + 0.3 / a.size, db - db.mean() + 0.3 / b.size
  key = jax.random.key(5)
  for cv, weighted in ((None, False), ("lower", False), ("upper", True)):

    def f(x, a, b):
      weights = (a, b) if weighted else (None, None)
      return otkit.sliced_wasserstein(key, x, y, *weights, n_projections=L,
                                      control_variate=cv).value

    gx, ga, gb = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(x, a, b)  # one compiled program
    h = 1e-6
    fd = (f(x + h * dx, a + h * da, b + h * db) - f(x - h * dx, a - h * da, b - h * db)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(gx, dx) + jnp.vdot(ga, da) + jnp.vdot(gb, db), fd,
                               rtol=1e-6)


# A long statistical check (10⁴ directions): run with -m slow. The default run checks the
# gradients of every control variate against finite differences in
# test_gradient_matches_finite_differences.
@pytest.mark.slow
def test_control_variate_gradients_agree_with_the_sliced_gradient():
  x, y, _, _ = _clouds(n=200, m=200, d=5)

  def grad(cv, n_projections, key):
    return jax.grad(lambda x: otkit.sliced_wasserstein(
        key, x, y, n_projections=n_projections, control_variate=cv).value)(x)

  reference = np.ravel(grad(None, 10_000, jax.random.key(10)))
  for cv in ("lower", "upper"):
    g = np.ravel(grad(cv, 10_000, jax.random.key(11)))
    assert np.all(np.isfinite(g)) and np.corrcoef(g, reference)[0, 1] > 0.95


# float64 runs with -m slow (the same program as float32, one more compilation).
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)],
                         ids=["f32", "f64"])
def test_jit_vmap_over_keys_and_dtype(dtype):
  # float64: the eager calls share their programs with test_weights_of_equal_mass_are_used_as_given
  x, y, a, b = (t.astype(dtype) for t in _clouds(weighted=True))
  keys = jax.random.split(jax.random.key(6), 4)
  for cv in ("upper",):
    fn = jax.jit(jax.vmap(lambda k: otkit.sliced_wasserstein(k, x, y, a, b, n_projections=L,
                                                             control_variate=cv)))
    outs = fn(keys)
    assert outs.value.dtype == dtype and outs.value.shape == (4,)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for i in range(4):
      single = otkit.sliced_wasserstein(keys[i], x, y, a, b, n_projections=L, control_variate=cv)
      np.testing.assert_allclose(outs.value[i], single.value, rtol=tol)
      np.testing.assert_allclose(outs.std_error[i], single.std_error, rtol=10 * tol)
  g = jax.grad(lambda x: otkit.sliced_wasserstein(keys[0], x, y, n_projections=L).value)(x)
  assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g)))


def test_no_recompile_on_second_call():
  x, y, a, b = _clouds(weighted=True)
  keys, xs, ws = jax.random.split(jax.random.key(0)), (x, x + 1.0), (a, a[::-1].copy())
  first = otkit.sliced_wasserstein(keys[0], xs[0], y, ws[0], b, n_projections=50)
  with helpers.compilations() as compiled:  # eager, new key and data of the same shapes
    second = otkit.sliced_wasserstein(keys[1], xs[1], y, ws[1], b, n_projections=50)
  assert not compiled
  for key, x_, w, out in zip(keys, xs, ws, (first, second)):
    theta = np.asarray(_sliced.directions(key, 50, 3, jnp.float64))
    expected = ot.sliced_wasserstein_distance(x_, y, w, b, projections=theta.T) ** 2
    np.testing.assert_allclose(out.value, expected, rtol=1e-10)
  # Under jit the key, points and weights are traced: one trace for both calls.
  fn = helpers.traced_once(
      lambda key, x, a: otkit.sliced_wasserstein(key, x, y, a, b, n_projections=50))
  chex.assert_trees_all_close([fn(k, x_, w) for k, x_, w in zip(keys, xs, ws)], [first, second],
                              rtol=1e-12)


def test_weights_of_equal_mass_are_used_as_given():
  x, y, a, b = _clouds(weighted=True)
  key = jax.random.key(12)
  ref = otkit.sliced_wasserstein(key, x, y, a, b, n_projections=L, control_variate="upper")
  out = otkit.sliced_wasserstein(key, x, y, 3 * a, 3 * b, n_projections=L,
                                 control_variate="upper")
  # Measures of mass 3: three times the transport cost (as otkit.sinkhorn's transport cost).
  np.testing.assert_allclose([out.value, out.std_error], [3 * ref.value, 3 * ref.std_error],
                             rtol=1e-12)
  best = otkit.max_sliced_wasserstein(key, x, y, a, b, n_steps=10)
  scaled = otkit.max_sliced_wasserstein(key, x, y, 3 * a, 3 * b, n_steps=10)
  np.testing.assert_allclose(scaled.value, 3 * best.value, rtol=1e-12)
  for fn in (otkit.sliced_wasserstein, otkit.max_sliced_wasserstein):
    with pytest.raises(ValueError, match="`a` and `b`"):  # unequal mass: never normalised
      fn(key, x, y, 3 * a, b)
    with pytest.raises(ValueError, match="`a` and `b`"):  # against the uniform b of mass 1
      fn(key, x, y, 3 * a)


def test_result_codes_and_check():
  # The options of test_matches_pot_with_the_same_directions[True-2] and of
  # test_weights_of_equal_mass_are_used_as_given: the eager calls share their programs.
  x, y, a, b = _clouds(weighted=True)
  key = jax.random.key(13)
  out = otkit.sliced_wasserstein(key, x, y, a, b, n_projections=L)
  best = otkit.max_sliced_wasserstein(key, x, y, a, b, n_steps=10)
  for o in (out, best):
    assert int(o.result) == otkit.Result.CONVERGED and otkit.check(o) is o
  bad = jnp.asarray(x).at[0, 0].set(jnp.inf)  # traced inside jit: reported, not raised
  out = jax.jit(lambda x: otkit.sliced_wasserstein(key, x, y, n_projections=L))(bad)
  best = jax.jit(lambda x: otkit.max_sliced_wasserstein(key, x, y, n_steps=5))(bad)
  for o in (out, best):
    assert int(o.result) == otkit.Result.NON_FINITE and not bool(o.converged)
    with pytest.raises(RuntimeError, match="NON_FINITE"):
      otkit.check(o)


@pytest.mark.parametrize("kwargs, match", [
    (dict(key=None), "`key`"),
    (dict(key=0), "`key`"),
    (dict(key=jax.random.split(jax.random.key(0), 2)), "`key`"),
    (dict(x=np.zeros(5)), "`x`"),
    (dict(y=np.zeros((4, 2))), "dimension"),
    (dict(x=np.full((5, 3), np.nan)), "`x`"),
    (dict(b=-np.ones(4)), "`b`"),
    (dict(a=np.ones(3)), "`a`"),
    (dict(a=np.full(5, 0.4)), "`a` and `b`"),
    (dict(n_projections=0), "`n_projections`"),
    (dict(p=0.5), "`p`"),
    (dict(control_variate="both"), "`control_variate`"),
    (dict(chunk_size=0), "`chunk_size`"),
    (dict(sort_impl="gpu"), "`sort_impl`"),
])
def test_bad_inputs(kwargs, match):
  args = dict(key=jax.random.key(0), x=np.zeros((5, 3)), y=np.ones((4, 3)), a=None, b=None)
  options = {k: kwargs.pop(k) for k in list(kwargs) if k not in args}
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.sliced_wasserstein(args["key"], args["x"], args["y"], args["a"], args["b"], **options)


def test_max_sliced_finds_the_shift_direction_for_every_key():
  x, _, _, _ = _clouds(n=100, d=4)
  y = x + np.array([0.0, 0.0, 2.0, 0.0])
  keys = jax.random.split(jax.random.key(0), 3)
  out = jax.vmap(lambda k: otkit.max_sliced_wasserstein(k, x, y))(keys)
  np.testing.assert_allclose(out.value, 4.0, rtol=1e-6)
  np.testing.assert_allclose(np.abs(out.direction[:, 2]), 1.0, rtol=1e-6)


def test_max_sliced_beats_brute_force_in_two_dimensions():
  x, y, a, b = _clouds(n=80, m=50, d=2, weighted=True)
  out = otkit.max_sliced_wasserstein(jax.random.key(1), x, y, a, b, n_starts=4)
  angles = np.linspace(0, np.pi, 721)
  theta = np.stack([np.cos(angles), np.sin(angles)])
  brute = ot.sliced_wasserstein_distance(x, y, a, b, projections=theta, log=True)[1]
  best = float(np.max(brute["projected_emds"]))
  assert best * (1 - 1e-3) <= float(out.value) <= best * (1 + 1e-3)
  np.testing.assert_allclose(jnp.linalg.norm(out.direction), 1.0, rtol=1e-12)


# float64 runs with -m slow (the same program as float32, one more compilation).
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)],
                         ids=["f32", "f64"])
def test_max_sliced_gradient_and_dtype(dtype):
  x, y, _, _ = (t if t is None else t.astype(dtype) for t in _clouds(n=40, m=30, d=3))
  key = jax.random.key(3)
  out = otkit.max_sliced_wasserstein(key, x, y, n_steps=50)
  assert out.value.dtype == dtype and out.direction.dtype == dtype
  g = jax.jit(jax.grad(lambda x: otkit.max_sliced_wasserstein(key, x, y, n_steps=50).value))(x)
  # envelope theorem: the gradient is the one of W along the best direction
  theta = out.direction
  expected = jax.grad(lambda x: otkit.wasserstein_1d(x @ theta, y @ theta))(x)
  tol = 1e-4 if dtype == np.float32 else 1e-10
  np.testing.assert_allclose(g, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_starts=0), "`n_starts`"),
    (dict(n_steps=-1), "`n_steps`"),
    (dict(learning_rate=0.0), "`learning_rate`"),
    (dict(p=0), "`p`"),
])
def test_max_sliced_bad_inputs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    otkit.max_sliced_wasserstein(jax.random.key(0), np.zeros((5, 3)), np.ones((4, 3)), **kwargs)


@pytest.mark.slow
def test_peak_memory_at_n_1e5_d_784_is_under_2_gb():
  import json
  import pathlib
  import subprocess
  import sys

  script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "sliced.py"
  proc = subprocess.run([sys.executable, str(script), "--worker", "otkit", "100000", "784", "1024"],
                        capture_output=True, text=True, check=True, timeout=900)
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["peak_rss_mb"] < 2048
