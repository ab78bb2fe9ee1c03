"""OTDD against exact OT on the densely computed augmented cost (POT), closed forms and finite
differences; the fixtures of the OTDD paper notes (3 Gaussian classes per dataset)."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.linalg

import otkit


def outer(**options):
  """The outer solver of otkit.otdd (annealed, envelope gradients) with other options."""
  return otkit.Sinkhorn(**{"anneal": True, "grad_mode": "envelope", **options})


# The solvers of the tests against references. Only ``tol`` (traced) varies between tests: the
# iteration caps are one static number, so the tests on one fixture share their compilations.
def tight(tol):
  return outer(tol=tol, max_iters=50000)


def tight_inner(tol):
  return otkit.Sinkhorn(tol=tol, max_iters=50000, grad_mode="envelope")


def _classes(rng, centres, std, n):
  x = np.concatenate([np.asarray(c) + std * rng.normal(size=(n, 2)) for c in centres])
  return x, np.repeat(np.arange(len(centres)), n)


@pytest.fixture(scope="module")
def paper():
  """A: 3 × 100 points around (0,0), (4,0), (0,4), std 0.5; B: (1,1), (5,0), (0,5), std 0.7."""
  rng = np.random.default_rng(0)
  return (*_classes(rng, [(0, 0), (4, 0), (0, 4)], 0.5, 100),
          *_classes(rng, [(1, 1), (5, 0), (0, 5)], 0.7, 100))


@pytest.fixture(scope="module")
def small():
  """3 classes × 20 points against 4 classes × 15 points with other label values."""
  rng = np.random.default_rng(1)
  xs, ys = _classes(rng, [(0, 0), (4, 0), (0, 4)], 0.5, 20)
  xt, yt = _classes(rng, [(1, 1), (5, 0), (0, 5), (3, 3)], 0.7, 15)
  return xs, ys, xt, yt + 10


def _bures(x0, x1):
  m0, m1 = x0.mean(0), x1.mean(0)
  c0, c1 = np.cov(x0.T, bias=True), np.cov(x1.T, bias=True)
  root = scipy.linalg.sqrtm(c0).real
  cross = scipy.linalg.sqrtm(root @ c1 @ root).real
  return ((m0 - m1) ** 2).sum() + np.trace(c0) + np.trace(c1) - 2 * np.trace(cross)


def _emd(x0, x1):
  return ot.emd2(np.full(len(x0), 1 / len(x0)), np.full(len(x1), 1 / len(x1)), ot.dist(x0, x1))


def brute_force_otdd(xs, ys, xt, yt, label_distance):
  """Exact outer OT (``ot.emd2``) on the dense cost ``‖x − x'‖² + W²(α_y, α_y')``."""
  inner = _bures if label_distance == "gaussian" else _emd
  cs, ct = np.unique(ys), np.unique(yt)
  table = np.array([[inner(xs[ys == i], xt[yt == j]) for j in ct] for i in cs])
  cost = ot.dist(xs, xt) + table[np.searchsorted(cs, ys)][:, np.searchsorted(ct, yt)]
  value = ot.emd2(np.full(len(xs), 1 / len(xs)), np.full(len(xt), 1 / len(xt)), cost,
                  numItermax=10**7)
  return value, table


# ---------------------------------------------------------------------------------------------
# The acceptance fixtures


@pytest.mark.parametrize("label_distance", ["gaussian", "exact"])
def test_translation_gives_twice_the_squared_shift(paper, label_distance):
  # Shifting every feature by t moves each class law by t too: OTDD² = ‖t‖² + ‖t‖² = 0.26.
  xa, ya, _, _ = paper
  out = otkit.otdd(xa, ya, xa + np.array([0.3, -0.2]), ya, epsilon=0.5, solver=tight(1e-7),
                   label_distance=label_distance)
  assert bool(out.converged)
  assert float(out.value) == pytest.approx(0.26, abs=1e-6)


def test_identical_datasets_are_at_distance_zero_and_symmetric(paper):
  xa, ya, xb, yb = paper
  same = otkit.otdd(xa, ya, xa, ya, epsilon=0.5, solver=tight(1e-7))
  assert abs(float(same.value)) < 1e-6
  ab = otkit.otdd(xa, ya, xb, yb, epsilon=0.5, solver=tight(1e-7))
  ba = otkit.otdd(xb, yb, xa, ya, epsilon=0.5, solver=tight(1e-7))
  assert bool(ab.converged) and bool(ba.converged)
  np.testing.assert_allclose(ab.value, ba.value, rtol=1e-7)
  np.testing.assert_allclose(ab.label_distances, ba.label_distances.T, rtol=1e-10)


def test_renaming_the_classes_changes_nothing(paper):
  xa, ya, xb, yb = paper
  renamed = np.array([12, 5, 7])[ya]  # a permutation of the classes, other label values
  same = otkit.otdd(xa, ya, xa, renamed, epsilon=0.5, solver=tight(1e-7))
  assert abs(float(same.value)) < 1e-6
  ab = otkit.otdd(xa, ya, xb, yb, epsilon=0.5, solver=tight(1e-7))
  renamed_ab = otkit.otdd(xa, renamed, xb, yb, epsilon=0.5, solver=tight(1e-7))
  np.testing.assert_allclose(renamed_ab.value, ab.value, rtol=1e-9)
  assert renamed_ab.classes_s == (5, 7, 12)


def test_paper_fixture_value_as_epsilon_goes_to_zero(paper):
  # Exact outer OT with Gaussian label distances: 2.7398 (paper notes, calibrated).
  xa, ya, xb, yb = paper
  reference, table = brute_force_otdd(xa, ya, xb, yb, "gaussian")
  assert reference == pytest.approx(2.7398, abs=1e-4)
  out = otkit.otdd(xa, ya, xb, yb, epsilon=3e-3, solver=tight(1e-4))
  assert bool(out.converged)
  np.testing.assert_allclose(out.label_distances, table, rtol=1e-9)
  np.testing.assert_allclose(out.value, reference, rtol=1e-3)
  features_only = _emd(xa, xb)
  assert features_only == pytest.approx(1.3960, abs=1e-4) and float(out.value) > features_only


@pytest.mark.parametrize("label_distance", ["gaussian", "exact"])
def test_matches_exact_ot_on_the_dense_augmented_cost(small, label_distance):
  xs, ys, xt, yt = small
  reference, table = brute_force_otdd(xs, ys, xt, yt, label_distance)
  out = otkit.otdd(xs, ys, xt, yt, epsilon=3e-3, solver=tight(1e-4),
                   label_distance=label_distance, inner_epsilon=1e-3,
                   inner_solver=tight_inner(1e-4))
  assert bool(out.converged)
  assert out.classes_t == (10, 11, 12, 13) and out.label_distances.shape == (3, 4)
  np.testing.assert_allclose(out.label_distances, table, rtol=1e-3)
  np.testing.assert_allclose(out.value, reference, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# Coupling, options


def test_coupling_sends_each_class_to_its_translate(paper):
  xa, ya, _, _ = paper
  out = otkit.otdd(xa, ya, xa + 0.3, ya, epsilon=0.5, solver=tight(1e-7))
  one_hot = np.eye(3)[ya]
  classes = otkit.apply_plan(out.geom, out.ot, one_hot)  # (n, 3): mass sent to each class
  flow = one_hot.T @ np.asarray(classes)
  np.testing.assert_allclose(flow.sum(), 1.0, rtol=1e-6)
  assert np.all(np.diag(flow) > 0.999 / 3)


def test_half_convention_and_debiasing_options(small):
  xs, ys, xt, yt = small
  full = otkit.otdd(xs, ys, xt, yt, epsilon=0.5, solver=tight(1e-9))
  half = otkit.otdd(xs, ys, xt, yt, epsilon=0.25, solver=tight(1e-9), feature_weight=0.5,
                    label_weight=0.5)
  np.testing.assert_allclose(half.value, 0.5 * full.value, rtol=1e-7)
  biased = otkit.otdd(xs, ys, xt, yt, epsilon=0.5, solver=tight(1e-9), debiased=False)
  assert biased.ot_s is None and biased.label_distances_s is None
  np.testing.assert_allclose(biased.value, full.ot.value, rtol=1e-7)
  np.testing.assert_allclose(full.distance, np.sqrt(full.value))


def test_embedding_hook_equals_embedding_first(small):
  xs, ys, xt, yt = small
  proj = np.array([[1.0, 0.5], [0.2, -1.0]])  # 2-D: the solves share the programs on `small`
  hooked = otkit.otdd(xs, ys, xt, yt, epsilon=0.5, solver=tight(1e-9), embedding=lambda z: z @ proj)
  direct = otkit.otdd(xs @ proj, ys, xt @ proj, yt, epsilon=0.5, solver=tight(1e-9))
  np.testing.assert_allclose(hooked.value, direct.value, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Transformations


@pytest.mark.parametrize("label_distance", ["gaussian", "exact"])
def test_gradient_in_the_features_matches_finite_differences(small, label_distance):
  xs, ys, xt, yt = small

  def value(x):  # the debiased outer problem is shared by both; one solve keeps "exact" short
    return otkit.otdd(x, ys, xt, yt, epsilon=0.5, solver=tight(1e-11),
                      inner_solver=tight_inner(1e-11),
                      label_distance=label_distance, debiased=label_distance == "gaussian").value

  direction = np.random.default_rng(3).normal(size=xs.shape)
  grad = jax.jit(jax.grad(value))(jnp.asarray(xs))  # one compiled program
  h = 1e-5
  fd = (value(xs + h * direction) - value(xs - h * direction)) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(grad, direction), fd, rtol=1e-6)


# float64 runs with -m slow (the same program as float32, one more compilation).
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=pytest.mark.slow)],
                         ids=["f32", "f64"])
def test_jit_vmap_and_dtype(small, dtype):
  xs, ys, xt, yt = (v.astype(dtype) if v.dtype.kind == "f" else v for v in small)
  shifts = np.linspace(0.0, 1.0, 3).astype(dtype)
  batch = xs[None] + shifts[:, None, None]
  # float32 with the default solver; float64 with that of the tests against references (the
  # eager solves share their programs)
  solver = None if dtype == np.float32 else tight(1e-9)
  fn = jax.jit(jax.vmap(lambda x: otkit.otdd(x, ys, xt, yt, epsilon=0.5, solver=solver).value))
  values = fn(batch)
  assert values.dtype == dtype
  tol = 1e-4 if dtype == np.float32 else 1e-9
  for i in range(len(shifts)):
    eager = otkit.otdd(batch[i], ys, xt, yt, epsilon=0.5, solver=solver)
    assert eager.value.dtype == dtype
    np.testing.assert_allclose(values[i], eager.value, rtol=tol)


@pytest.mark.parametrize("label_distance", ["gaussian",
                                            pytest.param("exact", marks=pytest.mark.slow)])
def test_traced_labels_with_num_classes(small, label_distance):
  xs, ys, xt, yt = small
  codes_t = yt - 10
  fn = jax.jit(lambda ys, yt: otkit.otdd(xs, ys, xt, yt, epsilon=0.5, num_classes=(3, 4),
                                         label_distance=label_distance, solver=tight(1e-9)).value)
  eager = otkit.otdd(xs, ys, xt, yt, epsilon=0.5, label_distance=label_distance,
                     solver=tight(1e-9))  # the programs of the other tests on `small`
  np.testing.assert_allclose(fn(ys, codes_t), eager.value, rtol=1e-9)


def test_failure_inside_jit_is_reported_in_the_result(small):
  xs, ys, xt, yt = small
  out = jax.jit(lambda x: otkit.otdd(x, ys, xt, yt, epsilon=1e-3, solver=outer(max_iters=3)))(xs)
  assert not bool(out.converged)
  # Three sweeps end inside the ε-annealing schedule: the value at the target ε overflows.
  expected = otkit.Result.MAX_ITERS if np.isfinite(out.value) else otkit.Result.NON_FINITE
  assert int(out.result) == expected
  with pytest.raises(RuntimeError, match=expected.name):
    otkit.check(out)
  with pytest.raises(RuntimeError):
    otkit.check(out.ot)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("change, match", [
    (dict(labels_s=np.zeros(60)), "`labels_s` must hold integer"),
    (dict(labels_t=np.zeros(59, int)), r"`labels_t` must have shape \(60,\)"),
    (dict(x_s=np.full((60, 2), np.nan)), "`x_s` contains"),
    (dict(x_t=np.zeros((60, 3))), "same dimension"),
    (dict(epsilon=0.0), "`epsilon`"),
    (dict(num_classes=(4, 4)), "class 3 of `labels_s` has no samples"),
    (dict(num_classes=3), r"`labels_t` must lie in \[0, 3\)"),
    (dict(label_distance="bures"), "`label_distance`"),
    (dict(label_distance="exact", max_class_size=5), "`max_class_size`"),
    (dict(embedding=lambda z: z[:10]), "`embedding`"),
    (dict(label_weight=-1.0), "`label_weight`"),
    (dict(x_s=np.zeros((0, 2)), labels_s=np.zeros(0, int)), "`x_s` is empty"),
    (dict(solver=dict(tol=1e-3)), "`solver`"),
    (dict(label_distance="exact", inner_solver="sinkhorn"), "`inner_solver`"),
])
def test_bad_inputs_name_the_argument(small, change, match):
  xs, ys, xt, yt = small
  args = dict(x_s=xs, labels_s=ys, x_t=xt, labels_t=yt - 10, epsilon=0.5)
  args.update(change)
  with pytest.raises(ValueError, match=match):
    otkit.otdd(**args)
