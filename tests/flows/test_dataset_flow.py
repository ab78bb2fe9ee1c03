"""Dataset flows: the four label modes on a translated dataset (closed form), constraints,
augmented particles and k-means against scikit-learn, bad input."""

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import otkit

from otkit.flows import dataset as ds

T = np.array([1.0, -0.5])
TAU = 0.25


@pytest.fixture(scope="module")
def source():
  rng = np.random.default_rng(0)
  centres = np.array([(0, 0), (4, 0), (0, 4)], float)
  x = np.concatenate([c + 0.5 * rng.standard_normal((40, 2)) for c in centres])
  return x, np.repeat(np.arange(3), 40)


def _solver(tol):
  """The default OTDD solver of the flows (annealed, envelope gradients) at tolerance ``tol``."""
  return otkit.Sinkhorn(tol=tol, anneal=True, grad_mode="envelope")


def _translate(x, labels, mode, **kwargs):
  options = dict(mode=mode, epsilon=0.1, step_size=TAU, n_steps=4, feature_weight=0.5,
                 label_weight=0.5, solver=_solver(1e-9)) | kwargs
  return ds.dataset_flow(x, labels, x + T, labels, **options)


@pytest.mark.parametrize("mode, rate", [("xonly", 0.75), ("xonly-attached", 0.5),
                                        ("xytied", 0.75), ("xyaugm", 0.75)])
def test_every_mode_contracts_a_translation(source, mode, rate):
  # OTDD(A, A + t) = ‖t‖² (½ convention); each mode moves every particle (and, when they are
  # variables, the class means) by (1 − rate) t per step.
  x, labels = source
  out = _translate(x, labels, mode)
  np.testing.assert_allclose(out.values[0], 1.25, atol=1e-6)
  np.testing.assert_allclose(out.values / out.values[0], rate ** (2 * np.arange(5)), atol=1e-6)
  expected = x + (1.0 - rate ** 4) * T
  np.testing.assert_allclose(out.frames[-1], expected, atol=1e-6)
  assert out.frames.shape == (5, 120, 2)
  _, inverse = np.unique(np.asarray(out.labels), return_inverse=True)
  assert adjusted_rand_score(labels, inverse) == 1.0  # same partition (k-means in xyaugm)
  means = np.stack([expected[labels == k].mean(0) for k in range(3)])
  order = [int(np.asarray(out.labels)[labels == k][0]) for k in range(3)]
  np.testing.assert_allclose(np.asarray(out.means)[order], means, atol=1e-6)
  assert not bool(out.failed)
  assert int(otkit.check(out).result) == otkit.Result.CONVERGED


def test_float32_flow(source):
  x, labels = source
  out = _translate(x.astype(np.float32), labels, "xonly", solver=_solver(1e-5))
  assert out.frames.dtype == np.float32
  np.testing.assert_allclose(out.values / out.values[0], 0.75 ** (2 * np.arange(5)), atol=1e-3)


def test_class_collapse_contracts_each_class_to_its_mean(source):
  x, labels = source
  energy = ds.class_collapse(labels)
  out = ds.dataset_flow(x, labels, x, labels, constraint=energy, otdd_weight=0.0,
                        step_size=0.1, n_steps=5)
  means = np.stack([x[labels == k].mean(0) for k in range(3)])[labels]
  np.testing.assert_allclose(out.frames[-1], means + 0.9 ** 5 * (x - means), atol=1e-10)


def test_margin_potential_separates_the_classes(source):
  x, labels = source
  w, b = np.array([1.0, 1.0]), 2.0
  signs = np.where(labels == 0, -1.0, 1.0)
  energy = ds.margin_potential(signs, w, b)
  out = ds.dataset_flow(x, labels, x, labels, constraint=energy, otdd_weight=0.0,
                        step_size=0.5, n_steps=40)
  final = np.asarray(out.frames[-1])
  assert np.all(signs * (final @ w - b) >= 1.0 - 1e-9)
  assert float(out.values[-1]) < 1e-9 < float(out.values[0])


def test_augment_and_kmeans(source):
  x, labels = source
  z = np.asarray(ds.augment(x, labels))
  for k in range(3):
    members = x[labels == k]
    np.testing.assert_allclose(z[labels == k, 2:4], np.broadcast_to(members.mean(0), (40, 2)),
                               atol=1e-12)
    np.testing.assert_allclose(z[labels == k, 4:], np.broadcast_to(members.std(0), (40, 2)),
                               atol=1e-12)
  found = np.asarray(ds.kmeans_labels(x, 3))
  oracle = KMeans(3, n_init=10, random_state=0).fit_predict(x)
  assert adjusted_rand_score(oracle, found) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="xy"), "`mode` must be one of"),
    (dict(step_size=0.0), "`step_size`"),
    (dict(n_steps=0), "`n_steps`"),
    (dict(constraint=lambda x: x), "must return a scalar"),
    (dict(mode="xyaugm", n_clusters=500), "`n_clusters`"),
])
def test_bad_input_raises(source, kwargs, message):
  x, labels = source
  with pytest.raises(ValueError, match=message):
    ds.dataset_flow(x, labels, x, labels, **kwargs)


def test_mismatched_labels_raise(source):
  x, labels = source
  with pytest.raises(ValueError, match="`labels` has 119 entries"):
    ds.dataset_flow(x, labels[:-1], x, labels)
  with pytest.raises(ValueError, match="`labels_t` must have shape"):
    ds.dataset_flow(x, labels, x, labels[:-1])
  with pytest.raises(ValueError, match="`signs`"):
    ds.dataset_flow(x, labels, x, labels, constraint=ds.margin_potential(jnp.ones(3),
                                                                          jnp.ones(2)))
