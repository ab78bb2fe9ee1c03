"""OTDD to a fixed labelled dataset as a functional of the source features.

The source dataset ``{(x_i, l_i)}`` moves through its features ``x`` (the labels stay); the
target ``{(x'_j, l'_j)}`` is fixed. The label-to-label distances are the Gaussian (Bures)
ones of :func:`otkit.otdd` and come from the class statistics ``(μ_l, Σ_l)`` of the source,
which are either

- recomputed from ``x`` and kept out of the gradient (``statistics="detached"``, the ``xonly``
  mode of the reference code): a particle is pulled by the feature cost only;
- recomputed from ``x`` and differentiated through (``"attached"``, ``xonly-attached``): the
  class means and covariances pull too (for a translation the velocity doubles);
- or given as separate variables (``xytied``, see :mod:`otkit.flows.dataset`).

References:
  Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.
  Alvarez-Melis, Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from otkit import _validation as V
from otkit.datasets import _otdd
from otkit.datasets import _statistics as ST
from otkit.estimators import sinkhorn_divergence
from otkit.flows._energies import Energy, _check_chunk, _check_dimension, _single, _static_field
from otkit.geometry import LabelledPointCloud
from otkit.geometry._labelled import check_labels
from otkit.solvers import solve
from otkit.solvers._solver import check_solver

Array = jax.Array
STATISTICS = ("detached", "attached")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OTDDTo:
  """``OTDD²((x, labels), D_t)`` with Gaussian label distances (a pytree).

  Target class statistics are computed once; ``codes_s``/``codes_t`` are class indices.
  """

  x_t: Array
  codes_s: Array
  codes_t: Array
  means_t: Array
  covs_t: Array
  epsilon: Array
  feature_weight: Array
  label_weight: Array
  solver: Any
  k_s: int = _static_field()
  k_t: int = _static_field()
  statistics: str = _static_field(default="detached")
  debiased: bool = _static_field(default=True)
  chunk_size: int | None = _static_field(default=None)

  def source_statistics(self, x: Array) -> tuple[Array, Array]:
    """Class means ``(k_s, d)`` and covariances ``(k_s, d, d)`` of the particles ``x``."""
    if self.statistics == "detached":
      x = jax.lax.stop_gradient(x)
    _, means, covs = ST.segment_statistics(x, self.codes_s, self.k_s)
    return means, covs

  def value(self, x: Array) -> Array:
    return self.value_with_statistics(x, *self.source_statistics(x))

  def value_with_statistics(self, x: Array, means_s: Array, covs_s: Array) -> Array:
    """The OTDD of features ``x`` whose classes have the given means and covariances."""
    dtype = x.dtype
    pairs = _otdd.class_pairs(self.k_s, self.k_t, self.debiased)
    values = _otdd.gaussian_pair_distances(
        jnp.concatenate([means_s, self.means_t.astype(dtype)]),
        jnp.concatenate([covs_s, self.covs_t.astype(dtype)]), pairs)
    w_st, w_ss, w_tt = _otdd.assemble(values, pairs, jnp.zeros(self.k_s + self.k_t, dtype),
                                      self.k_s)
    geom = LabelledPointCloud(x, self.codes_s, self.x_t.astype(dtype), self.codes_t, w_st,
                              feature_weight=self.feature_weight.astype(dtype),
                              label_weight=self.label_weight.astype(dtype),
                              chunk_size=self.chunk_size, label_cost_xx=w_ss, label_cost_yy=w_tt)
    epsilon = self.epsilon.astype(dtype)
    if self.debiased:
      return sinkhorn_divergence(geom, epsilon=epsilon, solver=self.solver).value
    return solve(geom, epsilon=epsilon, solver=self.solver).value

  def check(self, x: Array) -> None:
    _check_dimension("x_t", self.x_t, x)
    if x.shape[0] != self.codes_s.shape[0]:
      raise ValueError(f"`labels` has {self.codes_s.shape[0]} entries but there are {x.shape[0]} "
                       "particles; give one label per particle.")


def _codes(name: str, labels, n: int, num_classes):
  """Class indices ``0..k−1`` and ``k`` from concrete labels (or labels in ``[0, num_classes)``)."""
  labels = check_labels(name, labels, n, num_classes)
  if num_classes is None:
    classes, codes = ST.encode_labels(name, labels)
    return jnp.asarray(codes), len(classes)
  ST.check_classes(name, labels, num_classes)
  return jnp.asarray(labels, jnp.int32), num_classes


def otdd_term(x_t, labels_t, labels, *, epsilon, statistics="detached", debiased=True,
              feature_weight=1.0, label_weight=1.0, num_classes=None, chunk_size=None,
              solver=None) -> OTDDTo:
  """The validated :class:`OTDDTo` behind :func:`otdd_to` (also used by dataset flows)."""
  V.check_choice("statistics", statistics, STATISTICS)
  x_t = V.check_points("x_t", x_t)
  dtype = x_t.dtype
  if isinstance(num_classes, (tuple, list)):
    if len(num_classes) != 2:
      raise ValueError(f"`num_classes` must be an int or a pair (source, target); got "
                       f"{num_classes!r}.")
    k_s, k_t = num_classes
  else:
    k_s = k_t = num_classes
  codes_t, k_t = _codes("labels_t", labels_t, x_t.shape[0], k_t)
  if labels is None or jnp.ndim(labels) != 1:
    raise ValueError(f"`labels` must be integer labels of shape (n,), one per particle; got "
                     f"{None if labels is None else jnp.shape(labels)}.")
  codes_s, k_s = _codes("labels", labels, jnp.shape(labels)[0], k_s)
  _, means_t, covs_t = ST.segment_statistics(x_t, codes_t, k_t)
  solver = _otdd.DEFAULT_SOLVER if solver is None else check_solver(solver)
  return OTDDTo(x_t, codes_s, codes_t, means_t, covs_t,
                V.check_positive("epsilon", epsilon, dtype),
                V.check_nonnegative("feature_weight", feature_weight, dtype),
                V.check_nonnegative("label_weight", label_weight, dtype), solver, k_s=k_s, k_t=k_t,
                statistics=statistics, debiased=bool(debiased),
                chunk_size=_check_chunk(chunk_size))


def otdd_to(x_t, labels_t, labels, *, epsilon, statistics="detached", debiased=True,
            feature_weight=1.0, label_weight=1.0, num_classes=None, chunk_size=None,
            solver=None) -> Energy:
  """OTDD from the labelled particles ``(x, labels)`` to a fixed dataset ``(x_t, y_t)``.

  The functional of the features ``x (n, d)`` whose value is ``otkit.otdd(x, labels, x_t,
  labels_t, epsilon=…).value`` with the Gaussian label distance: the entropic OT (debiased by default) for
  the cost ``λ_x ‖x − x'‖² + λ_y W₂²(N(μ_l, Σ_l), N(μ'_{l'}, Σ'_{l'}))`` (sum convention; pass
  ``feature_weight=label_weight=0.5`` for the ½ convention of the reference code).

  Args:
    x_t: target features ``(m, d)``; labels_t: target integer labels ``(m,)``.
    labels: integer labels of the particles ``(n,)`` (fixed along the flow).
    epsilon: entropic regularisation of the outer problem (traced); the reference flows use 0.1.
    statistics: ``"detached"`` (default, the reference ``xonly``): the class statistics of the
      particles are recomputed at every evaluation but not differentiated; ``"attached"``
      (``xonly-attached``): differentiated too.
    debiased: Sinkhorn divergence (default) or the plain ``OT_ε``.
    feature_weight, label_weight: ``λ_x, λ_y >= 0`` (traced).
    num_classes: static ``k`` or ``(k_s, k_t)`` for labels already in ``[0, k)``; default: the
      distinct labels of each dataset.
    chunk_size: rows per block of the outer online reductions (static).
    solver: the outer solver object; default as :func:`otkit.otdd`
      (``Sinkhorn(anneal=True, grad_mode="envelope")``).

  Returns:
    An :class:`otkit.flows.Energy`.

  References:
    Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.

  Example:
    >>> import numpy as np, otkit
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 2)); y = rng.integers(0, 3, 60)
    >>> F = otkit.flows.otdd_to(x + [0.3, -0.2], y, y, epsilon=0.1)
    >>> round(float(F(x)), 3)  # 2‖t‖², as otkit.otdd
    0.26
  """
  return _single(otdd_term(x_t, labels_t, labels, epsilon=epsilon, statistics=statistics,
                           debiased=debiased, feature_weight=feature_weight,
                           label_weight=label_weight, num_classes=num_classes,
                           chunk_size=chunk_size, solver=solver))
