"""The label-augmented geometry of labelled datasets (the ground cost of OTDD).

Points carry an integer class index; the cost between ``(x_i, l_i)`` and ``(y_j, l'_j)`` is

  ``C_ij = λ_x c(x_i, y_j) + λ_y W[l_i, l'_j]``

where ``c`` is a feature cost (default ``‖x − y‖²``, no ½) and ``W`` a ``(k_x, k_y)`` table of
distances between the classes. A block of rows is a feature block plus a gather from ``W``, so
the online reductions of :mod:`._reductions` work unchanged and no n×m matrix is stored.

References:
  Alvarez-Melis, Fusi, "Geometric Dataset Distances via Optimal Transport", NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.geometry import _budget, _costs
from otkit.geometry import _geometry as G

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LabelledPointCloud:
  """Two labelled point clouds with the augmented cost ``λ_x c(x, y) + λ_y W[l, l']``, online.

  Args:
    x: source features, shape ``(n, d)``.
    labels_x: source class indices in ``[0, k_x)``, integer array of shape ``(n,)``.
    y: target features, shape ``(m, d)``.
    labels_y: target class indices in ``[0, k_y)``, shape ``(m,)``.
    label_cost: class-to-class costs ``W``, shape ``(k_x, k_y)`` (for OTDD, squared Wasserstein
      distances between the class-conditional feature laws).
    cost_fn: feature cost (default :class:`otkit.SqEuclidean`, ``‖x − y‖²``) or a callable.
    feature_weight: ``λ_x >= 0`` (traced).
    label_weight: ``λ_y >= 0`` (traced).
    chunk_size: rows per block of the online reductions (static); ``None`` picks it from the size
      and lets the solvers store the cost matrix when it fits the memory budget.
    label_cost_xx, label_cost_yy: optional within-dataset class costs ``(k_x, k_x)`` and
      ``(k_y, k_y)``; with them the geometry has self-pairs (x with x, y with y), and
      :func:`otkit.sinkhorn_divergence` accepts it.
    vmap_size, memory_budget, mesh, sharded: static; as for :class:`otkit.PointCloud` (the
      labels are split with their points).

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> geom = otkit.LabelledPointCloud(jnp.zeros((2, 1)), jnp.array([0, 1]),
    ...                                 jnp.ones((3, 1)), jnp.array([0, 0, 1]),
    ...                                 jnp.array([[0.0, 5.0], [5.0, 0.0]]))
    >>> geom.cost_matrix.tolist()
    [[1.0, 1.0, 6.0], [6.0, 6.0, 1.0]]
  """

  x: Array
  labels_x: Array
  y: Array
  labels_y: Array
  label_cost: Array
  cost_fn: Any = dataclasses.field(default_factory=_costs.SqEuclidean)
  feature_weight: Array | float = 1.0
  label_weight: Array | float = 1.0
  chunk_size: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  label_cost_xx: Array | None = None
  label_cost_yy: Array | None = None
  vmap_size: int = dataclasses.field(default=1, metadata=dict(static=True))
  memory_budget: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  mesh: Any = dataclasses.field(default=None, metadata=dict(static=True))
  sharded: str = dataclasses.field(default="x", metadata=dict(static=True))

  def __init__(self, x, labels_x, y, labels_y, label_cost, cost_fn=None, feature_weight=1.0,
               label_weight=1.0, chunk_size=None, label_cost_xx=None, label_cost_yy=None,
               vmap_size=1, memory_budget=None, mesh=None, sharded="x"):
    # Structural normalisation only (JAX calls this when rebuilding the pytree); values are
    # checked by `validate` at the public entry points.
    for name, value in (("x", x), ("labels_x", labels_x), ("y", y), ("labels_y", labels_y),
                        ("label_cost", label_cost), ("cost_fn", _costs.as_cost(cost_fn)),
                        ("feature_weight", feature_weight), ("label_weight", label_weight),
                        ("chunk_size", chunk_size), ("label_cost_xx", label_cost_xx),
                        ("label_cost_yy", label_cost_yy), ("vmap_size", vmap_size),
                        ("memory_budget", memory_budget), ("mesh", mesh), ("sharded", sharded)):
      object.__setattr__(self, name, value)

  @property
  def shape(self) -> tuple[int, int]:
    return (self.x.shape[0], self.y.shape[0])

  @property
  def dtype(self):
    return self.x.dtype

  @property
  def row_data(self) -> tuple[Array, Array]:
    return (self.x, self.labels_x)

  @property
  def block_rows(self) -> int:
    return G.auto_block_rows(*self.shape, self.chunk_size, self.vmap_size)

  def block_cost(self, rows: tuple[Array, Array]) -> Array:
    """Costs of a block of source rows ``(x (B, d), labels (B,))`` against every target, ``(B, m)``."""
    x_block, labels_block = rows
    features = self.cost_fn.pairwise(x_block, self.y)
    classes = jnp.take(jnp.take(self.label_cost, labels_block, axis=0), self.labels_y, axis=1)
    return self.feature_weight * features + self.label_weight * classes

  def transpose(self) -> "LabelledPointCloud":
    return G.replace_fields(self, x=self.y, labels_x=self.labels_y, y=self.x, labels_y=self.labels_x,
                      label_cost=self.label_cost.T, cost_fn=_costs.transposed_cost(self.cost_fn),
                      label_cost_xx=self.label_cost_yy, label_cost_yy=self.label_cost_xx,
                      sharded=G.OTHER_SIDE[self.sharded])

  def split_fields(self) -> tuple[str, ...]:
    """The fields split over ``mesh``: one side's points and their labels."""
    return (self.sharded, f"labels_{self.sharded}")

  @property
  def prefers_dense(self) -> bool:
    """A stored entry is one read; an online one is a feature cost plus a read from ``W``, so a
    problem in the automatic mode is stored once per solve when it fits the memory budget."""
    return True

  def storage(self):
    """As :meth:`otkit.PointCloud.storage`."""
    return _budget.storage(self)

  @property
  def cost_matrix(self) -> Array:
    """The dense ``(n, m)`` augmented cost (for small problems and inspection)."""
    return self.block_cost(self.row_data)

  def validate(self) -> "LabelledPointCloud":
    """Checks the arrays eagerly; returns the geometry in one floating dtype."""
    return validate(self)

  def self_pairs(self) -> tuple["LabelledPointCloud", "LabelledPointCloud"]:
    """The geometries of the source with itself and of the target with itself (they need
    ``label_cost_xx`` and ``label_cost_yy``)."""
    if self.label_cost_xx is None or self.label_cost_yy is None:
      raise ValueError("This LabelledPointCloud has no within-dataset class costs: pass "
                       "`label_cost_xx` (k_x, k_x) and `label_cost_yy` (k_y, k_y) to build its "
                       "self-pairs.")
    xx = G.replace_fields(self, y=self.x, labels_y=self.labels_x, label_cost=self.label_cost_xx,
                          label_cost_yy=self.label_cost_xx)
    yy = G.replace_fields(self, x=self.y, labels_x=self.labels_y, label_cost=self.label_cost_yy,
                          label_cost_xx=self.label_cost_yy)
    return G.checked_pairs(xx, yy)


def check_labels(name: str, labels: Any, n: int, num_classes: int | None = None) -> Array:
  """Validates integer class indices of shape ``(n,)`` (in ``[0, num_classes)`` when given)."""
  if labels is None:
    raise ValueError(f"`{name}` is required, got None.")
  if num_classes is not None:
    V.check_static_int("num_classes", num_classes)
  # Concrete labels stay NumPy (so that they stay concrete inside a caller's jit).
  arr = labels if isinstance(labels, jax.core.Tracer) else np.asarray(labels)
  if not jnp.issubdtype(arr.dtype, jnp.integer):
    raise ValueError(f"`{name}` must hold integer class labels; got dtype {arr.dtype}. "
                     f"Convert them, e.g. `{name}.astype(int)`.")
  if arr.shape != (n,):
    raise ValueError(f"`{name}` must have shape ({n},), one label per point; got shape {arr.shape}.")
  if num_classes is not None and V.is_concrete(arr) and n:
    values = np.asarray(arr)
    if values.min() < 0 or values.max() >= num_classes:
      raise ValueError(f"`{name}` must lie in [0, {num_classes}); got values in "
                       f"[{values.min()}, {values.max()}].")
  return arr


def validate(geom: LabelledPointCloud) -> LabelledPointCloud:
  """Checks a :class:`LabelledPointCloud` eagerly; returns it with one floating dtype."""
  x = V.check_points("x", geom.x)
  y = V.check_points("y", geom.y)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"`x` and `y` must have the same dimension d; got x {x.shape} and y {y.shape}.")
  dtype = V.common_dtype(x, y)
  cost = V.as_float_array("label_cost", geom.label_cost, dtype)
  if cost.ndim != 2 or 0 in cost.shape:
    raise ValueError(f"`label_cost` must be a non-empty (k_x, k_y) matrix; got shape {cost.shape}.")
  V.check_finite("label_cost", cost)
  labels_x = check_labels("labels_x", geom.labels_x, x.shape[0], cost.shape[0])
  labels_y = check_labels("labels_y", geom.labels_y, y.shape[0], cost.shape[1])
  if not _costs.is_cost(geom.cost_fn):
    raise ValueError(f"`cost_fn` must be an otkit cost or a callable c(x, y); got {geom.cost_fn!r}.")
  _costs.check_cost(geom.cost_fn, x, y)
  weights = {}
  for name in ("feature_weight", "label_weight"):
    w = V.as_float_array(name, getattr(geom, name), dtype)
    if w.ndim != 0:
      raise ValueError(f"`{name}` must be a scalar; got shape {w.shape}.")
    if V.is_concrete(w) and not (np.isfinite(float(w)) and float(w) >= 0):
      raise ValueError(f"`{name}` must be a finite number >= 0; got {float(w)!r}.")
    weights[name] = w
  G.check_blocking(geom)
  within = {}
  for name, k in (("label_cost_xx", cost.shape[0]), ("label_cost_yy", cost.shape[1])):
    table = getattr(geom, name)
    if table is not None:
      table = V.as_float_array(name, table, dtype)
      if table.shape != (k, k):
        raise ValueError(f"`{name}` must have shape ({k}, {k}) to match `label_cost`; got "
                         f"{table.shape}.")
      V.check_finite(name, table)
    within[name] = table
  geom = G.replace_fields(geom, x=x.astype(dtype), y=y.astype(dtype), labels_x=labels_x,
                          labels_y=labels_y, label_cost=cost, **weights, **within,
                          vmap_size=G.checked_vmap_size(geom.vmap_size, x, y))
  G.check_mesh(geom)
  return geom
