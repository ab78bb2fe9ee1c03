"""The memory budget: how much memory a solver may spend on storing a cost matrix.

In the automatic mode (``chunk_size=None``) a geometry whose entries cost more to evaluate than to
read back (``prefers_dense``: high-dimensional points, labelled points, costs evaluated pair by
pair) is stored once per solve when its matrix fits the budget; otherwise it stays online at
O(n + m) memory. The decision is static: it is taken when a solve is traced, from the shapes, the
dtype, the size of the surrounding ``vmap`` and the budget then in force. The budget is the
geometry's ``memory_budget`` if set, else the global one (:func:`set_memory_budget`), else a
quarter of the device's available memory, at most 2 GiB.

A stored problem holds the matrix and the transposed copy that the column half-steps read, so it
counts ``2 · n · m · itemsize`` bytes per problem of the batch.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from otkit import _validation as V

# The default budget: this fraction of the available memory, at most _DEFAULT_CAP bytes.
_AVAILABLE_FRACTION = 0.25
_DEFAULT_CAP = 2 << 30
_setting: list[int | None] = [None]


class Storage(NamedTuple):
  """How the solvers hold a geometry's costs (see :meth:`otkit.PointCloud.storage`).

  Attributes:
    stored: whether the solvers store the cost matrix (``False``: evaluated online).
    nbytes: the bytes the stored matrix and its transposed copy take (all batched problems).
    budget: the budget in bytes that the decision was taken against.
  """

  stored: bool
  nbytes: int
  budget: int


def set_memory_budget(nbytes: int | None) -> int | None:
  """Sets the global memory budget for stored cost matrices; returns the previous setting.

  It is read when a solve is traced: a function already compiled keeps its decision.

  Args:
    nbytes: bytes, ``>= 0`` (``0`` keeps every point cloud online), or ``None`` for the default
      (a quarter of the device's available memory, at most 2 GiB).

  Example:
    >>> import otkit
    >>> previous = otkit.set_memory_budget(1 << 30)
    >>> otkit.memory_budget()
    1073741824
    >>> _ = otkit.set_memory_budget(previous)
  """
  if nbytes is not None:
    nbytes = V.check_static_int("nbytes", nbytes, minimum=0)
  previous, _setting[0] = _setting[0], nbytes
  return previous


def memory_budget() -> int:
  """The global memory budget in bytes (:func:`set_memory_budget`, or the default)."""
  if _setting[0] is not None:
    return _setting[0]
  return int(min(_DEFAULT_CAP, _AVAILABLE_FRACTION * available_memory(jax.default_backend())))


@functools.cache
def available_memory(backend: str) -> int:
  """Bytes available on the default device of ``backend``, read once per process: free device
  memory on accelerators, ``MemAvailable`` on CPU (0 when unknown, which keeps geometries
  online)."""
  if backend != "cpu":
    stats = jax.devices(backend)[0].memory_stats() or {}
    return max(0, int(stats.get("bytes_limit", 0)) - int(stats.get("bytes_in_use", 0)))
  try:
    with open("/proc/meminfo") as meminfo:
      for line in meminfo:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:  # pragma: no cover - not Linux
    pass
  try:  # pragma: no cover
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (AttributeError, ValueError, OSError):  # pragma: no cover
    return 0


def budget_for(geom) -> int:
  """The budget in bytes that governs ``geom``: its own ``memory_budget`` if it has one set,
  else the global one (:func:`memory_budget`)."""
  own = getattr(geom, "memory_budget", None)
  return memory_budget() if own is None else own


def storage(geom) -> Storage:
  """The storage decision for ``geom``, a point geometry (``shape``, ``dtype``, ``chunk_size``,
  ``vmap_size``, ``memory_budget``, ``mesh`` and ``prefers_dense``: whether its entries cost more
  to evaluate than to read)."""
  n, m = geom.shape
  nbytes = 2 * n * m * jnp.dtype(geom.dtype).itemsize * geom.vmap_size
  budget = budget_for(geom)
  stored = (geom.chunk_size is None and geom.mesh is None and geom.prefers_dense
            and nbytes <= budget)
  return Storage(bool(stored), int(nbytes), int(budget))
