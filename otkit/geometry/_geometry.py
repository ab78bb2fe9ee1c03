"""Geometries: where the cost between two measures comes from.

Two final dataclasses share one small protocol (``shape``, ``row_data``, ``block_cost``,
``transpose``, ``block_rows``), which is all the reductions in :mod:`._reductions` need:

* :class:`PointCloud` computes costs from points on the fly, one block of rows at a time, and
  never holds the n×m matrix ("online" geometry): memory is O((n + m)·d + block·m).
* :class:`CostMatrix` wraps a dense, user-given ``(n, m)`` cost matrix.

In the automatic mode (``chunk_size=None``) the solvers call :func:`materialize`, which stores a
problem's cost matrix once per solve when evaluating an entry costs more than reading it back
(high-dimensional points, costs evaluated pair by pair) and the matrix fits the memory budget
(:mod:`._budget`); otherwise it stays online. ``geom.storage()`` tells which.

Epsilon is deliberately *not* part of a geometry: it is an argument of the solvers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from otkit import _sharding, _validation as V
from otkit.geometry import _budget, _costs
from otkit.geometry._blocks import map_row_blocks

Array = jax.Array

# Elements of one cost block (rows × columns) that the online reductions hold at once.
# About 8 MB of float32 on CPU (fits the last-level cache); larger blocks suit accelerators.
_CPU_BLOCK_ELEMENTS = 1 << 21
_ACCELERATOR_BLOCK_ELEMENTS = 1 << 26
# Problems of at least this many cost entries are solved one after another under vmap on CPU.
_ALONE_MIN_ELEMENTS = _CPU_BLOCK_ELEMENTS
_SAME = object()  # default of PointCloud's `y`: the same points as `x`
OTHER_SIDE = {"x": "y", "y": "x"}
try:  # see `batch_size`
  from jax._src.interpreters.batching import BatchTracer as _BatchTracer
except ImportError:  # pragma: no cover
  _BatchTracer = None
# A stored matrix of at most this many entries (128 MB of float32) is reduced in one pass.
_ONE_PASS_MAX_ELEMENTS = 1 << 25
# `materialize` stores points of at least this dimension, where a d-term cost loses to a read.
_DENSE_MIN_DIM = 16


def auto_block_rows(n: int, m: int, chunk_size: int | None, batch: int = 1) -> int:
  """Rows per block of the online reductions: ``chunk_size``, or about ``_*_BLOCK_ELEMENTS``
  cost entries. Under ``vmap`` a block holds that many entries for each of the ``batch``
  problems, so the automatic size shrinks with the batch, down to a block of all the problems
  about twice the single one (measured on CPU, 4 batched problems of 4 000 points swept together:
  about 4× one instead of 6×, 16 about 16.5× instead of 60×; such large problems are now solved
  one after another instead, :func:`fills_blocks`)."""
  if chunk_size is not None:
    return max(1, min(int(chunk_size), n))
  budget = _CPU_BLOCK_ELEMENTS if jax.default_backend() == "cpu" else _ACCELERATOR_BLOCK_ELEMENTS
  budget = min(budget, 2 * budget // max(batch, 1))
  return max(1, min(n, budget // max(m, 1)))


def fills_blocks(geom) -> bool:
  """Whether one problem on ``geom`` alone fills the online reductions' blocks on this backend
  (a CPU, ``n·m`` at least a block): a ``vmap`` of such problems is then no faster than solving
  them one after another (:func:`otkit._batching.one_at_a_time`)."""
  n, m = geom.shape
  return jax.default_backend() == "cpu" and n * m >= _ALONE_MIN_ELEMENTS


def one_problem(geom):
  """``geom`` with ``vmap_size`` 1: its blocks and storage sized for a problem solved alone."""
  return replace_fields(geom, vmap_size=1) if getattr(geom, "vmap_size", 1) != 1 else geom


def checked_vmap_size(vmap_size, *arrays) -> int:
  """A geometry's validated ``vmap_size``: the given one, or the size of the ``vmap`` that its
  arrays are batched in, if larger."""
  return max(V.check_static_int("vmap_size", vmap_size), batch_size(*arrays))


def batch_size(*arrays) -> int:
  """How many problems the ``vmap`` transformations around this trace batch together (their
  sizes multiplied; 1 outside ``vmap``), read from the first of ``arrays`` that is batched.

  Blocking is a static choice made while tracing, and JAX has no public query for the size of
  the batch being traced, so this walks its tracers; if their layout ever changes, it answers 1
  (the unbatched block), which is correct, only slower under ``vmap``. Inside control flow and
  custom derivatives, traced per problem, it answers 1 too: geometries record the size when
  they are validated, at the entry points (``vmap_size``).
  """
  for x in arrays:
    size = 1
    while isinstance(x, jax.core.Tracer):
      if _BatchTracer is not None and isinstance(x, _BatchTracer):
        dim = getattr(x, "batch_dim", None)
        x = getattr(x, "val", None)
        if isinstance(dim, int) and x is not None:
          size *= int(x.shape[dim])
      else:  # differentiation tracers carry the (possibly batched) primal
        x = getattr(x, "primal", None)
    if size > 1:
      return size
  return 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PointCloud:
  """Two point clouds and a ground cost, evaluated online (no n×m matrix is stored).

  Args:
    x: source points, shape ``(n, d)``.
    y: target points, shape ``(m, d)``; defaults to ``x``.
    cost_fn: an otkit cost (default :class:`SqEuclidean`, ``‖x − y‖²``) or any callable
      ``c(x_i, y_j) -> scalar`` on points of shape ``(d,)``.
    chunk_size: rows per block in the online reductions (static). ``None`` picks a block of
      about 2²¹ cost entries on CPU (2²⁶ on accelerators), and lets the solvers store the cost
      matrix when that is faster (``d ≥ 16`` or a cost evaluated pair by pair) and it fits the
      memory budget (see :meth:`storage`). Set it to stay online whatever the size.
    vmap_size: static; how many problems a ``vmap`` batches this geometry in. The automatic
      block shrinks with it (see :func:`auto_block_rows`). Validation sets it when the geometry
      reaches an otkit function under ``vmap``; there is no need to set it by hand.
    memory_budget: static; bytes the solvers may spend on storing this geometry's cost matrix
      (with its transposed copy, for every problem of a batch). ``None`` takes the global budget
      (:func:`otkit.set_memory_budget`; by default a quarter of the available memory, at most
      2 GiB).
    mesh: static; a ``jax.sharding.Mesh`` to split the points of one side over (along all its
      axes), or ``None``. Each device reduces the blocks of its own rows; a reduction along the
      split side combines per-device partials with one collective over ``m`` (``n``) values, so
      a sweep communicates O(n + m) numbers. A split geometry stays online.
    sharded: static; which points are split over ``mesh``: ``"x"`` (default) or ``"y"``. Their
      number must be a multiple of ``mesh.size``.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> geom = otkit.PointCloud(jnp.zeros((3, 2)), jnp.ones((4, 2)))
    >>> geom.shape
    (3, 4)
    >>> float(geom.cost_matrix[0, 0])
    2.0
  """

  x: Array
  y: Array
  cost_fn: Any = dataclasses.field(default_factory=_costs.SqEuclidean)
  chunk_size: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  vmap_size: int = dataclasses.field(default=1, metadata=dict(static=True))
  memory_budget: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  mesh: Any = dataclasses.field(default=None, metadata=dict(static=True))
  sharded: str = dataclasses.field(default="x", metadata=dict(static=True))

  def __init__(self, x, y=_SAME, cost_fn=None, chunk_size=None, vmap_size=1, memory_budget=None,
               mesh=None, sharded="x"):
    # Structural normalisation only: JAX calls this constructor when it rebuilds the pytree,
    # so values are validated by `validate_geometry` at the public entry points instead.
    object.__setattr__(self, "x", x)
    object.__setattr__(self, "y", x if y is _SAME else y)
    object.__setattr__(self, "cost_fn", _costs.as_cost(cost_fn))
    object.__setattr__(self, "chunk_size", chunk_size)
    object.__setattr__(self, "vmap_size", vmap_size)
    object.__setattr__(self, "memory_budget", memory_budget)
    object.__setattr__(self, "mesh", mesh)
    object.__setattr__(self, "sharded", sharded)

  @property
  def shape(self) -> tuple[int, int]:
    return (self.x.shape[0], self.y.shape[0])

  @property
  def dtype(self):
    return self.x.dtype

  @property
  def row_data(self) -> Array:
    return self.x

  @property
  def block_rows(self) -> int:
    return auto_block_rows(*self.shape, self.chunk_size, self.vmap_size)

  def block_cost(self, x_block: Array) -> Array:
    """Costs of a block of source points against every target point, ``(B, m)``."""
    return self.cost_fn.pairwise(x_block, self.y)

  def transpose(self) -> "PointCloud":
    return replace_fields(self, x=self.y, y=self.x, cost_fn=_costs.transposed_cost(self.cost_fn),
                          sharded=OTHER_SIDE[self.sharded])

  def split_fields(self) -> tuple[str, ...]:
    """The fields split over ``mesh``."""
    return (self.sharded,)

  @property
  def prefers_dense(self) -> bool:
    """Whether reading a stored entry is cheaper than evaluating it (see :func:`materialize`)."""
    return (self.x.shape[1] >= _DENSE_MIN_DIM
            or isinstance(self.cost_fn, (_costs.PNorm, _costs.CustomCost)))

  def storage(self) -> _budget.Storage:
    """Whether the solvers store this geometry's cost matrix (``stored``), the bytes that takes
    and the budget it was weighed against; static, decided from shapes and options.

    Example:
      >>> import jax.numpy as jnp, otkit
      >>> otkit.PointCloud(jnp.zeros((1000, 64)), memory_budget=1 << 20).storage().stored
      False
    """
    return _budget.storage(self)

  @property
  def cost_matrix(self) -> Array:
    """The dense ``(n, m)`` cost matrix (for small problems and inspection)."""
    return self.cost_fn.pairwise(self.x, self.y)

  def validate(self) -> "PointCloud":
    """Checks the points and options eagerly; returns the geometry in one floating dtype."""
    x = V.check_points("x", self.x)
    y = V.check_points("y", self.y)
    if x.shape[1] != y.shape[1]:
      raise ValueError(f"`x` and `y` must have the same dimension d; got x {x.shape} and y {y.shape}.")
    dtype = V.common_dtype(x, y)
    if not _costs.is_cost(self.cost_fn):
      raise ValueError(f"`cost_fn` must be an otkit cost or a callable c(x, y); got {self.cost_fn!r}.")
    _costs.check_cost(self.cost_fn, x, y)
    check_blocking(self)
    x, y = x.astype(dtype), y.astype(dtype)
    _costs.check_cost_range(self.cost_fn, x, y)
    geom = replace_fields(self, x=x, y=y, vmap_size=checked_vmap_size(self.vmap_size, x, y))
    check_mesh(geom)
    return geom

  def self_pairs(self) -> tuple["PointCloud", "PointCloud"]:
    """The geometries of ``x`` with ``x`` and of ``y`` with ``y`` (same cost and blocking), for
    the self-terms of a Sinkhorn divergence."""
    return checked_pairs(replace_fields(self, y=self.x), replace_fields(self, x=self.y))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CostMatrix:
  """A dense, user-given cost matrix.

  Args:
    cost_matrix: shape ``(n, m)``, finite.
    chunk_size: rows per block in the reductions (static); ``None`` reduces a matrix of up to
      2²⁵ entries in one pass and larger ones in blocks.
    vmap_size: static; as for :class:`PointCloud`.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> geom = otkit.CostMatrix(jnp.array([[0.0, 1.0], [1.0, 0.0]]))
    >>> geom.shape
    (2, 2)
  """

  cost_matrix: Array
  chunk_size: int | None = dataclasses.field(default=None, metadata=dict(static=True))
  vmap_size: int = dataclasses.field(default=1, metadata=dict(static=True))

  @property
  def shape(self) -> tuple[int, int]:
    return tuple(self.cost_matrix.shape)

  @property
  def dtype(self):
    return self.cost_matrix.dtype

  @property
  def row_data(self) -> Array:
    return self.cost_matrix

  @property
  def block_rows(self) -> int:
    n, m = self.shape
    if self.chunk_size is None and n * m <= _ONE_PASS_MAX_ELEMENTS:
      return n
    return auto_block_rows(n, m, self.chunk_size, self.vmap_size)

  def block_cost(self, rows: Array) -> Array:
    return rows

  def transpose(self) -> "CostMatrix":
    return replace_fields(self, cost_matrix=self.cost_matrix.T)

  def validate(self) -> "CostMatrix":
    """Checks the matrix eagerly; returns the geometry with a floating matrix."""
    c = V.as_float_array("cost_matrix", self.cost_matrix)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
      raise ValueError(f"`cost_matrix` must be a non-empty 2-D array (n, m); got shape {c.shape}.")
    V.check_finite("cost_matrix", c)
    if self.chunk_size is not None:
      V.check_static_int("chunk_size", self.chunk_size)
    return replace_fields(self, cost_matrix=c, vmap_size=checked_vmap_size(self.vmap_size, c))

  def self_pairs(self):
    """A cost matrix between two measures says nothing of the costs within each of them."""
    raise ValueError("A CostMatrix has no self-pairs (costs x–x and y–y): give the divergence "
                     "point clouds, or its three geometries `geom_xy, geom_xx, geom_yy`.")


def materialize(geom):
  """The geometry a solver iterates with: ``geom``, or its stored costs (:class:`StoredCost`).

  A geometry whose ``storage()`` says ``stored`` (the automatic mode, ``prefers_dense``, within
  the memory budget) is evaluated once, with its transpose, so each Sinkhorn sweep reads costs
  instead of recomputing them (at n = 10 000, d = 64 a sweep is about 2.8× faster on CPU).
  Differentiable: gradients reach the points through the stored matrices.

  Args:
    geom: any geometry, shape ``(n, m)``.

  Returns:
    A geometry with the same costs.
  """
  if isinstance(geom, (CostMatrix, StoredCost)) or not geom.storage().stored:
    return geom
  # Two stacks of blocks of one shape would start from one shared buffer, copied for each: the
  # transpose is built in blocks of another size.
  cost, block = evaluate(geom)
  cost_t, _ = evaluate(geom.transpose(), avoid=block)
  return StoredCost(cost, cost_t, vmap_size=geom.vmap_size)


def evaluate(geom, avoid: int | None = None) -> tuple[Array, int]:
  """``geom``'s ``(n, m)`` cost matrix and the rows per block it was built in: blocks that
  divide the rows if there are such blocks (the stack of blocks is then the matrix itself, no
  second copy), other than ``avoid``."""
  n, block = geom.shape[0], geom.block_rows
  block = next((b for b in range(block, block // 2, -1) if n % b == 0 and b != avoid), block)
  return map_row_blocks(geom.block_cost, geom.row_data, block), block


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StoredCost:
  """A cost matrix stored by a solver (:func:`materialize`), with its transpose: both half-steps
  of a sweep read rows, and the transpose is evaluated from the points rather than copied from
  the matrix (a copy costs a third full-size buffer while it is made)."""

  cost_matrix: Array
  cost_matrix_t: Array
  vmap_size: int = dataclasses.field(default=1, metadata=dict(static=True))

  shape = CostMatrix.shape
  dtype = CostMatrix.dtype
  row_data = CostMatrix.row_data
  block_rows = CostMatrix.block_rows
  chunk_size = None

  def block_cost(self, rows: Array) -> Array:
    return rows

  def transpose(self) -> "StoredCost":
    return StoredCost(self.cost_matrix_t, self.cost_matrix, self.vmap_size)


def check_mesh(geom, name: str | None = None, note: str = "") -> None:
  """Checks ``mesh`` and ``sharded`` of a geometry (the split points are called ``name``, by
  default the split side)."""
  if _sharding.check_mesh(geom.mesh) is None:
    return
  V.check_choice("sharded", geom.sharded, tuple(OTHER_SIDE))
  size = dict(zip("xy", geom.shape))[geom.sharded]
  if size % geom.mesh.size:
    raise ValueError(f"`{name or geom.sharded}` has {size} points, which the mesh's "
                     f"{geom.mesh.size} devices cannot split evenly{note}: pad it (zero "
                     f"weights) to a multiple of {geom.mesh.size}, or split the other side "
                     f"(`sharded=`).")


def checked_pairs(xx, yy):
  """The self-pairs ``(xx, yy)`` of a geometry, checked to split evenly over its mesh (each
  splits one of the two point sets, the one its parent may not split)."""
  for name, geom in (("x", xx), ("y", yy)):
    check_mesh(geom, name=name, note=" (in its self-pair of a Sinkhorn divergence)")
  return xx, yy


def split_specs(geom):
  """``geom``'s pytree of partition specs over its mesh: the ``split_fields()`` along all the
  mesh's axes, everything else replicated."""
  spec = jax.sharding.PartitionSpec(geom.mesh.axis_names)
  specs = jax.tree.map(lambda _: jax.sharding.PartitionSpec(), geom)
  return replace_fields(specs, **{name: spec for name in geom.split_fields()})


def check_blocking(geom) -> None:
  """Checks the static options ``chunk_size`` and ``memory_budget`` of a geometry."""
  if geom.chunk_size is not None:
    V.check_static_int("chunk_size", geom.chunk_size)
  if geom.memory_budget is not None:
    V.check_static_int("memory_budget", geom.memory_budget, minimum=0)


def validate_geometry(geom):
  """Checks a geometry's arrays eagerly (``geom.validate()``), naming the argument if ``geom`` is
  not a geometry."""
  if not callable(getattr(geom, "validate", None)) or not hasattr(geom, "block_cost"):
    raise ValueError(f"`geom` must be an otkit.PointCloud, otkit.CostMatrix or "
                     f"otkit.LabelledPointCloud; got {type(geom).__name__}.")
  return geom.validate()


def fingerprint(geom) -> Array:
  """A cheap identity of a geometry: a weighted sum of a few entries of each of its arrays.

  Costs O(number of arrays); two geometries of the same shape with different data almost always
  differ in it (not when they differ only away from the sampled entries).
  """
  total = jnp.zeros((), jnp.float32)
  for k, leaf in enumerate(jax.tree.leaves(geom)):
    flat = jnp.ravel(jnp.asarray(leaf))
    if flat.size == 0 or not (jnp.issubdtype(flat.dtype, jnp.number) or flat.dtype == bool):
      continue
    picks = flat[jnp.asarray([0, flat.size // 3, flat.size // 2, flat.size - 1])]
    weights = jnp.asarray([1.0, 1.7, 2.3, 3.1], jnp.float32) * (k + 1)
    total = total + jnp.sum(weights * jnp.real(picks).astype(jnp.float32))
  return jax.lax.stop_gradient(total)


def replace_fields(geom, **changes):
  """``dataclasses.replace`` without re-running the validating ``__init__``."""
  new = object.__new__(type(geom))
  for field in dataclasses.fields(geom):
    object.__setattr__(new, field.name, changes.get(field.name, getattr(geom, field.name)))
  return new
