"""Per-class statistics of a labelled dataset: counts, means, covariances, member lists.

Everything is computed with segment sums over the labels (one pass, no Python loop over
classes) and works for classes with a single sample (their covariance is 0). Covariances are the
biased (maximum-likelihood) ones, ``Σ_k = (1/n_k) Σ_{l_i = k} (x_i − μ_k)(x_i − μ_k)ᵀ``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.geometry._labelled import check_labels

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ClassStatistics:
  """Per-class statistics of a labelled dataset (a pytree).

  Attributes:
    counts: number of points in each class, shape ``(k,)`` (floating).
    means: class means, shape ``(k, d)`` (0 for an empty class).
    covs: biased class covariances, shape ``(k, d, d)`` (0 for a class of 0 or 1 point).
    classes: the original label of each class index (static), a tuple of ``k`` ints.
  """

  counts: Array
  means: Array
  covs: Array
  classes: tuple = dataclasses.field(metadata=dict(static=True))


def encode_labels(name: str, labels: Array) -> tuple[tuple, Array]:
  """Maps concrete integer labels to class indices ``0..k−1`` (sorted by label value).

  Returns:
    ``(classes, codes)``: the ``k`` distinct labels as Python ints, and ``codes`` of shape ``(n,)``.
  """
  if not V.is_concrete(labels):
    raise ValueError(f"`{name}` is traced (inside jit/vmap/grad), so its classes cannot be found; "
                     "pass `num_classes` with labels already in [0, num_classes).")
  classes, codes = np.unique(np.asarray(labels), return_inverse=True)
  return tuple(int(c) for c in classes), codes.reshape(-1).astype(np.int32)


def check_classes(name: str, labels: Array, num_classes: int) -> None:
  """Raises if a class index in ``[0, num_classes)`` has no sample (checked when concrete)."""
  if not V.is_concrete(labels):
    return
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  empty = np.flatnonzero(counts == 0)
  if empty.size:
    raise ValueError(f"class {int(empty[0])} of `{name}` has no samples ({empty.size} of "
                     f"{num_classes} classes are empty); every class in [0, num_classes) needs a "
                     "point. Drop the empty classes or leave `num_classes=None`.")


def segment_statistics(x: Array, labels: Array, num_classes: int) -> tuple[Array, Array, Array]:
  """Counts ``(k,)``, means ``(k, d)`` and biased covariances ``(k, d, d)`` by segment sums.

  The covariances are accumulated one class at a time (``lax.map``), so memory stays O(n·d)
  instead of the O(n·d²) of summing outer products.
  """
  ones = jnp.ones(x.shape[0], x.dtype)
  counts = jax.ops.segment_sum(ones, labels, num_classes)
  safe = jnp.maximum(counts, 1.0)
  means = jax.ops.segment_sum(x, labels, num_classes) / safe[:, None]
  centred = x - means[labels]

  def scatter(k):
    inside = (labels == k).astype(x.dtype)
    return jnp.matmul(centred.T * inside, centred, precision=_HIGHEST)

  covs = jax.lax.map(scatter, jnp.arange(num_classes)) / safe[:, None, None]
  return counts, means, covs


def class_members(labels: Array, num_classes: int, size: int) -> tuple[Array, Array]:
  """Indices of the points of each class, padded to a static ``size``.

  Args:
    labels: class indices in ``[0, num_classes)``, shape ``(n,)``.
    num_classes: ``k`` (static).
    size: slots per class (static); points beyond it are dropped.

  Returns:
    ``(index, member)``: ``index (k, size)`` int positions into the dataset (0 in empty slots),
    ``member (k, size)`` bool, True where a slot holds a point.
  """
  n = labels.shape[0]
  order = jnp.argsort(labels, stable=True)
  sorted_labels = labels[order]
  counts = jax.ops.segment_sum(jnp.ones(n, jnp.int32), labels, num_classes)
  starts = jnp.cumsum(counts) - counts
  rank = jnp.arange(n) - starts[sorted_labels]
  index = jnp.zeros((num_classes, size), order.dtype).at[sorted_labels, rank].set(order, mode="drop")
  member = jnp.zeros((num_classes, size), bool).at[sorted_labels, rank].set(True, mode="drop")
  return index, member


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _class_statistics(x, labels, *, num_classes):
  return segment_statistics(x, labels, num_classes)


def class_statistics(x, labels, *, num_classes: int | None = None) -> ClassStatistics:
  """Counts, means and covariances of each class of a labelled dataset, by segment sums.

  Args:
    x: features, shape ``(n, d)``.
    labels: integer labels, shape ``(n,)``. With ``num_classes=None`` any integer values (the
      classes are the distinct labels, sorted); otherwise class indices in ``[0, num_classes)``.
    num_classes: static number of classes ``k``; needed when ``labels`` is traced. Every class
      must have a sample when the labels are concrete.

  Returns:
    :class:`ClassStatistics` with ``counts (k,)``, ``means (k, d)``, biased ``covs (k, d, d)``
    (a one-point class has covariance 0) and the original ``classes``.

  References:
    Alvarez-Melis, Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> x = jnp.array([[0.0], [2.0], [5.0]])
    >>> stats = otkit.class_statistics(x, jnp.array([7, 7, 3]))
    >>> stats.classes, stats.means[:, 0].tolist(), stats.covs[:, 0, 0].tolist()
    ((3, 7), [5.0, 1.0], [0.0, 1.0])
  """
  x = V.check_points("x", x)
  labels = check_labels("labels", labels, x.shape[0], num_classes)
  if num_classes is None:
    classes, labels = encode_labels("labels", labels)
    num_classes = len(classes)
  else:
    num_classes = V.check_static_int("num_classes", num_classes)
    check_classes("labels", labels, num_classes)
    classes = tuple(range(num_classes))
  counts, means, covs = _class_statistics(x, labels, num_classes=num_classes)
  return ClassStatistics(counts=counts, means=means, covs=covs, classes=classes)
