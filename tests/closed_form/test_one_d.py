"""Exact 1-D optimal transport against POT (``ot.wasserstein_1d``, ``ot.emd2``) and finite
differences."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit


def _problem(seed, n, m, weighted=True):
  rng = np.random.default_rng(seed)
  u, v = rng.normal(size=n), 1.5 * rng.normal(size=m) + 0.5
  if not weighted:
    return u, v, None, None
  a, b = rng.uniform(0.1, 1.0, n), rng.uniform(0.1, 1.0, m)
  return u, v, a / a.sum(), b / b.sum()


def _emd2(u, v, a, b, p):
  a = np.full(len(u), 1 / len(u)) if a is None else a
  b = np.full(len(v), 1 / len(v)) if b is None else b
  return ot.emd2(a, b, np.abs(u[:, None] - v[None, :]) ** p)


# Every p on unequal sizes, uniform and weighted; equal sizes at one p each (each case is one
# compilation: p and the shapes are static).
@pytest.mark.parametrize("p, n, m, weighted", [
    *((p, 23, 9, False) for p in (1, 1.5, 2, 3)), *((p, 40, 13, True) for p in (1, 1.5, 2, 3)),
    (2, 17, 17, False), (1.5, 30, 30, True)])
def test_matches_pot(p, n, m, weighted):
  u, v, a, b = _problem(n * m, n, m, weighted)
  ours = otkit.wasserstein_1d(u, v, a, b, p=p)
  np.testing.assert_allclose(ours, ot.wasserstein_1d(u, v, a, b, p=p), rtol=0, atol=1e-10)
  np.testing.assert_allclose(ours, _emd2(u, v, a, b, p), rtol=0, atol=1e-10)


def test_ties_zero_weights_and_unnormalised_weights():
  u = np.array([0.0, 1.0, 1.0, 2.0, 5.0])
  v = np.array([1.0, 1.0, 3.0])
  a = np.array([0.2, 0.0, 0.3, 0.1, 0.4])
  b = np.array([0.5, 0.25, 0.25])
  expected = _emd2(u, v, a, b, 2)
  np.testing.assert_allclose(otkit.wasserstein_1d(u, v, a, b), expected, atol=1e-12)
  # Weights of equal mass 3 are used as given: POT's exact OT between the same measures.
  np.testing.assert_allclose(otkit.wasserstein_1d(u, v, 3.0 * a, 3.0 * b), _emd2(u, v, 3.0 * a,
                                                                                3.0 * b, 2),
                             atol=1e-12)
  np.testing.assert_allclose(otkit.wasserstein_1d(u, v, 3.0 * a, 3.0 * b), 3.0 * expected,
                             atol=1e-12)
  with pytest.raises(ValueError, match="`a` and `b`"):  # unequal mass: never normalised
    otkit.wasserstein_1d(u, v, 3.0 * a, 0.5 * b)
  with pytest.raises(ValueError, match="`a` and `b`"):  # against the uniform b of mass 1
    otkit.wasserstein_1d(u, v, 3.0 * a)
  assert float(otkit.wasserstein_1d(u, u, a, a)) == 0.0


@pytest.mark.parametrize("weighted", [False, True])
def test_sort_implementations_agree(weighted):
  u, v, a, b = _problem(3, 50, 31, weighted)
  values = [otkit.wasserstein_1d(u, v, a, b, p=1.5, sort_impl=s) for s in ("auto", "numpy", "xla")]
  np.testing.assert_allclose(values[1:], [values[0]] * 2, rtol=1e-14)


@pytest.mark.parametrize("p", [1, 1.5, 2])
def test_gradients_match_finite_differences(p):
  u, v, a, b = _problem(11, 12, 8)
  rng = np.random.default_rng(1)
  du, dv, da, db = (rng.normal(size=s) for s in (12, 8, 12, 8))
  # The weights move along directions that keep both masses equal (they grow by 0.3 h).
  da, db = da - da.mean() + 0.3 / 12, db - db.mean() + 0.3 / 8

  def f(u, v, a, b):
    return otkit.wasserstein_1d(u, v, a, b, p=p)

  grads = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(u, v, a, b)  # one compiled program
  h = 1e-6
  fd = (f(u + h * du, v + h * dv, a + h * da, b + h * db)
        - f(u - h * du, v - h * dv, a - h * da, b - h * db)) / (2 * h)
  directional = sum(jnp.vdot(g, t) for g, t in zip(grads, (du, dv, da, db)))
  np.testing.assert_allclose(directional, fd, rtol=1e-6)


def test_uniform_gradient_matches_finite_differences():
  u, v, _, _ = _problem(2, 15, 6, weighted=False)
  du = np.random.default_rng(0).normal(size=15)
  g = jax.grad(otkit.wasserstein_1d)(u, v)
  h = 1e-6
  fd = (otkit.wasserstein_1d(u + h * du, v) - otkit.wasserstein_1d(u - h * du, v)) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(g, du), fd, rtol=1e-7)


def test_gradient_is_finite_at_ties_and_zero_distance():
  u = jnp.array([0.0, 1.0, 1.0])
  g = jax.grad(lambda u: otkit.wasserstein_1d(u, u, p=1.5))(u)
  assert bool(jnp.all(jnp.isfinite(g)))


def test_jit_vmap_and_dtype(dtype):
  problems = [_problem(s, 20, 14) for s in range(5)]
  us, vs, as_, bs = (np.stack([q[i] for q in problems]).astype(dtype) for i in range(4))
  batched = jax.jit(jax.vmap(lambda u, v, a, b: otkit.wasserstein_1d(u, v, a, b, p=2)))
  values = batched(us, vs, as_, bs)
  assert values.dtype == dtype and values.shape == (5,)
  uniform = jax.vmap(otkit.wasserstein_1d)(us, vs)
  assert uniform.dtype == dtype
  tol = 1e-5 if dtype == np.float32 else 1e-12
  for i in range(5):
    ref = ot.wasserstein_1d(*(np.float64(t[i]) for t in (us, vs, as_, bs)), p=2)
    np.testing.assert_allclose(values[i], ref, rtol=tol)
    np.testing.assert_allclose(uniform[i], ot.wasserstein_1d(np.float64(us[i]),
                                                             np.float64(vs[i]), p=2), rtol=tol)


def test_float32_gradient_is_float32():
  u, v, a, b = (jnp.asarray(t, jnp.float32) for t in _problem(4, 10, 7))
  g = jax.grad(otkit.wasserstein_1d, argnums=(0, 2))(u, v, a, b)
  assert all(t.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(t))) for t in g)


def test_no_recompile_on_second_call():
  u, v, a, b = _problem(5, 19, 11)
  u2, v2 = u + 1.0, v - 0.5
  a2, b2 = np.ascontiguousarray(a[::-1]), np.ascontiguousarray(b[::-1])
  first = otkit.wasserstein_1d(u, v, a, b)
  with helpers.compilations() as compiled:  # eager, new data of the same shapes
    second = otkit.wasserstein_1d(u2, v2, a2, b2)
  assert not compiled
  np.testing.assert_allclose([first, second], [_emd2(u, v, a, b, 2), _emd2(u2, v2, a2, b2, 2)],
                             atol=1e-10)
  # Under jit positions and weights are traced: one trace for both calls.
  fn = helpers.traced_once(lambda u, v, a, b: otkit.wasserstein_1d(u, v, a, b))
  np.testing.assert_allclose([fn(u, v, a, b), fn(u2, v2, a2, b2)], [first, second], rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(u=np.zeros((3, 2))), "`u`"),
    (dict(v=np.array([])), "`v`"),
    (dict(u=np.array([0.0, np.nan, 1.0])), "`u`"),
    (dict(v=np.array([0.0, np.inf])), "`v`"),
    (dict(a=np.array([0.5, 0.5])), "`a`"),
    (dict(a=np.array([0.5, 0.7, -0.2])), "`a`"),
    (dict(b=np.array([np.nan, 1.0])), "`b`"),
    (dict(b=np.zeros(2)), "`b`"),
    (dict(p=0.5), "`p`"),
    (dict(p=jnp.asarray(2.0)), "`p`"),
    (dict(sort_impl="cuda"), "`sort_impl`"),
])
def test_bad_inputs(kwargs, match):
  args = dict(u=np.array([0.0, 1.0, 2.0]), v=np.array([0.5, 1.5]), a=None, b=None)
  options = {k: kwargs.pop(k) for k in ("p", "sort_impl") if k in kwargs}
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    otkit.wasserstein_1d(**args, **options)


# ----------------------------------------------------------------------------- ot_1d


def _certificate(out, u, v, a, b, p):
  """Marginals, dual feasibility, complementary slackness and strong duality of an ot_1d
  output, each to the rounding of the costs (float64)."""
  C = np.abs(u[:, None] - v[None, :]) ** p
  plan = np.asarray(out.plan)
  scale = 8 * np.finfo(float).eps * (len(u) + len(v)) * max(C.max(), 1e-300)
  np.testing.assert_allclose(plan.sum(1), a, atol=1e-14)
  np.testing.assert_allclose(plan.sum(0), b, atol=1e-14)
  slack = C - np.asarray(out.f)[:, None] - np.asarray(out.g)[None, :]
  assert slack.min() >= -scale
  assert np.abs(slack[plan > 0]).max(initial=0.0) <= scale
  assert abs(a @ np.asarray(out.f) + b @ np.asarray(out.g) - float(out.value)) <= scale
  return C


@pytest.mark.parametrize("p", [1, 2])
def test_ot_1d_plan_and_potentials_match_pot(p):
  u, v, a, b = _problem(7, 12, 8)
  out = otkit.ot_1d(u, v, a, b, p=p)
  C = _certificate(out, u, v, a, b, p)
  plan, log = ot.emd(a, b, C, log=True)
  metric = "cityblock" if p == 1 else "sqeuclidean"
  np.testing.assert_allclose(out.plan, ot.emd_1d(u, v, a, b, metric=metric), atol=1e-14)
  np.testing.assert_allclose(out.value, log["cost"], rtol=1e-13)
  if p == 1:  # |x − y| is not strictly convex: other plans are optimal too
    return
  np.testing.assert_allclose(out.plan, plan, atol=1e-14)
  # The LP duals of a non-degenerate problem are unique up to the gauge <a, f> = <b, g>.
  shift = (b @ log["v"] - a @ log["u"]) / 2
  np.testing.assert_allclose(out.f, log["u"] + shift, atol=1e-12)
  np.testing.assert_allclose(out.g, log["v"] - shift, atol=1e-12)
  assert int(out.rows.shape[0]) == 20 and bool(out.converged)


def test_ot_1d_ties_zero_weights_and_mass():
  u = np.array([0.0, 1.0, 1.0, 2.0, 5.0])
  v = np.array([1.0, 1.0, 3.0])
  a = 3.0 * np.array([0.2, 0.0, 0.3, 0.1, 0.4])
  b = 3.0 * np.array([0.5, 0.25, 0.25])
  out = otkit.ot_1d(u, v, a, b)
  _certificate(out, u, v, a, b, 2)
  np.testing.assert_allclose(out.value, _emd2(u, v, a, b, 2), atol=1e-12)
  np.testing.assert_allclose(out.mass.sum(), 3.0, rtol=1e-15)


def test_ot_1d_jit_vmap_and_dtype(dtype):
  problems = [_problem(s, 9, 6) for s in range(3)]
  us, vs, as_, bs = (np.stack([q[i] for q in problems]).astype(dtype) for i in range(4))
  out = jax.jit(jax.vmap(lambda u, v, a, b: otkit.ot_1d(u, v, a, b, p=1.5)))(us, vs, as_, bs)
  assert out.value.dtype == out.f.dtype == out.mass.dtype == dtype
  assert out.plan.shape == (3, 9, 6) and out.rows.shape == (3, 15)
  tol = 1e-5 if dtype == np.float32 else 1e-12
  for i in range(3):
    u, v, a, b = (np.float64(t[i]) for t in (us, vs, as_, bs))
    np.testing.assert_allclose(out.value[i], _emd2(u, v, a, b, 1.5), rtol=tol)
    np.testing.assert_allclose(out.plan[i].sum(0), b, atol=tol)


def test_ot_1d_gradients_match_finite_differences():
  u, v, a, b = _problem(13, 10, 7)
  rng = np.random.default_rng(2)
  du, da = rng.normal(size=10), rng.normal(size=10)
  da = da - da.mean()  # keeps the mass of a equal to that of b

  def value(u, a):
    return otkit.ot_1d(u, v, a, b, p=2).value

  def potential(u):  # the potentials move with the positions (same staircase)
    return jnp.vdot(otkit.ot_1d(u, v, a, b, p=2).f, du)

  grads = jax.jit(jax.grad(value, argnums=(0, 1)))(u, a)
  helpers.assert_gradient_along(grads[0], lambda t: value(t, a), u, du)
  helpers.assert_gradient_along(grads[1], lambda t: value(u, t), a, da)
  helpers.assert_directional_derivative(potential, u, du)
