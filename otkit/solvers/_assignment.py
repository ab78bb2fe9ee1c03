"""Exact linear assignment: the shortest augmenting path (Hungarian) method with dual potentials.

For a square cost matrix ``C (n, n)`` the assignment problem is ``min_σ Σ_i C[i, σ(i)]`` over
permutations ``σ``; its LP dual is ``max Σ_i f_i + Σ_j g_j`` subject to ``f_i + g_j ≤ C_ij``.
The solver keeps feasible potentials and a partial matching on tight pairs (``f_i + g_j = C_ij``)
and grows it by one row per augmentation: a Dijkstra search over reduced costs
``C_ij − f_i − g_j ≥ 0`` from a free row to the nearest free column, a potential update that keeps
feasibility and makes the path tight, and the flip of the path. After the last augmentation the
matching is perfect and every matched pair is tight, so primal and dual values coincide: the
matching is optimal (complementary slackness).

The search is written for one problem as a flat ``lax.while_loop`` state machine (one column
scan or one path flip per step, static shapes), batched with ``vmap``; leading batch axes are
solved in chunks (``lax.map`` of a ``vmap``), so a batch of problems runs as one XLA loop.

Host path (``method="host"``, the default on CPU): the same problems solved by compiled code on the
host through one ``jax.pure_callback`` per chunk of a batch, so it runs under ``jit`` and ``vmap``
on any backend. With Numba installed, otkit's own solver (:mod:`otkit.solvers._auction`: an
``ε``-scaling auction, then exact shortest augmenting paths); otherwise, and for problems with
``+inf`` or NaN entries, SciPy's ``linear_sum_assignment`` (Crouse's shortest augmenting path
method, exact, in C++). On CPU the in-graph search pays a handful of small XLA kernels for each of
its hundreds of sequential steps per problem (and a batch runs as many steps as its slowest
problem); the compiled loops do the same work several times faster (``benchmarks/minibatch.py``).
The host receives each problem reduced by the warm start and its c-transform (``C_ij − init_i −
g_j`` with ``g_j = min_i (C_ij − init_i)``, in float64: the optimal permutations are unchanged, and
good potentials shorten the host's searches as they shorten ours) and returns only the permutation;
for ``‖x_i − y_j‖²`` it can receive the points instead and make the costs itself
(:func:`solve_host_points`). The dual potentials are then recovered in JAX by Bellman–Ford sweeps on
the optimal matching (``g_j ≤ g_σ(i) + C_ij − C_iσ(i)``, from the warm start's ``g``; each sweep one
``(n, n)`` min-plus product, typically 10–30 of them), so both paths return the same fields.

Warm start: any row potentials ``init`` are made feasible by c-transforms
(``g = min_i (C_ij − init_i)``, ``f = min_j (C_ij − g_j)``, ``g = min_i (C_ij − f_i)``) and
every column is matched to a tight row where that row is still free. Good potentials (for
example those of the Gaussian approximation of two point clouds, see
:mod:`otkit.estimators._minibatch`) shorten the searches several-fold; they never change the
result.

References:
  Kuhn, "The Hungarian method for the assignment problem", Naval Res. Logist. Q. 1955.
  Jonker, Volgenant, "A shortest augmenting path algorithm for dense and sparse linear
  assignment problems", Computing 1987.
  Crouse, "On implementing 2D rectangular assignment algorithms", IEEE Trans. Aerosp. Electron.
  Syst. 2016 (the variant of ``scipy.optimize.linear_sum_assignment``).
  Bellman, "On a routing problem", Q. Appl. Math. 1958 (the dual recovery).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _host
from otkit import _validation as V
from otkit.solvers import _auction
from otkit.solvers._output import Result, result_code

Array = jax.Array

METHODS = ("auto", "jax", "host")
SEARCH, AUGMENT, DONE, FAILED = 0, 1, 2, 3
# Problems per chunk of a batch: about this many cost entries at once (cache-sized chunks keep
# the row gathers of the search cheap on CPU; the host path prefers few large callbacks), but
# never fewer than MIN_CHUNK problems.
CHUNK_ELEMENTS = {"jax": 1 << 19, "host": 1 << 22}
MIN_CHUNK = 8
# Host path: batches with at least this many cost entries (and at least PARALLEL_MIN_PROBLEMS
# problems per thread) are split between threads.
_PARALLEL_MIN_SIZE = 1 << 16
PARALLEL_MIN_PROBLEMS = 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AssignmentOutput:
  """Result of :func:`assignment` (a pytree; leading batch axes as in the input).

  Attributes:
    perm: ``(..., n)`` int32, the column assigned to each row (a permutation).
    cost: ``(...)``, ``Σ_i C[i, perm[i]]``. Differentiable in ``C`` (its gradient is the
      permutation matrix, by Danskin's theorem).
    f, g: ``(..., n)`` row and column potentials with ``f_i + g_j ≤ C_ij`` and equality on the
      matching (up to rounding); ``Σ f + Σ g = cost`` at the optimum.
    gap: ``(...)``, a certificate: ``cost − OPT ≤ gap``, computed as
      ``cost − Σf − Σg + n · max(0, max_ij (f_i + g_j − C_ij))`` (weak duality). It is 0 for
      integer costs and a few rounding errors of ``n · max|C|`` for real costs.
    result: ``(...)`` int32 :class:`otkit.Result` code: ``CONVERGED`` when the search ended with
      a perfect matching on finite costs (certified by a finite ``gap``); ``NON_FINITE`` when
      no finite assignment was found (NaN costs, or every completion needs a forbidden
      ``+inf`` pair); ``MAX_ITERS`` if the in-graph search hit its step cap (which an exact
      search on valid input never does).
    n_iters: ``(...)`` int32, steps of the in-graph search loop (column scans plus path flips);
      on the host path, the Bellman–Ford sweeps of the dual recovery.
  """

  perm: Array
  cost: Array
  f: Array
  g: Array
  gap: Array
  result: Array
  n_iters: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``: an optimal assignment was found."""
    return self.result == Result.CONVERGED


class SearchState(NamedTuple):
  """Loop state of one problem. Rows and columns of the current search tree carry their
  shortest reduced distance from the ``source`` row (``row_dist``, ``dist``)."""

  f: Array  # (n,) row potentials
  g: Array  # (n,) column potentials
  col: Array  # (n,) int32: column matched to each row, -1 if free
  row: Array  # (n,) int32: row matched to each column, -1 if free
  dist: Array  # (n,) shortest reduced distance from the source to each column
  pred: Array  # (n,) int32: the row before each column on its shortest path
  scanned: Array  # (n,) bool: columns whose distance is final
  in_tree: Array  # (n,) bool: rows reached by the search
  row_dist: Array  # (n,) distance at which each row was reached
  queue: Array  # (n + 1,) int32: the rows left free by the warm start, then -1
  k: Array  # position in `queue` of the source row
  source: Array  # the free row being matched
  i: Array  # the row to scan next
  j: Array  # the last column scanned; during a flip, the column to re-match
  radius: Array  # distance of the last scanned column
  phase: Array  # SEARCH, AUGMENT, DONE or FAILED
  n_iters: Array


# ---------------------------------------------------------------------------------------------
# Kernel (one problem; batch with vmap)


def _c_transforms(cost: Array, init: Array) -> tuple[Array, Array]:
  """Feasible potentials from row potentials ``init``: three c-transforms, the last one making
  every column tight with at least one row in floating point."""
  g = jnp.min(cost - init[:, None], axis=0)
  f = jnp.min(cost - g[None, :], axis=1)
  return f, jnp.min(cost - f[:, None], axis=0)


def _tight_matching(cost: Array, f: Array) -> tuple[Array, Array]:
  """Each row takes the first column for which it is the tight (arg-min) row."""
  n = cost.shape[0]
  idx = jnp.arange(n, dtype=jnp.int32)
  tight_row = jnp.argmin(cost - f[:, None], axis=0).astype(jnp.int32)
  first = jnp.full((n,), n, jnp.int32).at[tight_row].min(idx)
  col = jnp.where(first < n, first, -1)
  row = jnp.where(col[tight_row] == idx, tight_row, -1)
  return col, row


def _start_search(state: SearchState, k: Array) -> SearchState:
  """Resets the search tree at the ``k``-th free row (or ends the loop when none is left)."""
  n = state.f.shape[0]
  source = state.queue[k]
  return state._replace(
      dist=jnp.full((n,), jnp.inf, state.f.dtype), pred=jnp.zeros((n,), jnp.int32),
      scanned=jnp.zeros((n,), bool), in_tree=jnp.arange(n) == source,
      row_dist=jnp.zeros((n,), state.f.dtype), k=k, source=source, i=jnp.maximum(source, 0),
      radius=jnp.zeros((), state.f.dtype),
      phase=jnp.where(source < 0, DONE, SEARCH).astype(jnp.int32))


def initial_state(cost: Array, init: Array) -> SearchState:
  n = cost.shape[0]
  f, g = _c_transforms(cost, init)
  col, row = _tight_matching(cost, f)
  free = col < 0
  rank = jnp.cumsum(free) - 1
  queue = jnp.full((n + 1,), -1, jnp.int32).at[jnp.where(free, rank, n + 1)].set(
      jnp.arange(n, dtype=jnp.int32), mode="drop")
  zero = jnp.zeros((), jnp.int32)
  empty = jnp.zeros((n,), cost.dtype)
  state = SearchState(f=f, g=g, col=col, row=row, dist=empty, pred=col, scanned=free,
                      in_tree=free, row_dist=empty, queue=queue, k=zero, source=zero, i=zero,
                      j=zero, radius=jnp.zeros((), cost.dtype), phase=zero, n_iters=zero)
  return _start_search(state, zero)


def scan_step(cost, s: SearchState) -> SearchState:
  """Scans row ``s.i``: relaxes the distances of unscanned columns and settles the nearest one.

  If that column is free, the potentials move by the distances (rows and columns of the tree
  only), which keeps them feasible and makes the whole shortest path tight; the flips follow.
  ``cost`` is the ``(n, n)`` matrix or a function returning its row ``i``.
  """
  n = s.f.shape[0]
  row_i = cost(s.i) if callable(cost) else cost[s.i]
  reduced = s.radius + row_i - s.f[s.i] - s.g
  better = ~s.scanned & (reduced < s.dist)
  dist = jnp.where(better, reduced, s.dist)
  pred = jnp.where(better, s.i, s.pred)
  candidate = jnp.where(s.scanned, jnp.inf, dist)
  radius = jnp.min(candidate)
  # Among equally near columns take a free one: it ends the search.
  j = jnp.argmin(jnp.where(candidate == radius, (s.row >= 0).astype(jnp.int32), 2))
  j = j.astype(jnp.int32)
  owner = s.row[j]
  sink = owner < 0
  scanned = s.scanned.at[j].set(True)
  reached = jnp.where(sink, n, owner)  # out of range: no row joins the tree
  in_tree = s.in_tree.at[reached].set(True, mode="drop")
  row_dist = s.row_dist.at[reached].set(radius, mode="drop")
  f = jnp.where(sink, s.f + jnp.where(in_tree, radius - row_dist, 0.0), s.f)
  g = jnp.where(sink, s.g - jnp.where(scanned, radius - dist, 0.0), s.g)
  phase = jnp.where(jnp.isfinite(radius), jnp.where(sink, AUGMENT, SEARCH), FAILED)
  return s._replace(f=f, g=g, dist=dist, pred=pred, scanned=scanned, in_tree=in_tree,
                    row_dist=row_dist, i=jnp.maximum(owner, 0), j=j, radius=radius,
                    phase=phase.astype(jnp.int32))


def flip_step(s: SearchState) -> SearchState:
  """Re-matches column ``s.j`` to its predecessor row along the augmenting path."""
  i = s.pred[s.j]
  row = s.row.at[s.j].set(i)
  col = s.col.at[i].set(s.j)
  s = s._replace(row=row, col=col, j=s.col[i])
  return jax.lax.cond(i == s.source, lambda t: _start_search(t, t.k + 1), lambda t: t, s)


def _step(cost, s: SearchState) -> SearchState:
  new = jax.lax.cond(s.phase == SEARCH, functools.partial(scan_step, cost), flip_step, s)
  return new._replace(n_iters=s.n_iters + 1)


def max_steps(n: int) -> int:
  """At most ``n`` augmentations, each of at most ``n`` scans and ``n`` flips."""
  return 2 * n * n + 1


def _certify(cost: Array, perm: Array, f: Array, g: Array, found: Array, n_iters: Array,
             certify: bool = True, capped: Array | bool = False) -> AssignmentOutput:
  """The output for a permutation and feasible potentials: the cost (differentiable in
  ``cost``), the weak-duality certificate ``gap`` (``+inf`` if not ``certify``) and the result
  code (``capped``: the search stopped at its step cap)."""
  n = cost.shape[0]
  c = jax.lax.stop_gradient(cost)
  value = jnp.sum(jnp.take_along_axis(cost, perm[:, None], axis=1))
  converged = found & jnp.isfinite(value)
  if certify:
    slack = jnp.where(jnp.isfinite(c), f[:, None] + g[None, :] - c, -jnp.inf)
    excess = jnp.maximum(jnp.max(slack), 0.0)
    gap = jnp.maximum(jax.lax.stop_gradient(value) - jnp.sum(f) - jnp.sum(g), 0.0) + n * excess
    converged = converged & jnp.isfinite(gap)
  else:
    gap = jnp.full((), jnp.inf, value.dtype)
  result = result_code(converged, failed=~jnp.asarray(capped), stalled=jnp.asarray(False))
  return AssignmentOutput(perm=perm, cost=value, f=f, g=g, gap=gap, result=result,
                          n_iters=n_iters)


def solve_one(cost: Array, init: Array, row_fn=None) -> AssignmentOutput:
  """The exact assignment of one ``(n, n)`` problem (inputs validated; ``+inf`` forbids a pair).

  ``row_fn(i)``, if given, recomputes row ``i`` of ``cost`` (exactly the same values) inside the
  search, instead of gathering it from the matrix: cheaper when the cost comes from a few
  coordinates per point.
  """
  n = cost.shape[0]
  c = jax.lax.stop_gradient(cost)
  cap = max_steps(n)
  rows = c if row_fn is None else (lambda i: jax.lax.stop_gradient(row_fn(i)))
  state = jax.lax.while_loop(lambda s: (s.phase < DONE) & (s.n_iters < cap),
                             functools.partial(_step, rows), initial_state(c, init))
  perm = jnp.where(state.col >= 0, state.col, 0)
  found = (state.phase == DONE) & jnp.all(state.col >= 0)
  return _certify(cost, perm, state.f, state.g, found, state.n_iters, capped=state.phase < DONE)


# ---------------------------------------------------------------------------------------------
# Host path: compiled exact solvers through one callback per batch, duals recovered in JAX


def _solve_rows(costs: np.ndarray, fs: np.ndarray, gs: np.ndarray, perms: np.ndarray,
                solved: np.ndarray) -> None:
  """Fills ``perms`` and ``solved`` for problems ``costs (k, n, n)`` reduced by ``fs, gs``."""
  from scipy.optimize import linear_sum_assignment  # host only (SciPy comes with jax)

  compiled = _auction.available()
  for p in range(costs.shape[0]):
    perm = _auction.solve(costs[p], fs[p], gs[p]) if compiled else None
    if perm is not None:
      perms[p] = perm
      continue
    reduced = costs[p].astype(np.float64)
    reduced -= fs[p][:, None]
    reduced -= gs[p]
    try:
      perms[p] = linear_sum_assignment(reduced)[1]
    except ValueError:  # NaN entries, or no finite assignment: reported, never raised
      perms[p] = np.arange(costs.shape[1])
      solved[p] = False


def _host_permutations(cost: np.ndarray, f: np.ndarray, g: np.ndarray):
  """The host's exact solver (:mod:`otkit.solvers._auction`, or SciPy's
  ``linear_sum_assignment``) on each ``C − f − g`` (float64) of a batch ``(..., n, n)``; returns
  the permutations ``(..., n)`` int32 and whether each problem was solved ``(...)``.

  Both release the GIL while they solve, so a large batch is split between the threads of the
  shared host pool (:func:`otkit._host.for_row_blocks`).
  """
  cost = np.asarray(cost)
  n = cost.shape[-1]
  lead = cost.shape[:-2]
  costs = cost.reshape(-1, n, n)
  fs = np.asarray(f, np.float64).reshape(-1, n)
  gs = np.asarray(g, np.float64).reshape(-1, n)
  count = costs.shape[0]
  perms = np.empty((count, n), np.int32)
  solved = np.ones(count, bool)
  _host.for_row_blocks(lambda s: _solve_rows(costs[s], fs[s], gs[s], perms[s], solved[s]), count,
                       parallel=cost.size >= _PARALLEL_MIN_SIZE,
                       rows_per_thread=PARALLEL_MIN_PROBLEMS)
  return perms.reshape(*lead, n), solved.reshape(lead)


def host_permutation(cost: Array, f: Array, g: Array) -> tuple[Array, Array]:
  """:func:`_host_permutations` as a JAX operation: ``cost (..., n, n)``, shifts ``f, g
  (..., n)``; under ``vmap`` the whole batch goes to one callback."""
  out = (jax.ShapeDtypeStruct(cost.shape[:-1], jnp.int32),
         jax.ShapeDtypeStruct(cost.shape[:-2], jnp.bool_))
  return _host.callback(_host_permutations, out, cost, f, g, vmap_method="broadcast_all")


def _solve_point_rows(xs: np.ndarray, ys: np.ndarray, fs: np.ndarray, perms: np.ndarray,
                      gs: np.ndarray, solved: np.ndarray) -> None:
  """Fills ``perms``, ``gs`` and ``solved`` for the squared Euclidean problems between
  ``xs, ys (k, n, d)`` with warm starts ``fs (k, n)``."""
  compiled = _auction.available()
  for p in range(xs.shape[0]):
    out = _auction.solve_points(xs[p], ys[p], fs[p]) if compiled else None
    if out is not None:
      perms[p], gs[p] = out
      continue
    diff = xs[p].astype(np.float64)[:, None, :] - ys[p].astype(np.float64)[None, :, :]
    cost = np.sum(diff * diff, axis=-1)
    with np.errstate(invalid="ignore"):
      gs[p] = np.min(cost - fs[p][:, None], axis=0)
    _solve_rows(cost[None], fs[p:p + 1], gs[p:p + 1], perms[p:p + 1], solved[p:p + 1])


def _host_point_permutations(x: np.ndarray, y: np.ndarray, f: np.ndarray):
  """:func:`_host_permutations` for ``C_ij = ‖x_i − y_j‖²`` given the points ``x, y (..., n,
  d)`` and row potentials ``f (..., n)``: the costs are made on the host, in float64. Returns
  the permutations ``(..., n)`` int32, the column potentials ``g = min_i (C_ij − f_i)`` and
  whether each problem was solved."""
  x, y = np.asarray(x), np.asarray(y)
  n, d = x.shape[-2:]
  lead = x.shape[:-2]
  xs, ys = x.reshape(-1, n, d), y.reshape(-1, n, d)
  fs = np.asarray(f, np.float64).reshape(-1, n)
  count = xs.shape[0]
  perms = np.empty((count, n), np.int32)
  gs = np.empty((count, n))
  solved = np.ones(count, bool)
  _host.for_row_blocks(
      lambda s: _solve_point_rows(xs[s], ys[s], fs[s], perms[s], gs[s], solved[s]), count,
      parallel=count * n * n >= _PARALLEL_MIN_SIZE, rows_per_thread=PARALLEL_MIN_PROBLEMS)
  return (perms.reshape(*lead, n), gs.astype(f.dtype).reshape(*lead, n),
          solved.reshape(lead))


def solve_host_points(x: Array, y: Array, init: Array) -> AssignmentOutput:
  """The exact assignment for ``C_ij = ‖x_i − y_j‖²`` between ``x, y (n, d)``, on the host,
  without the ``(n, n)`` matrix on the device and without dual recovery (``duals=False`` of
  :func:`solve_host`: ``f`` is the warm start ``init``, ``g`` its c-transform, ``gap`` is
  ``+inf``). ``cost`` is differentiable in ``x`` and ``y``. Batch with ``vmap``."""
  n = x.shape[0]
  out = (jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((n,), init.dtype),
         jax.ShapeDtypeStruct((), jnp.bool_))
  perm, g, found = _host.callback(_host_point_permutations, out, x, y, init,
                                  vmap_method="broadcast_all")
  value = jnp.sum(jnp.square(x - y[perm]))
  converged = found & jnp.isfinite(value)
  result = result_code(converged, failed=jnp.asarray(True), stalled=jnp.asarray(False))
  return AssignmentOutput(perm=perm, cost=value, f=init, g=g,
                          gap=jnp.full((), jnp.inf, value.dtype), result=result,
                          n_iters=jnp.zeros((), jnp.int32))


def dual_potentials(cost: Array, perm: Array, g: Array) -> tuple[Array, Array, Array]:
  """Potentials certifying an optimal permutation of ``cost (n, n)``, by Bellman–Ford.

  Feasible tight potentials exist iff ``g_j ≤ g_σ(i) + C_ij − C_iσ(i)`` for all ``i, j`` (then
  ``f_i = C_iσ(i) − g_σ(i)``): shortest distances in the graph of the matching, which has no
  negative cycle when ``σ`` is optimal. Sweeps ``g ← min(g, min_i (g_σ(i) + C_ij − C_iσ(i)))``
  from the warm start's ``g`` until nothing changes (at most ``n`` sweeps). Returns ``f, g`` and
  the number of sweeps.
  """
  n = cost.shape[0]
  assigned = jnp.take_along_axis(cost, perm[:, None], axis=1)
  step = cost - assigned

  def sweep(state):
    g, _, k = state
    new = jnp.minimum(g, jnp.min(g[perm][:, None] + step, axis=0))
    return new, jnp.any(new < g), k + 1

  g, _, sweeps = jax.lax.while_loop(lambda s: s[1] & (s[2] < n), sweep,
                                    (g, jnp.array(True), jnp.zeros((), jnp.int32)))
  return assigned[:, 0] - g[perm], g, sweeps


def solve_host(cost: Array, init: Array, *, duals: bool = True) -> AssignmentOutput:
  """The exact assignment of one ``(n, n)`` problem on the host (batch with ``vmap``).

  ``duals=False`` skips the dual recovery and the certificate (for callers that only need the
  permutation and the cost): ``f, g`` are then the warm start's potentials, ``gap`` is ``+inf``
  and ``n_iters`` is 0.
  """
  c = jax.lax.stop_gradient(cost)
  # One c-transform makes the warm start feasible with every column tight: SciPy's searches
  # start from the columns' side, so this reduction shortens them as much as three would.
  f, g = init, jnp.min(c - init[:, None], axis=0)
  # About the gauge mean f = mean g (no large offsets), shifted by an integer (exact arithmetic
  # stays exact on integer costs).
  shift = jnp.round(0.5 * (jnp.mean(g) - jnp.mean(f)))
  f, g = f + shift, g - shift
  finite = jnp.isfinite(f).all() & jnp.isfinite(g).all()
  f, g = jnp.where(finite, f, 0.0), jnp.where(finite, g, 0.0)
  perm, found = host_permutation(c, f, g)
  sweeps = jnp.zeros((), jnp.int32)
  if duals:
    f, g, sweeps = dual_potentials(c, perm, g)
  return _certify(cost, perm, f, g, found, sweeps, certify=duals)


def resolve_method(method: str, name: str = "method") -> str:
  """``"auto"`` is ``"host"`` when JAX's default backend is the CPU, else ``"jax"``."""
  V.check_choice(name, method, METHODS)
  if method == "auto":
    return "host" if jax.default_backend() == "cpu" else "jax"
  return method


def solve(cost: Array, init: Array, *, method: str, row_fn=None,
          duals: bool = True) -> AssignmentOutput:
  """One problem by the resolved ``method`` (``"jax"`` or ``"host"``); batch with ``vmap``."""
  if method == "host":
    return solve_host(cost, init, duals=duals)
  return solve_one(cost, init, row_fn)


def default_chunk_size(n: int, count: int, method: str = "jax") -> int:
  """Problems of size ``n`` per chunk of a batch of ``count``: about ``CHUNK_ELEMENTS[method]``
  cost entries, at least ``MIN_CHUNK`` problems (and at most ``count``)."""
  return max(1, min(count, max(MIN_CHUNK, CHUNK_ELEMENTS[method] // (n * n))))


@functools.partial(jax.jit, static_argnames=("chunk_size", "method"))
def solve_batch(cost: Array, init: Array, *, chunk_size: int | None = None,
                method: str = "jax") -> AssignmentOutput:
  """:func:`solve` over the leading axes of ``cost (..., n, n)`` and ``init (..., n)``,
  ``chunk_size`` problems per ``vmap`` (``None``: :func:`default_chunk_size`)."""
  *batch, n, _ = cost.shape
  one = functools.partial(solve, method=method)
  if not batch:
    return one(cost, init)
  size = int(np.prod(batch))
  flat = (cost.reshape(size, n, n), init.reshape(size, n))
  chunk = default_chunk_size(n, size, method) if chunk_size is None else min(chunk_size, size)
  out = jax.lax.map(lambda args: one(*args), flat, batch_size=chunk)
  return jax.tree.map(lambda leaf: leaf.reshape(*batch, *leaf.shape[1:]), out)


# ---------------------------------------------------------------------------------------------
# Public function


def _check_cost(cost_matrix) -> Array:
  cost = V.as_float_array("cost_matrix", cost_matrix)
  if cost.ndim < 2 or cost.shape[-1] != cost.shape[-2]:
    raise ValueError(f"`cost_matrix` must be square, shape (..., n, n); got shape {cost.shape}. "
                     "For unequal sizes or weights use otkit.sinkhorn.")
  if cost.shape[-1] == 0 or cost.size == 0:
    raise ValueError(f"`cost_matrix` is empty (shape {cost.shape}); it needs n >= 1.")
  if V.is_concrete(cost):
    values = np.asarray(cost)
    bad = int(np.sum(np.isnan(values) | (values == -np.inf)))
    if bad:
      raise ValueError(f"`cost_matrix` contains {bad} NaN or -inf value(s); entries must be "
                       "finite, or +inf to forbid a pair.")
    allowed = np.isfinite(values)
    if not (np.all(allowed.any(axis=-1)) and np.all(allowed.any(axis=-2))):
      raise ValueError("`cost_matrix` has a row or column with no finite entry; no assignment "
                       "is feasible.")
  return cost


def _check_init(init, cost: Array) -> Array:
  if init is None:
    return jnp.zeros(cost.shape[:-1], cost.dtype)
  arr = V.as_float_array("init", init, cost.dtype)
  if arr.shape != cost.shape[:-1]:
    raise ValueError(f"`init` must hold one potential per row, shape {cost.shape[:-1]}; got "
                     f"shape {arr.shape}.")
  V.check_finite("init", arr)
  return arr


def assignment(cost_matrix, *, init=None, chunk_size=None, method="auto") -> AssignmentOutput:
  """Exact optimal assignment (linear sum assignment) of square cost matrices, in JAX.

  Solves ``min_σ Σ_i C[i, σ(i)]`` over permutations by the shortest augmenting path (Hungarian)
  method. The result is exact: the algorithm ends with a perfect matching and potentials
  ``f, g`` that satisfy dual feasibility ``f_i + g_j ≤ C_ij`` and complementary slackness on the
  matching, which proves optimality. For integer costs (``|C| < 2^24 / n`` in float32,
  ``2^53 / n`` in float64) every operation is exact, so the optimum is exact. For real costs the
  potentials carry rounding errors only, and ``gap`` certifies ``cost − OPT ≤ gap`` (of the order
  of ``n`` rounding errors of ``max|C|``). Runs under ``jit`` and ``vmap``; a batch
  ``(..., n, n)`` is solved in one call, in chunks of ``chunk_size`` problems. Worst case
  ``O(n³)`` work per problem.

  Two implementations, same result fields: ``method="jax"`` runs the search in the graph (one
  ``lax.while_loop`` of static shapes: GPU/TPU); ``method="host"`` solves each problem on the
  host in float64 (with Numba installed, otkit's compiled auction and augmenting paths; otherwise
  ``scipy.optimize.linear_sum_assignment``) through ``jax.pure_callback``, the whole batch in
  one callback per chunk, and recovers the potentials in JAX (see the module notes); on CPU it
  is several times faster. ``"auto"`` picks ``"host"`` when JAX's default
  backend is the CPU and ``"jax"`` otherwise. Both are exact; they may return different optimal
  permutations only when several are optimal (ties).

  Args:
    cost_matrix: ``(n, n)`` or ``(..., n, n)``, real or integer. ``+inf`` forbids a pair (the
      problem must still admit a finite assignment); NaN and ``-inf`` are errors.
    init: optional warm start, row potentials ``(..., n)``. Any values are valid: they only
      shorten the searches (see the module notes). Default: zeros.
    chunk_size: static; problems per chunk of a batch, which bounds the memory of one ``vmap``
      (``None``: about ``2^19`` cost entries for ``"jax"``, ``2^22`` for ``"host"``, at least 8
      problems). The result does not depend on it.
    method: static; ``"auto"`` (default), ``"jax"`` or ``"host"``.

  Returns:
    :class:`AssignmentOutput` with ``perm (..., n)``, ``cost (...)``, potentials ``f, g``, the
    certificate ``gap``, ``result`` (an :class:`otkit.Result` code; ``converged`` is
    ``result == CONVERGED``) and ``n_iters``. The optimal transport value between the
    uniform measures on the rows and columns is ``cost / n``. ``cost`` is differentiable in
    ``cost_matrix`` by either method.

  References:
    Jonker, Volgenant, "A shortest augmenting path algorithm for dense and sparse linear
    assignment problems", Computing 1987.
    Crouse, "On implementing 2D rectangular assignment algorithms", IEEE Trans. Aerosp. Electron.
    Syst. 2016.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> out = otkit.assignment(jnp.array([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
    >>> out.perm.tolist(), float(out.cost), bool(out.converged)
    ([1, 0, 2], 5.0, True)
  """
  cost = _check_cost(cost_matrix)
  init = _check_init(init, cost)
  if chunk_size is not None:
    chunk_size = V.check_static_int("chunk_size", chunk_size)
  method = resolve_method(method)
  return solve_batch(cost, init, chunk_size=chunk_size, method=method)
