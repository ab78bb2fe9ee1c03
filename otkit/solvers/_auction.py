"""Exact assignment on the host: an ε-scaling auction, then shortest augmenting paths.

The host path of :func:`otkit.assignment` receives each problem reduced by its warm start,
``R = C − f ⊕ g ≥ 0`` with a zero in every column (or, for ``‖x − y‖²``, the points and ``f``, from
which :func:`solve_points` makes the same matrix). SciPy's solver runs one shortest augmenting
path search per row from there; when the warm start is only roughly right (the Gaussian fit of
two multimodal batches), many of those searches cross most of the matrix. This module first
moves the column prices with a forward auction (Bertsekas): each free row bids for its best
column, raising that column's price by its margin over the second best plus ``ε``, in phases of
decreasing ``ε`` (``ε``-scaling). Bids are ``O(n)`` each and settle the coarse structure
(which cluster goes where) much faster than augmenting paths. The auction's prices are then
made feasible by c-transforms and the assignment finished by Jonker–Volgenant shortest
augmenting paths (Dijkstra on the reduced costs), which is exact whatever the prices: the result
is an optimal permutation, not an ``ε``-optimal one. Problems that do not leave the auction in a
few dozen bids per row (many ties, for example) go to the exact phase as they stand.

Compiled with Numba when it is installed (``pip install "otkit[fast]"``); :func:`available` says
whether it is. The functions release the GIL, so the host pool's threads solve problems side by
side.

References:
  Bertsekas, "The auction algorithm: a distributed relaxation method for the assignment
  problem", Ann. Oper. Res. 1988.
  Bertsekas, Castañon, "Parallel synchronous and asynchronous implementations of the auction
  algorithm", Parallel Comput. 1991 (``ε``-scaling).
  Jonker, Volgenant, "A shortest augmenting path algorithm for dense and sparse linear
  assignment problems", Computing 1987.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np

# First auction ``ε`` as a fraction of the mean reduced cost, its decrease per phase, the last
# ``ε`` as a fraction of the first, and the bids per row after which the auction stops.
FIRST_EPSILON = 1.0 / 32.0
EPSILON_FACTOR = 5.0
LAST_EPSILON = 1e-3
MAX_BIDS_PER_ROW = 64


class _Kernels(NamedTuple):
  reduce: Callable
  reduce_points: Callable
  auction: Callable
  feasible: Callable
  augment: Callable


@functools.cache
def _compiled() -> _Kernels | None:
  """The compiled kernels (``None`` without Numba)."""
  try:
    import numba
  except ImportError:
    return None
  jit = numba.njit(cache=True, nogil=True)
  # Finite inputs only (checked before the call): free to vectorise and reassociate.
  fast = numba.njit(cache=True, nogil=True, fastmath=True)
  return _Kernels(jit(_reduce), fast(_reduce_points), jit(_auction), fast(_feasible),
                  jit(_augment))


def available() -> bool:
  """Whether the compiled solver can be used (Numba is installed)."""
  return _compiled() is not None


def solve(cost: np.ndarray, f: np.ndarray, g: np.ndarray) -> np.ndarray | None:
  """The optimal permutation of ``cost (n, n)`` (row ``i`` gets column ``perm[i]``), solved on
  ``C − f ⊕ g`` in float64 (``f, g (n,)``: the warm start's potentials; any shifts give the same
  permutations); ``None`` if an entry is not finite. Needs :func:`available`.

  Example:
    >>> import numpy as np
    >>> from otkit.solvers import _auction
    >>> cost = np.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
    >>> zero = np.zeros(3)
    >>> _auction.solve(cost, zero, zero).tolist()
    [1, 0, 2]
  """
  n = cost.shape[0]
  reduced = np.empty((n, n))
  spread = _compiled().reduce(_compiled_dtype(cost), np.asarray(f, np.float64),
                              np.asarray(g, np.float64), reduced)
  return _finish(reduced, spread)


def _compiled_dtype(a: np.ndarray) -> np.ndarray:
  """``a`` contiguous, in float32 or float64 (half precisions are widened)."""
  return np.ascontiguousarray(a, a.dtype if a.dtype in (np.float32, np.float64) else np.float64)


def solve_points(x: np.ndarray, y: np.ndarray, f: np.ndarray):
  """The optimal permutation of ``C_ij = ‖x_i − y_j‖²`` for ``x, y (n, d)``, the cost computed
  in float64 here (no matrix crosses from the device), reduced by the row potentials
  ``f (n,)`` and their c-transform ``g_j = min_i (C_ij − f_i)``. Returns ``(perm, g)``, or
  ``None`` if an entry is not finite. Needs :func:`available`.

  Example:
    >>> import numpy as np
    >>> from otkit.solvers import _auction
    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> perm, g = _auction.solve_points(x, x[::-1], np.zeros(3))
    >>> perm.tolist(), g.tolist()
    ([2, 1, 0], [0.0, 0.0, 0.0])
  """
  x, y, f = _compiled_dtype(x), _compiled_dtype(y), np.asarray(f, np.float64)
  # Finite costs (the kernel assumes them): coordinates and potentials far from overflow.
  bounded = lambda a: a.size == 0 or float(np.max(np.abs(a))) < 1e150  # noqa: E731
  if not (bounded(x) and bounded(y) and bounded(f)):  # NaN fails the comparison too
    return None
  n = x.shape[0]
  shifted, g = np.empty((n, n)), np.empty(n)
  spread = _compiled().reduce_points(x, y, f, shifted, g)
  perm = _finish(shifted, spread, g.copy())
  return None if perm is None else (perm, g)


def _finish(cost: np.ndarray, spread: float, v: np.ndarray | None = None) -> np.ndarray | None:
  """The auction and the exact phase on ``cost`` from column potentials ``v`` (default 0) with
  which every column has a zero reduced cost, the reduced costs' mean exceeding their smallest by
  ``spread`` (the scale of the first ``ε``); ``None`` if ``spread`` is not finite with room to
  spare (costs near the float64 range go to SciPy)."""
  if not np.isfinite(spread * 4 * cost.shape[0]):
    return None
  kernels = _compiled()
  n = cost.shape[0]
  v = np.zeros(n) if v is None else v
  if n > 1 and spread > 0.0:
    first = FIRST_EPSILON * spread
    kernels.auction(cost, v, first, first * LAST_EPSILON, MAX_BIDS_PER_ROW * n)
  u = np.empty(n)
  kernels.feasible(cost, v, u)
  return kernels.augment(cost, u, v)


def _reduce(cost, f, g, out):
  """``out = cost − f ⊕ g`` in float64, in one pass; returns its mean less its minimum (not
  finite if an entry is not)."""
  n = cost.shape[0]
  total, low = 0.0, np.inf
  for i in range(n):
    for j in range(n):
      out[i, j] = np.float64(cost[i, j]) - f[i] - g[j]
      total += out[i, j]
      low = min(low, out[i, j])
  return total / (n * n) - low


def _reduce_points(x, y, f, out, g):
  """``out = C − f`` for ``C_ij = ‖x_i − y_j‖²`` (float64, finite inputs) and its column minima
  ``g`` (written to ``g``); returns the mean of the reduced costs ``out − g``, whose minimum is
  0. Loops over columns, so the compiler vectorises them."""
  n, d = x.shape
  y_t = np.empty((d, n))
  for k in range(d):
    for j in range(n):
      y_t[k, j] = y[j, k]
  g[:] = 1e308
  total = 0.0
  for i in range(n):
    for j in range(n):
      out[i, j] = -f[i]
    for k in range(d):
      x_ik = np.float64(x[i, k])
      for j in range(n):
        diff = x_ik - y_t[k, j]
        out[i, j] += diff * diff
    for j in range(n):
      total += out[i, j]
      g[j] = min(g[j], out[i, j])
  return total / (n * n) - np.sum(g) / n


def _auction(cost, v, epsilon, last_epsilon, max_bids):
  """Forward Gauss–Seidel auction with ``ε``-scaling on ``min Σ cost[i, σ(i)]``: ``v`` are the
  column potentials (minus the prices), updated in place. Returns the number of bids."""
  n = cost.shape[0]
  owner = np.empty(n, np.int64)
  free = np.empty(n, np.int64)
  bids = 0
  while True:
    owner[:] = -1
    for k in range(n):
      free[k] = n - 1 - k
    n_free = n
    while n_free > 0:
      if bids >= max_bids:
        return bids
      n_free -= 1
      i = free[n_free]
      bids += 1
      best, second, j_best = np.inf, np.inf, 0
      for j in range(n):
        h = cost[i, j] - v[j]
        if h < second:
          if h < best:
            second, best, j_best = best, h, j
          else:
            second = h
      v[j_best] -= second - best + epsilon
      previous = owner[j_best]
      owner[j_best] = i
      if previous >= 0:
        free[n_free] = previous
        n_free += 1
    if epsilon <= last_epsilon:
      return bids
    epsilon = max(epsilon / EPSILON_FACTOR, last_epsilon)


def _feasible(cost, v, u):
  """c-transforms of the column potentials ``v``: ``u_i = min_j (cost_ij − v_j)``, then
  ``v_j = min_i (cost_ij − u_i)`` (in place): feasible potentials with a tight pair in every row
  and column."""
  n = cost.shape[0]
  for i in range(n):
    low = 1e308
    for j in range(n):
      low = min(low, cost[i, j] - v[j])
    u[i] = low
  v[:] = 1e308
  for i in range(n):
    for j in range(n):
      v[j] = min(v[j], cost[i, j] - u[i])


def _augment(cost, u, v):
  """Exact assignment from feasible potentials ``(u, v)`` (:func:`_feasible`): free rows take a
  free tight column where they can, and each remaining row is matched by a shortest augmenting
  path (Dijkstra on ``cost − u ⊕ v ≥ 0``) followed by the potential update that keeps
  feasibility."""
  n = cost.shape[0]
  col = np.full(n, -1, np.int64)  # column of each row
  row = np.full(n, -1, np.int64)  # row of each column
  for i in range(n):
    for j in range(n):
      if row[j] < 0 and cost[i, j] - v[j] - u[i] <= 0.0:
        col[i], row[j] = j, i
        break
  dist = np.empty(n)
  pred = np.empty(n, np.int64)
  done = np.empty(n, np.bool_)
  order = np.empty(n, np.int64)  # columns in the order they were reached
  for start in range(n):
    if col[start] >= 0:
      continue
    dist[:] = np.inf
    done[:] = False
    i, reached, mu, end = start, 0, 0.0, -1
    while end < 0:
      best, j_best = np.inf, -1
      for j in range(n):
        if done[j]:
          continue
        d = mu + (cost[i, j] - v[j] - u[i])
        if d < dist[j]:
          dist[j], pred[j] = d, i
        if dist[j] < best or (dist[j] == best and row[j] < 0):
          best, j_best = dist[j], j
      mu = best
      done[j_best] = True
      order[reached] = j_best
      reached += 1
      if row[j_best] < 0:
        end = j_best
      else:
        i = row[j_best]
    u[start] += mu
    for k in range(reached - 1):  # every reached column but the last, and its row
      j = order[k]
      u[row[j]] += mu - dist[j]
      v[j] -= mu - dist[j]
    j = end
    while True:  # flip the path
      i = pred[j]
      row[j] = i
      col[i], j = j, col[i]
      if i == start:
        break
  return col
