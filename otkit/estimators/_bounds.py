"""Budget-constrained upper and lower bounds on OT from mini-batch solutions.

Partition both measures (``n`` points each, uniform weights) into ``k = n / m`` batches
``S_1..S_k`` and ``T_1..T_k`` of ``m`` points, and let ``M_pq = OT(μ_p, ν_q)`` be the OT cost
between the uniform measures on ``S_p`` and ``T_q`` (one small solve per pair).

* **Upper bounds.** For every coupling ``Γ`` of the batches, gluing the optimal batch plans gives
  a feasible plan of the full problem, so ``OT(μ, ν) ≤ Σ_pq Γ_pq M_pq``. The independent
  coupling gives the plain mini-batch average ``U_avg = mean(M)``; the best coupling gives
  ``U* = min_σ (1/k) Σ_p M_{p σ(p)}``, an assignment over the batches. With a budget of
  ``B`` solves (``k ≤ B ≤ k²``) only a pair set ``E`` is solved and
  ``U_E = min {⟨Γ, M⟩ : supp Γ ⊆ E}`` (unsolved pairs cost ``+∞``). ``E`` is chosen by a proxy:
  the assignment of the batch means' costs ``Q_pq = c(mean S_p, mean T_q)`` (``k`` pairs, so ``E``
  always contains a pairing), then the ``B − k`` other pairs of smallest ``Q``. The sets are
  nested in ``B``, so ``U_E`` does not increase with the budget, and ``U_E = U*`` at ``B = k²``.
* **Lower bound.** Weak duality: any ``f, g`` with ``f_i + g_j ≤ C_ij`` give
  ``mean f + mean g ≤ OT``. On each source batch ``S_p``, ``f`` is the dual potential of its
  problem with the batch ``σ(p)`` it is coupled to by the upper bound (gauge
  ``mean f = mean g``); then ``g = min_i (C_ij − f_i)`` and ``f = min_j (C_ij − g_j)``
  (c-transforms over all points, computed online in ``O(n · block)`` memory).

With ``k = 1`` all bounds equal ``OT``. Cost: ``B`` inner solves, a ``k × k`` assignment and two
online c-transforms (``O(n²)`` cost evaluations).

References:
  Alvarez-Melis, Fusi, Mackey, Wagner, "Budget-Constrained Bounds for Mini-Batch Estimation of
  Optimal Transport", arXiv:2210.13630, 2022.
  Nguyen, Le, Nguyen, Do, Ho, "On Transportation of Mini-batches: A Hierarchical Approach"
  (BoMb-OT), ICML 2022 (the optimal coupling of mini-batches).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _sharding, _validation as V
from otkit.estimators import _minibatch as MB
from otkit.geometry import _reductions as R
from otkit.geometry._geometry import PointCloud
from otkit.solvers import _assignment
from otkit.solvers._output import Result, combine_results

Array = jax.Array
PARTITIONS = ("random", "sorted")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BoundsOutput:
  """Result of :func:`minibatch_bounds` (a pytree).

  Attributes:
    upper: ``U_E``, the tightest upper bound on ``OT(μ, ν)`` from the solved pairs.
    lower: the dual lower bound on ``OT(μ, ν)``.
    average: the plain mini-batch estimate from the solved pairs: the mean of all ``k²`` batch
      costs when every pair is solved, else the mean over the ``k`` pairs of the proxy pairing.
      An upper bound too, never below ``upper``.
    costs: ``(k, k)`` batch costs ``M_pq``; ``+inf`` where the pair was not solved.
    solved: ``(k, k)`` bool, the pairs solved (``budget`` of them).
    pairing: ``(k,)`` int32, the batch coupling of ``upper``: source batch ``p`` goes to target
      batch ``pairing[p]``.
    batches_x, batches_y: ``(k, m)`` int32, the indices of the points in each batch.
    result: the worst :class:`otkit.Result` code (``int32``) of the inner solves and of the
      batch-level assignment (``NON_FINITE`` too if a bound is not finite).
  """

  upper: Array
  lower: Array
  average: Array
  costs: Array
  solved: Array
  pairing: Array
  batches_x: Array
  batches_y: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``: every inner solve and the coupling of batches succeeded."""
    return self.result == Result.CONVERGED


def c_transform(geom, h: Array) -> Array:
  """``out_i = min_j (C_ij − h_j)`` for a geometry of shape ``(n, m)``, online (row blocks)."""
  def block(geom, rows, _, h, __):
    return jnp.min(geom.block_cost(rows) - h[None, :], axis=1)

  return R.reduce_rows(geom, block, "min", cols=h)


def pair_set(proxy: Array, budget: int, method: str = "jax") -> tuple[Array, Array]:
  """The ``budget`` pairs ``(p, q)`` to solve: the assignment of ``proxy (k, k)`` first, then the
  other pairs in increasing ``proxy`` (ties by index), so the sets are nested in ``budget``."""
  k = proxy.shape[0]
  skeleton = _assignment.solve(proxy, jnp.zeros((k,), proxy.dtype), method=method,
                               duals=False).perm
  first = jnp.zeros((k, k), bool).at[jnp.arange(k), skeleton].set(True)
  rank = jnp.where(first, -jnp.inf, proxy).reshape(-1)
  chosen = jnp.argsort(rank, stable=True)[:budget]
  return chosen // k, chosen % k


def _lower_bound(x, y, cost_fn, f_batches, batches_x, pairing, transform_chunk_size):
  """Assembles ``f`` from the batch potentials of the coupled pairs and c-transforms it twice."""
  n = x.shape[0]
  f = jnp.zeros((n,), x.dtype).at[batches_x.reshape(-1)].set(
      f_batches[jnp.arange(pairing.shape[0]), pairing].reshape(-1))
  geom = PointCloud(x, y, cost_fn, transform_chunk_size)
  g = c_transform(geom.transpose(), f)
  f = c_transform(geom, g)
  return jnp.mean(f) + jnp.mean(g)


@functools.partial(jax.jit, static_argnames=("batch_size", "budget", "inner", "chunk_size",
                                             "transform_chunk_size", "method", "mesh"))
def _bounds(x, y, order_x, order_y, mass, epsilon, solver, cost_fn, *, batch_size, budget, inner,
            chunk_size, transform_chunk_size, method, mesh):
  n, d = x.shape
  k, m = n // batch_size, batch_size
  batches_x, batches_y = order_x.reshape(k, m), order_y.reshape(k, m)
  xs, ys = x[batches_x], y[batches_y]
  proxy = jax.lax.stop_gradient(cost_fn.pairwise(jnp.mean(xs, axis=1), jnp.mean(ys, axis=1)))
  p, q = pair_set(proxy, budget, method)
  values, f_pairs, codes = MB.solve_pairs(xs[p], ys[q], cost_fn, inner, epsilon, solver,
                                          chunk_size, method, mesh=mesh)
  costs = jnp.full((k, k), jnp.inf, values.dtype).at[p, q].set(values)
  solved = jnp.zeros((k, k), bool).at[p, q].set(True)
  f_batches = jnp.zeros((k, k, m), values.dtype).at[p, q].set(f_pairs)
  top = _assignment.solve(costs, jnp.zeros((k,), values.dtype), method=method, duals=False)
  upper = top.cost / k
  if budget == k * k:
    average = jnp.mean(costs)
  else:
    average = jnp.mean(values[:k])  # the proxy pairing: the first k pairs solved
  lower = _lower_bound(x, y, cost_fn, jax.lax.stop_gradient(f_batches), batches_x, top.perm,
                       transform_chunk_size)
  if mass is not None:  # the batches carry the measures' common mass
    upper, lower, average, costs = (mass * v for v in (upper, lower, average, costs))
  result = combine_results(MB.pairs_result(codes, upper, lower), top.result)
  return BoundsOutput(upper=upper, lower=lower, average=average, costs=costs, solved=solved,
                      pairing=top.perm, batches_x=batches_x, batches_y=batches_y, result=result)


def _check_uniform(name: str, w, n: int, dtype) -> Array:
  arr = V.check_weights(name, w, n, dtype)
  values = V.concrete_values(arr)
  if w is not None and values is not None:
    if not np.allclose(values, values.mean(), rtol=1e-6, atol=0.0):
      raise ValueError(f"`{name}` must be uniform: the bounds partition each measure into "
                       "equal-size batches of equal mass. Resample the points, or use "
                       "otkit.minibatch_ot, which accepts weights.")
  return arr


def _check_weights(a, b, n: int, dtype) -> Array | None:
  """The common mass of uniform weights ``a``, ``b`` (``None`` when both are ``None``)."""
  a_w, b_w = _check_uniform("a", a, n, dtype), _check_uniform("b", b, n, dtype)
  V.check_equal_mass(a_w, b_w)
  return None if a is None and b is None else MB.common_mass(a_w, b_w)


def _check_order(name: str, order, n: int) -> Array:
  arr = jnp.asarray(order)
  if arr.shape != (n,) or not jnp.issubdtype(arr.dtype, jnp.integer):
    raise ValueError(f"`partition` orders must be integer arrays of shape ({n},); `{name}` has "
                     f"dtype {arr.dtype} and shape {arr.shape}.")
  if V.is_concrete(arr) and not np.array_equal(np.sort(np.asarray(arr)), np.arange(n)):
    raise ValueError(f"`partition` order `{name}` must be a permutation of 0..{n - 1} "
                     "(batch p holds the points order[p*m:(p+1)*m]).")
  return arr.astype(jnp.int32)


def _partition(key, x, y, partition):
  """The orders of the points whose consecutive slices of ``m`` are the batches."""
  n = x.shape[0]
  if isinstance(partition, str):
    V.check_choice("partition", partition, PARTITIONS)
    if partition == "sorted":
      return jnp.argsort(x[:, 0]).astype(jnp.int32), jnp.argsort(y[:, 0]).astype(jnp.int32)
    key_x, key_y = jax.random.split(V.check_key(key))
    return (jax.random.permutation(key_x, n).astype(jnp.int32),
            jax.random.permutation(key_y, n).astype(jnp.int32))
  if not (isinstance(partition, (tuple, list)) and len(partition) == 2):
    raise ValueError(f"`partition` must be 'random', 'sorted' or a pair of orders (order_x, "
                     f"order_y); got {partition!r}.")
  return _check_order("order_x", partition[0], n), _check_order("order_y", partition[1], n)


def minibatch_bounds(key, x, y, a=None, b=None, *, batch_size, budget=None, partition="random",
                     inner="exact", epsilon=None, solver=None, cost_fn=None, chunk_size=None,
                     transform_chunk_size=None, exact_method="auto", mesh=None) -> BoundsOutput:
  """Upper and lower bounds on ``OT(μ, ν)`` from mini-batch solves, within a budget of solves.

  Splits both measures into ``k = n / batch_size`` batches, solves ``budget`` batch pairs and
  returns the tightest upper bound reachable from them (the best coupling of batches supported
  on the solved pairs) and a dual lower bound (see the module notes for the construction).
  ``budget=None`` solves all ``k²`` pairs: ``upper`` is then the optimal coupling of
  mini-batches ``U*`` and ``average`` the plain mini-batch average ``U_avg``. Always
  ``lower ≤ OT ≤ upper ≤ average``, and ``upper`` does not increase with ``budget`` (same key
  and partition).

  Policy: both clouds have the same number of points ``n`` and uniform weights of the same total
  mass ``M`` (``None`` is ``1/n``; the bounds are then those of measures of mass ``M``), and
  ``batch_size`` must divide ``n`` (the batches are equal; no point is dropped, since dropping
  one would change the measure being bounded).

  Args:
    key: a ``jax.random`` key (used by ``partition="random"``; may be ``None`` otherwise).
    x, y: points ``(n, d)`` each.
    a, b: weights ``(n,)``; only uniform weights of equal mass are accepted (``None`` =
      ``1/n``).
    batch_size: static ``m``, a divisor of ``n``.
    budget: static number of batch pairs to solve, ``k ≤ budget ≤ k²``; ``None`` = ``k²``.
    partition: ``"random"`` (a random permutation of each cloud), ``"sorted"`` (consecutive ranks
      of the first coordinate: spatially coherent batches) or ``(order_x, order_y)``, two
      permutations of ``0..n−1``; batch ``p`` holds ``order[p·m:(p+1)·m]`` (e.g. the argsort of
      equal-size cluster labels).
    inner: ``"exact"`` (default; :func:`otkit.assignment`) or ``"sinkhorn"`` (the primal cost of
      each entropic plan, still an upper bound up to the solver's marginal error ``tol``).
    epsilon: the entropic regularisation of ``inner="sinkhorn"`` (traced).
    solver: the solver object of ``inner="sinkhorn"`` (default ``otkit.Sinkhorn()``; see
      :func:`otkit.minibatch_ot`).
    cost_fn: the ground cost (default ``‖x − y‖²``, no ½).
    chunk_size: static; pairs per ``vmap`` chunk of the inner solves (memory
      ``O(chunk_size · m²)``), as in :func:`otkit.minibatch_ot`.
    transform_chunk_size: static; row block of the online c-transforms (as ``chunk_size`` of
      :class:`otkit.PointCloud`).
    exact_method: static; how the exact assignments run (the inner solves of ``inner="exact"``
      and the coupling of batches), as ``method`` of :func:`otkit.assignment`: ``"auto"``
      (default: the host's solver on CPU), ``"host"`` or ``"jax"``.
    mesh: a ``jax.sharding.Mesh`` (static) to divide the batch-pair solves among its devices
      (exact pairs in-graph, ``"jax"``); ``None`` (default): one device. The bounds are the same.

  Returns:
    :class:`BoundsOutput` with ``upper``, ``lower``, ``average``, the batch cost matrix ``costs``
    (``+inf`` where not solved), the mask ``solved``, the batch ``pairing`` and ``result`` (an
    :class:`otkit.Result` code; ``converged`` is ``result == CONVERGED``).

  References:
    Alvarez-Melis, Fusi, Mackey, Wagner, "Budget-Constrained Bounds for Mini-Batch Estimation of
    Optimal Transport", arXiv:2210.13630, 2022.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (400, 2))
    >>> y = jax.random.normal(jax.random.key(1), (400, 2)) + 1.0
    >>> out = otkit.minibatch_bounds(jax.random.key(2), x, y, batch_size=50, budget=24)
    >>> bool(out.lower <= out.upper <= out.average), int(out.solved.sum())
    (True, 24)
  """
  x, y = MB.check_clouds(x, y)
  n = x.shape[0]
  if y.shape[0] != n:
    raise ValueError(f"`x` and `y` must have the same number of points for the batch bounds; got "
                     f"{n} and {y.shape[0]}. Subsample one cloud, or use otkit.minibatch_ot.")
  dtype = x.dtype
  mass = _check_weights(a, b, n, dtype)
  batch_size = MB.check_batch_size(batch_size, n, n)
  if n % batch_size:
    divisors = [s for s in range(1, n + 1) if n % s == 0]
    near = sorted(divisors, key=lambda s: abs(s - batch_size))[:2]
    raise ValueError(f"`batch_size` = {batch_size} does not divide n = {n}: the bounds split each "
                     f"measure into equal batches. Use a divisor of n, e.g. {sorted(near)}.")
  k = n // batch_size
  if budget is None:
    budget = k * k
  budget = V.check_static_int("budget", budget)
  if not k <= budget <= k * k:
    raise ValueError(f"`budget` must lie in [k, k²] = [{k}, {k * k}] for k = {k} batches (at least "
                     f"one pairing of the batches); got {budget}.")
  epsilon, solver = MB.check_inner(inner, epsilon, solver, dtype)
  chunk_size = MB.check_chunk_size(chunk_size)
  transform_chunk_size = MB.check_chunk_size(transform_chunk_size, "transform_chunk_size")
  method = _assignment.resolve_method(exact_method, "exact_method")
  order_x, order_y = _partition(key, x, y, partition)
  return _bounds(x, y, order_x, order_y, mass, epsilon, solver, MB.check_cost_fn(cost_fn),
                 batch_size=batch_size, budget=budget, inner=inner, chunk_size=chunk_size,
                 transform_chunk_size=transform_chunk_size, method=method,
                 mesh=_sharding.check_mesh(mesh))
