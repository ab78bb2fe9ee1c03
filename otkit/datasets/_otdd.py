"""OTDD: the optimal-transport distance between labelled datasets.

A labelled dataset ``D = {(x_i, l_i)}`` is a measure on features × labels, and each label ``l`` is
represented by its class-conditional feature law ``α_l``. The ground cost on pairs is

  ``d((x, l), (x', l'))² = λ_x ‖x − x'‖² + λ_y W₂²(α_l, α'_{l'})``   (sum convention, no ½)

and OTDD is the entropic OT (by default the debiased Sinkhorn divergence) between the two
datasets for that cost. The class-to-class distances ``W₂²`` are precomputed once, either between
Gaussian approximations ``N(μ_l, Σ_l)`` (Bures, closed form) or between the class point sets by
entropic OT, and looked up inside the online log-sum-exp (:class:`otkit.LabelledPointCloud`).

References:
  Alvarez-Melis, Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.closed_form import gaussian_w2
from otkit.datasets import _statistics as ST
from otkit.estimators import sinkhorn_divergence
from otkit.geometry import LabelledPointCloud, PointCloud
from otkit.geometry._geometry import auto_block_rows
from otkit.geometry._labelled import check_labels
from otkit.solvers import Result, Sinkhorn, SinkhornOutput, combine_results, solve
from otkit.solvers._output import reduce_result
from otkit.solvers._solver import check_solver

Array = jax.Array
LABEL_DISTANCES = ("gaussian", "exact")
# Defaults: the outer problems are annealed (the label term splits the cost into class blocks,
# and the balance of mass between blocks converges slowly at moderate ε without it); both
# levels differentiate the value by the envelope theorem.
DEFAULT_SOLVER = Sinkhorn(anneal=True, grad_mode="envelope")


def inner_default(solver):
  """The label-distance solver by default: the outer one with envelope gradients (and, for
  Sinkhorn, ε-annealing only where it pays, ``anneal="auto"``)."""
  changes = {"grad_mode": "envelope"}
  if isinstance(solver, Sinkhorn):
    changes["anneal"] = "auto"
  return dataclasses.replace(solver, **changes)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class OTDDOutput:
  """Result of :func:`otdd` (a pytree).

  Attributes:
    value: ``OTDD²``, the entropic OT cost between the datasets with the augmented cost (the
      debiased Sinkhorn divergence when ``debiased=True``). ``distance = √value``.
    result: the worst :class:`otkit.Result` code of every solve (outer, and inner ones for
      ``"exact"``); ``converged`` is ``result == Result.CONVERGED``.
    label_distances: ``W₂²`` between source and target classes, shape ``(k_s, k_t)``.
    label_distances_s, label_distances_t: within-dataset tables ``(k_s, k_s)``, ``(k_t, k_t)``
      (``None`` unless debiased).
    geom: the :class:`otkit.LabelledPointCloud` of source against target.
    ot: the :class:`otkit.SinkhornOutput` of that problem: the coupling is
      ``otkit.apply_plan(out.geom, out.ot, v)`` (online) or ``otkit.transport_plan(out.geom, out.ot)``.
    ot_s, ot_t: the symmetric problems of the debiased form (``None`` unless debiased).
    classes_s, classes_t: the original label of each row / column of ``label_distances`` (static).
  """

  value: Array
  result: Array
  label_distances: Array
  label_distances_s: Array | None
  label_distances_t: Array | None
  geom: LabelledPointCloud
  ot: SinkhornOutput
  ot_s: SinkhornOutput | None
  ot_t: SinkhornOutput | None
  classes_s: tuple = dataclasses.field(metadata=dict(static=True))
  classes_t: tuple = dataclasses.field(metadata=dict(static=True))

  @property
  def converged(self) -> Array:
    """Whether every solve converged."""
    return self.result == Result.CONVERGED

  @property
  def distance(self) -> Array:
    """``√max(value, 0)``, the distance itself (not squared)."""
    return jnp.sqrt(jnp.maximum(self.value, 0.0))


# ---------------------------------------------------------------------------------------------
# Class pairs: which label distances are needed, evaluated in one vmap, assembled in tables.


def class_pairs(k_s: int, k_t: int, within: bool) -> np.ndarray:
  """Static ``(P, 2)`` pairs of class indices into the combined list ``[source…, target…]``.

  Source–target pairs always; with ``within``, the pairs ``i < j`` inside each dataset too.
  """
  pairs = [(i, k_s + j) for i in range(k_s) for j in range(k_t)]
  if within:
    for offset, k in ((0, k_s), (k_s, k_t)):
      pairs += [(offset + i, offset + j) for i in range(k) for j in range(i + 1, k)]
  return np.asarray(pairs, dtype=np.int32).reshape(-1, 2)


def assemble(values: Array, pairs: np.ndarray, diagonal: Array, k_s: int):
  """Symmetric table over the combined classes, split into ``(W_st, W_ss, W_tt)``."""
  k = diagonal.shape[0]
  table = jnp.zeros((k, k), values.dtype).at[pairs[:, 0], pairs[:, 1]].set(values)
  table = table.at[pairs[:, 1], pairs[:, 0]].set(values)
  table = table.at[jnp.arange(k), jnp.arange(k)].set(diagonal)
  return table[:k_s, k_s:], table[:k_s, :k_s], table[k_s:, k_s:]


def gaussian_pair_distances(means: Array, covs: Array, pairs: np.ndarray) -> Array:
  """Bures–Wasserstein ``W₂²`` between ``N(means[i], covs[i])`` and ``N(means[j], covs[j])``."""
  i, j = pairs[:, 0], pairs[:, 1]
  return jax.vmap(gaussian_w2)(means[i], covs[i], means[j], covs[j])


def inner_chunk(n_pairs: int, size: int) -> int:
  """Rows per block of each of ``n_pairs`` vmapped ``size × size`` problems, so that one batched
  block holds about as many entries as one block of a single large problem."""
  rows_total = auto_block_rows(n_pairs * size, size, None)
  return max(1, min(size, rows_total // n_pairs))


def entropic_pair_values(points: Array, index: Array, weights: Array, pairs: np.ndarray,
                         epsilon: Array, solver) -> tuple[Array, Array]:
  """``OT_ε`` between the padded class point sets of every pair, one vmapped :func:`otkit.solve`.

  Args:
    points: all points, ``(N, d)``; index: ``(k, size)`` positions of each class's points;
    weights: ``(k, size)`` class weights (``1/n_k`` on members, 0 on padding).
    pairs: static ``(P, 2)`` class pairs.

  Returns:
    ``(values (P,), results (P,))``.
  """
  chunk = inner_chunk(len(pairs), index.shape[1])

  def one(i, j):
    geom = PointCloud(points[index[i]], points[index[j]], chunk_size=chunk)
    out = solve(geom, weights[i], weights[j], epsilon=epsilon, solver=solver)
    return out.value, out.result

  return jax.vmap(one)(jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1]))


# ---------------------------------------------------------------------------------------------
# Label-distance tables (jitted; class counts and sizes static)


@functools.partial(jax.jit, static_argnames=("k_s", "k_t", "within"))
def gaussian_label_tables(x_s, labels_s, x_t, labels_t, *, k_s, k_t, within):
  """``(W_st, W_ss, W_tt)`` between the Gaussian approximations of the classes."""
  _, means_s, covs_s = ST.segment_statistics(x_s, labels_s, k_s)
  _, means_t, covs_t = ST.segment_statistics(x_t, labels_t, k_t)
  pairs = class_pairs(k_s, k_t, within)
  values = gaussian_pair_distances(jnp.concatenate([means_s, means_t]),
                                   jnp.concatenate([covs_s, covs_t]), pairs)
  zeros = jnp.zeros(k_s + k_t, values.dtype)
  return (*assemble(values, pairs, zeros, k_s), jnp.asarray(Result.CONVERGED, jnp.int32))


@functools.partial(jax.jit, static_argnames=("k_s", "k_t", "within", "size", "debiased"))
def exact_label_tables(x_s, labels_s, x_t, labels_t, epsilon, solver, *, k_s, k_t, within, size,
                       debiased):
  """``(W_st, W_ss, W_tt, result)`` by entropic OT between the class point sets.

  ``debiased`` uses the Sinkhorn divergence ``OT_ε(α, β) − ½ OT_ε(α, α) − ½ OT_ε(β, β)`` (zero
  between identical classes); otherwise ``OT_ε(α, β)``. All pairs run in one vmap.
  """
  index_s, member_s = ST.class_members(labels_s, k_s, size)
  index_t, member_t = ST.class_members(labels_t, k_t, size)
  index = jnp.concatenate([index_s, index_t + x_s.shape[0]])
  member = jnp.concatenate([member_s, member_t]).astype(x_s.dtype)
  weights = member / jnp.sum(member, axis=1, keepdims=True)
  points = jnp.concatenate([x_s, x_t])
  pairs = class_pairs(k_s, k_t, within)
  k = k_s + k_t
  self_terms = debiased or within
  if self_terms:
    pairs = np.concatenate([pairs, np.repeat(np.arange(k, dtype=np.int32)[:, None], 2, axis=1)])
  values, results = entropic_pair_values(points, index, weights, pairs, epsilon, solver)
  n_cross = len(pairs) - (k if self_terms else 0)
  diagonal = values[n_cross:] if self_terms else jnp.zeros(k, values.dtype)
  values, pairs = values[:n_cross], pairs[:n_cross]
  if debiased:
    values = jnp.maximum(values - 0.5 * (diagonal[pairs[:, 0]] + diagonal[pairs[:, 1]]), 0.0)
    diagonal = jnp.zeros_like(diagonal)
  return (*assemble(values, pairs, diagonal, k_s), reduce_result(results))


# ---------------------------------------------------------------------------------------------
# Validation


def _check_dataset(x, labels, x_name: str, y_name: str, embedding):
  x = V.check_points(x_name, x)
  labels = check_labels(y_name, labels, x.shape[0])
  if embedding is not None:
    x = jnp.asarray(embedding(x))
    if x.ndim != 2 or x.shape[0] != labels.shape[0]:
      raise ValueError(f"`embedding` must map `{x_name}` of shape (n, d) to (n, d'); got shape "
                       f"{x.shape}.")
    V.check_finite(f"embedding({x_name})", x)
  return x, labels


def _pair_option(name: str, value, minimum: int = 1):
  if value is None:
    return None, None
  if isinstance(value, (tuple, list)):
    if len(value) != 2:
      raise ValueError(f"`{name}` must be an int or a pair (source, target); got {value!r}.")
    return tuple(V.check_static_int(name, v, minimum) for v in value)
  value = V.check_static_int(name, value, minimum)
  return value, value


def _classes(labels, name: str, num_classes):
  """``(classes, codes, k)``: the classes found in concrete labels, or ``0..k−1`` if ``k`` given."""
  if num_classes is None:
    classes, codes = ST.encode_labels(name, labels)
    return classes, codes, len(classes)
  check_labels(name, labels, labels.shape[0], num_classes)
  ST.check_classes(name, labels, num_classes)
  return tuple(range(num_classes)), labels, num_classes


def _class_size(labels, k: int, given, n: int) -> int:
  if given is not None:
    if V.is_concrete(labels):
      largest = int(np.bincount(np.asarray(labels), minlength=k).max())
      if largest > given:
        raise ValueError(f"`max_class_size` is {given} but a class has {largest} points.")
    return given
  if V.is_concrete(labels):
    return int(np.bincount(np.asarray(labels), minlength=k).max())
  return n


# ---------------------------------------------------------------------------------------------
# Public function


def otdd(x_s, labels_s, x_t, labels_t, *, epsilon, label_distance="gaussian", debiased=True,
         feature_weight=1.0, label_weight=1.0, inner_epsilon=None, inner_debiased=True,
         num_classes=None, max_class_size=None, embedding: Callable | None = None,
         chunk_size=None, solver=None, inner_solver=None, mesh=None) -> OTDDOutput:
  """The optimal-transport dataset distance (OTDD) between two labelled datasets.

  Solves entropic OT between ``D_s = {(x_i, l_i)}`` and ``D_t`` (uniform weights) for the cost
  ``λ_x ‖x − x'‖² + λ_y W₂²(α_y, α'_{y'})`` (sum convention, no ½; Microsoft's ``otdd`` uses ½ on
  both terms: pass ``feature_weight=label_weight=0.5``), where ``α_y`` is the law of the features
  of class ``y``. The label sets may differ or be disjoint. The cost is looked up inside the
  online log-sum-exp: memory is O((n + m)·d + k_s·k_t), no n×m matrix.

  Args:
    x_s: source features ``(n, d)``; labels_s: source integer labels ``(n,)``.
    x_t: target features ``(m, d)``; labels_t: target integer labels ``(m,)``.
    epsilon: entropic regularisation of the outer problem, in units of the cost (traced).
    label_distance: ``"gaussian"`` (default): ``W₂²`` between ``N(μ_y, Σ_y)`` (Bures, biased
      class covariances, :func:`otkit.gaussian_w2`); ``"exact"``: entropic OT between the class
      point sets (all class pairs in one ``vmap``, padded to the largest class).
    debiased: ``True`` (default) returns the Sinkhorn divergence
      ``OT_ε(D_s, D_t) − ½ OT_ε(D_s, D_s) − ½ OT_ε(D_t, D_t)`` (0 for identical datasets);
      ``False`` the regularised ``OT_ε(D_s, D_t)``.
    feature_weight, label_weight: ``λ_x, λ_y >= 0`` (traced).
    inner_epsilon: ε of the ``"exact"`` label distances (default ``epsilon``).
    inner_debiased: for ``"exact"``, use the Sinkhorn divergence between classes (default; zero
      between identical classes) or the plain ``OT_ε`` (as Microsoft's ``otdd``).
    num_classes: static ``k`` or ``(k_s, k_t)``: labels are then class indices in ``[0, k)``, each
      class non-empty. Needed when the labels are traced; ``None`` (default) takes the distinct
      labels of each dataset (sorted) as its classes.
    max_class_size: static ``int`` or pair, the padded class size of ``"exact"`` when the labels
      are traced (default: the dataset size); found from concrete labels otherwise.
    embedding: optional function ``(n, d) -> (n, d')`` applied to both feature arrays first
      (e.g. a projection ``lambda x: x @ P``, or a trained encoder).
    chunk_size: rows per block of the outer online reductions (static).
    mesh: a ``jax.sharding.Mesh`` to split the source dataset over in the outer problem (each
      device reduces its own rows; see :class:`otkit.PointCloud`), or ``None``.
    solver: the outer solver object (:class:`otkit.Sinkhorn` or :class:`otkit.SinkhornNewton`);
      default ``Sinkhorn(anneal=True, grad_mode="envelope")``: annealed, because the label term
      splits the cost into blocks (one per class pair) whose balance of mass converges slowly
      at moderate ε without it; envelope gradients (exact first derivatives of ``value``,
      no linear solve).
    inner_solver: the solver of the ``"exact"`` label distances (all class pairs in one
      ``vmap``); default: ``solver`` with ``grad_mode="envelope"`` (and ``anneal="auto"`` for
      :class:`otkit.Sinkhorn`).

  Returns:
    :class:`OTDDOutput` with ``value`` (``OTDD²``), ``distance``, ``label_distances (k_s, k_t)``,
    the geometry and solver outputs (for the coupling) and ``converged``.

  References:
    Alvarez-Melis, Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020.

  Example:
    >>> import numpy as np, otkit
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 2)); y = rng.integers(0, 3, 60)
    >>> out = otkit.otdd(x, y, x + [0.3, -0.2], y, epsilon=0.1)
    >>> round(float(out.value), 3)  # 2‖t‖²: features and classes both move by t
    0.26
    >>> out.label_distances.shape
    (3, 3)
  """
  V.check_choice("label_distance", label_distance, LABEL_DISTANCES)
  solver = DEFAULT_SOLVER if solver is None else check_solver(solver)
  inner_solver = (inner_default(solver) if inner_solver is None
                  else check_solver(inner_solver, "inner_solver"))
  x_s, labels_s = _check_dataset(x_s, labels_s, "x_s", "labels_s", embedding)
  x_t, labels_t = _check_dataset(x_t, labels_t, "x_t", "labels_t", embedding)
  if x_s.shape[1] != x_t.shape[1]:
    raise ValueError(f"`x_s` and `x_t` must have the same dimension d; got {x_s.shape} and "
                     f"{x_t.shape}.")
  dtype = V.common_dtype(x_s, x_t)
  x_s, x_t = x_s.astype(dtype), x_t.astype(dtype)
  k_s, k_t = _pair_option("num_classes", num_classes)
  classes_s, codes_s, k_s = _classes(labels_s, "labels_s", k_s)
  classes_t, codes_t, k_t = _classes(labels_t, "labels_t", k_t)
  feature_weight = V.check_nonnegative("feature_weight", feature_weight, dtype)
  label_weight = V.check_nonnegative("label_weight", label_weight, dtype)
  epsilon = V.check_positive("epsilon", epsilon, dtype)
  if label_distance == "gaussian":
    tables = gaussian_label_tables(x_s, codes_s, x_t, codes_t, k_s=k_s, k_t=k_t, within=debiased)
  else:
    size_s, size_t = _pair_option("max_class_size", max_class_size)
    size = max(_class_size(codes_s, k_s, size_s, x_s.shape[0]),
               _class_size(codes_t, k_t, size_t, x_t.shape[0]))
    inner_eps = V.check_positive("inner_epsilon", epsilon if inner_epsilon is None else inner_epsilon,
                                 dtype)
    tables = exact_label_tables(x_s, codes_s, x_t, codes_t, inner_eps, inner_solver, k_s=k_s,
                                k_t=k_t, within=debiased, size=size, debiased=bool(inner_debiased))
  w_st, w_ss, w_tt, inner_result = tables
  geom = LabelledPointCloud(x_s, codes_s, x_t, codes_t, w_st, feature_weight=feature_weight,
                            label_weight=label_weight, chunk_size=chunk_size, mesh=mesh,
                            label_cost_xx=w_ss if debiased else None,
                            label_cost_yy=w_tt if debiased else None)
  if not debiased:
    out = solve(geom, epsilon=epsilon, solver=solver)
    return OTDDOutput(value=out.value, result=combine_results(out.result, inner_result),
                      label_distances=w_st, label_distances_s=None, label_distances_t=None,
                      geom=geom, ot=out, ot_s=None, ot_t=None, classes_s=classes_s,
                      classes_t=classes_t)
  div = sinkhorn_divergence(geom, epsilon=epsilon, solver=solver)
  return OTDDOutput(value=div.value, result=combine_results(div.result, inner_result),
                    label_distances=w_st, label_distances_s=w_ss, label_distances_t=w_tt,
                    geom=geom, ot=div.xy, ot_s=div.xx, ot_t=div.yy, classes_s=classes_s,
                    classes_t=classes_t)
