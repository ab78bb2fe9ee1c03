"""Mini-batch optimal transport: many small OT problems between batches, solved in one call.

The classic estimator (Fatras et al.) draws ``k`` pairs of batches of ``m`` points, one from each
measure, solves OT between the uniform measures on each pair and averages:
``MB_m(μ, ν) = mean_p OT(μ_p, ν_p)``. All pairs are solved by one ``vmap`` (in chunks of
``chunk_size`` pairs, so memory is ``O(chunk_size · m²)``), either exactly (:func:`otkit.assignment`,
the batches being uniform and of equal size) or by a Sinkhorn solver object
(:class:`otkit.Sinkhorn`, :class:`otkit.SinkhornNewton`) through :func:`otkit.solve`.

For the default cost ``‖x − y‖²`` the exact inner solver is warm-started with the potentials of the
Gaussian approximation of each pair (the Brenier potential of the Bures map between the batches'
means and covariances, for ``d ≤ WARM_START_MAX_DIM``): it shortens the augmenting-path searches
several-fold and never changes the result. On CPU the exact solves run on the host
(``exact_method="auto"``, see :func:`otkit.assignment`): each chunk of pairs is one callback that
loops the host's exact solver over the warm-started problems (see :func:`otkit.assignment`). Random
permutations are drawn by sorting random keys, with NumPy's sort on the host on CPU
(:mod:`otkit._host`).

References:
  Fatras, Zine, Flamary, Gribonval, Courty, "Learning with minibatch Wasserstein: asymptotic and
  gradient properties", AISTATS 2020.
  Fatras, Zine, Majewski, Flamary, Gribonval, Courty, "Minibatch optimal transport distances;
  analysis and applications", arXiv:2101.01792, 2021.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _host
from otkit import _sharding, _validation as V
from otkit.closed_form._gaussian import transport_matrix
from otkit.geometry import _costs
from otkit.geometry._geometry import PointCloud
from otkit.solvers import _assignment
from otkit.solvers import _solve
from otkit.solvers._output import Result, combine_results, finite_result, reduce_result
from otkit.solvers._plan import transport_cost
from otkit.solvers._solver import check_solver

Array = jax.Array
INNER = ("exact", "sinkhorn")
WARM_START_MAX_DIM = 16
# Up to this dimension the exact solver recomputes cost rows from the points (d products per
# entry) instead of gathering them from the batch's cost matrix.
ROWS_FROM_POINTS_MAX_DIM = 4


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MinibatchOutput:
  """Result of :func:`minibatch_ot` (a pytree).

  Attributes:
    value: the mini-batch estimate, the mean of ``costs``.
    std_error: its standard error over the batch pairs, ``std(costs) / √k`` (``0`` for ``k = 1``).
    costs: ``(k,)``, the OT cost of each pair of batches.
    result: the worst :class:`otkit.Result` code over the pairs (``int32``): the exact solver's
      (``CONVERGED``, or ``NON_FINITE`` when a pair has no finite assignment), or the Sinkhorn
      solver's (``CONVERGED`` when every pair met the solver's ``tol``); ``NON_FINITE`` too if
      ``value`` is not finite.
  """

  value: Array
  std_error: Array
  costs: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``: every inner problem was solved."""
    return self.result == Result.CONVERGED


# ---------------------------------------------------------------------------------------------
# Inner problems between two batches (one pair; batch with vmap)


def gaussian_potential(x: Array, y: Array) -> Array:
  """Row potentials ``u_i = ‖x_i‖² − 2 φ(x_i)`` from the Gaussian fit of two batches.

  ``φ(x) = ½ (x − m_x)ᵀ A (x − m_x) + m_yᵀ x`` is the Brenier potential of the Bures map
  ``x ↦ m_y + A (x − m_x)`` between the batches' Gaussian fits, so ``u_i + v_j ≤ ‖x_i − y_j‖²``
  with ``v = ‖y‖² − 2 φ*``: a good warm start for the exact solver (cost ``‖x − y‖²``).
  """
  mx, my = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
  xc, yc = x - mx, y - my
  hi = jax.lax.Precision.HIGHEST
  cx = jnp.matmul(xc.T, xc, precision=hi) / x.shape[0]
  cy = jnp.matmul(yc.T, yc, precision=hi) / y.shape[0]
  a = transport_matrix(cx, cy)
  phi = 0.5 * jnp.sum(jnp.matmul(xc, a, precision=hi) * xc, axis=1) + jnp.matmul(x, my, precision=hi)
  u = jnp.sum(x * x, axis=1) - 2.0 * phi
  return jnp.where(jnp.all(jnp.isfinite(u)), u, 0.0)


def warm_start(x: Array, y: Array, cost_fn) -> Array:
  """The warm start of the exact solver for a pair of batches (zeros where none applies)."""
  if isinstance(cost_fn, _costs.SqEuclidean) and x.shape[1] <= WARM_START_MAX_DIM:
    return jax.lax.stop_gradient(gaussian_potential(x, y))
  return jnp.zeros(x.shape[:1], x.dtype)


def _sq_rows(x: Array, y: Array):
  """``‖x_i − y_j‖²`` coordinate by coordinate: the matrix, and the same values row by row."""
  row = lambda i: sum((x[i, k] - y[:, k]) ** 2 for k in range(x.shape[1]))
  cost = sum((x[:, None, k] - y[None, :, k]) ** 2 for k in range(x.shape[1]))
  return cost, row


def assign_pair(x: Array, y: Array, cost_fn, method: str = "jax",
                duals: bool = True) -> _assignment.AssignmentOutput:
  """The exact assignment between two batches ``x, y (m, d)``, warm-started (see
  :func:`warm_start`); ``method`` and ``duals`` as in :func:`exact_pair`."""
  if method == "host" and not duals and isinstance(cost_fn, _costs.SqEuclidean):
    return _assignment.solve_host_points(x, y, warm_start(x, y, cost_fn))
  if isinstance(cost_fn, _costs.SqEuclidean) and x.shape[1] <= ROWS_FROM_POINTS_MAX_DIM:
    cost, row_fn = _sq_rows(x, y)
  else:
    cost, row_fn = cost_fn.pairwise(x, y), None
  return _assignment.solve(cost, warm_start(x, y, cost_fn), method=method, row_fn=row_fn,
                           duals=duals)


def exact_pair(x: Array, y: Array, cost_fn, method: str = "jax",
               duals: bool = True) -> tuple[Array, Array, Array]:
  """``OT`` between the uniform measures on ``x (m, d)`` and ``y (m, d)``, the row potential
  ``f (m,)`` (gauge ``mean f = mean g``) and the solve's result code.

  ``method``: ``"jax"`` or ``"host"`` (see :func:`otkit.assignment`); ``duals=False`` lets the
  host path skip the potentials (``f`` is then only feasible, not optimal).
  """
  out = assign_pair(x, y, cost_fn, method, duals)
  m = x.shape[0]
  shift = 0.5 * (jnp.mean(out.g) - jnp.mean(out.f))
  return out.cost / m, out.f + shift, out.result


def sinkhorn_pair(x: Array, y: Array, cost_fn, epsilon: Array, solver):
  """The primal cost ``⟨C, P_ε⟩`` of the entropic plan between the uniform measures on two
  batches, its source potential and the solver's result code."""
  geom = PointCloud(x, y, cost_fn)
  out = _solve.solve(geom, epsilon=epsilon, solver=solver)
  return transport_cost(geom, out), out.f, out.result


def solve_pairs(xs: Array, ys: Array, cost_fn, inner: str, epsilon, solver,
                chunk: int | None, method: str = "jax", duals: bool = True, mesh=None):
  """Every pair ``(xs[p], ys[p])`` of batches ``(k, m, d)``, ``chunk`` pairs per ``vmap``;
  ``method`` and ``duals`` as in :func:`exact_pair`; with a ``mesh``, the pairs are divided
  among its devices. Returns the costs ``(k,)``, the source potentials ``(k, m)`` and the result
  codes ``(k,)``."""
  k, m = xs.shape[:2]
  if mesh is not None:
    k = -(-k // mesh.size)  # pairs per device
    # Host callbacks inside a split computation can stall its devices: in-graph assignments.
    method = "jax"
  if chunk is None:
    chunk = _assignment.default_chunk_size(m, k, method if inner == "exact" else "jax")

  def pairs(batches, epsilon):
    if inner == "exact":
      fn = lambda pair: exact_pair(*pair, cost_fn, method, duals)
    else:
      fn = lambda pair: sinkhorn_pair(*pair, cost_fn, epsilon, solver)
    return jax.lax.map(fn, batches, batch_size=min(chunk, k))

  return _sharding.map_split(pairs, mesh, (xs, ys), epsilon)


# ---------------------------------------------------------------------------------------------
# Validation shared with the bounds


def check_batch_size(batch_size, n: int, m: int) -> int:
  size = V.check_static_int("batch_size", batch_size)
  if size > min(n, m):
    raise ValueError(f"`batch_size` = {size} exceeds the number of points (x has {n}, y has "
                     f"{m}); a batch holds at most min(n, m) = {min(n, m)} points.")
  return size


def check_inner(inner, epsilon, solver, dtype):
  """Validates the inner solver eagerly; returns ``(epsilon, solver)`` (both ``None`` for the
  exact solver; the default solver object is ``Sinkhorn()``)."""
  V.check_choice("inner", inner, INNER)
  if inner == "exact":
    for name, value in (("epsilon", epsilon), ("solver", solver)):
      if value is not None:
        raise ValueError(f"`{name}` is only used with inner='sinkhorn'; the exact inner solver "
                         f"has no regularisation. Drop `{name}` or pass inner='sinkhorn'.")
    return None, None
  if epsilon is None:
    raise ValueError("inner='sinkhorn' needs `epsilon` (the entropic regularisation, in units "
                     "of the cost).")
  return V.check_positive("epsilon", epsilon, dtype), check_solver(solver)


def check_chunk_size(chunk_size, name: str = "chunk_size") -> int | None:
  return None if chunk_size is None else V.check_static_int(name, chunk_size)


def common_mass(a: Array, b: Array) -> Array:
  """``(Σa + Σb) / 2``, the mass of two measures checked to be equal (up to rounding)."""
  return 0.5 * (jnp.sum(a) + jnp.sum(b))


def pairs_result(codes: Array, *values: Array) -> Array:
  """The worst code over the pairs' ``codes``, and ``NON_FINITE`` if a value is not finite."""
  return combine_results(reduce_result(codes), finite_result(*values))


def check_clouds(x, y):
  x = V.check_points("x", x)
  y = V.check_points("y", y)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"`x` and `y` must have the same dimension d; got x {x.shape} and y {y.shape}.")
  dtype = V.common_dtype(x, y)
  return x.astype(dtype), y.astype(dtype)


def check_cost_fn(cost_fn):
  cost_fn = _costs.as_cost(cost_fn)
  if not _costs.is_cost(cost_fn):
    raise ValueError(f"`cost_fn` must be an otkit cost or a callable c(x, y); got {cost_fn!r}.")
  return cost_fn


# ---------------------------------------------------------------------------------------------
# The classic estimator


def _argsort_host(hi: Array, lo: Array) -> Array:
  def fn(hi, lo):
    keys = (np.asarray(hi).astype(np.uint64) << np.uint64(32)) | np.asarray(lo)
    return np.argsort(keys, axis=-1).astype(np.int32)

  return _host.callback(fn, jax.ShapeDtypeStruct(hi.shape, jnp.int32), hi, lo,
                        vmap_method="broadcast_all")


def _argsort_xla(hi: Array, lo: Array) -> Array:
  index = jax.lax.broadcasted_iota(jnp.int32, hi.shape, hi.ndim - 1)
  return jax.lax.sort((hi, lo, index), dimension=hi.ndim - 1, num_keys=2, is_stable=True)[2]


def random_permutations(key: Array, count: int, n: int) -> Array:
  """``count`` independent uniformly random permutations of ``0..n−1``, ``(count, n)`` int32.

  Each sorts 64 random bits per element (two ``uint32`` keys, lexicographic). On CPU the sort is
  NumPy's (through ``jax.pure_callback``; XLA's CPU sort is several times slower), elsewhere
  XLA's, so every backend draws the same permutations for the same key, unless two 64-bit keys
  tie (probability about ``n² / 2⁶⁵``), whose order may then differ.
  """
  hi, lo = jax.random.bits(key, (2, count, n), jnp.uint32)
  return _host.on_cpu(_argsort_host, _argsort_xla, hi, lo)


def sample_batches(key: Array, n: int, weights: Array | None, batch_size: int,
                   n_batches: int) -> Array:
  """Indices ``(n_batches, batch_size)`` of the batches of one measure.

  Uniform weights: each batch is a uniformly random subset (no repeated point), drawn as
  consecutive slices of random permutations of ``0..n−1`` (``⌊n / m⌋`` disjoint batches per
  permutation, see :func:`random_permutations`). Other weights: ``m`` independent draws with
  probabilities ``weights``.
  """
  if weights is not None:
    return jax.random.choice(key, n, (n_batches, batch_size), p=weights / jnp.sum(weights))
  per_perm = n // batch_size
  n_perms = -(-n_batches // per_perm)
  perms = random_permutations(key, n_perms, n)
  batches = perms[:, : per_perm * batch_size].reshape(n_perms * per_perm, batch_size)
  return batches[:n_batches]


@functools.partial(jax.jit, static_argnames=("batch_size", "n_batches", "inner", "chunk_size",
                                             "uniform", "method", "mesh"))
def _minibatch(key, x, y, a, b, epsilon, solver, cost_fn, *, batch_size, n_batches, inner,
               chunk_size, uniform, method, mesh):
  key_x, key_y = jax.random.split(key)
  ix = sample_batches(key_x, x.shape[0], None if uniform[0] else a, batch_size, n_batches)
  iy = sample_batches(key_y, y.shape[0], None if uniform[1] else b, batch_size, n_batches)
  costs, _, codes = solve_pairs(x[ix], y[iy], cost_fn, inner, epsilon, solver, chunk_size,
                                method, duals=False, mesh=mesh)
  if not all(uniform):  # batches carry the measures' common mass
    costs = costs * common_mass(a, b)
  value = jnp.mean(costs)
  spread = jnp.std(costs, ddof=1) / jnp.sqrt(n_batches) if n_batches > 1 else jnp.zeros_like(value)
  return MinibatchOutput(value=value, std_error=spread, costs=costs,
                         result=pairs_result(codes, value))


def minibatch_ot(key, x, y, a=None, b=None, *, batch_size, n_batches, inner="exact",
                 epsilon=None, solver=None, cost_fn=None, chunk_size=None,
                 exact_method="auto", mesh=None) -> MinibatchOutput:
  """The mini-batch OT estimator: the mean OT cost over ``n_batches`` random pairs of batches.

  ``MB_m(μ, ν) = (1/k) Σ_p OT(μ_p, ν_p)`` where ``μ_p`` and ``ν_p`` are uniform measures on
  ``m = batch_size`` points drawn from each measure. It estimates ``E[OT(μ_m, ν_m)]``, which is
  larger than ``OT(μ, ν)`` and decreases towards it as ``m`` grows. All pairs are solved in one
  call: ``vmap`` over chunks of ``chunk_size`` pairs.

  Sampling policy: with uniform weights each batch is a random subset of ``m`` distinct points
  (any ``m ≤ min(n, n')``; ``m`` need not divide ``n``); for a measure given with weights, ``m``
  independent draws with probabilities ``a / Σa`` (resp. ``b / Σb``), the batch again weighted
  uniformly. Weights policy: ``a`` and ``b`` must have the same total mass ``M`` (a
  ``ValueError`` otherwise; ``None`` is uniform of mass 1); the batches carry that mass, so the
  costs are those of measures of mass ``M`` (``M`` times those of the normalised measures).

  Args:
    key: a ``jax.random`` key (required).
    x: source points ``(n, d)``; y: target points ``(n', d)``.
    a, b: optional weights ``(n,)``, ``(n',)`` (non-negative, of equal total mass); default
      uniform ``1/n``.
    batch_size: static ``m``, points per batch, ``1 ≤ m ≤ min(n, n')``.
    n_batches: static ``k``, the number of batch pairs.
    inner: ``"exact"`` (default; :func:`otkit.assignment`, exact OT between the uniform batches)
      or ``"sinkhorn"`` (:func:`otkit.solve` with ``solver``; each pair's cost is the primal
      cost ``⟨C, P_ε⟩`` of its entropic plan, differentiable through the solver's ``grad_mode``).
    epsilon: the entropic regularisation for ``inner="sinkhorn"`` (absolute, in units of the
      cost; traced).
    solver: the solver object of ``inner="sinkhorn"`` (:class:`otkit.Sinkhorn`, the default
      ``Sinkhorn()``, or :class:`otkit.SinkhornNewton`); its ``tol`` is traced. For example
      ``otkit.Sinkhorn(fixed_iters=200)`` gives every pair the same number of sweeps
      (predictable batches).
    cost_fn: the ground cost (default ``‖x − y‖²``, no ½).
    chunk_size: static; pairs per ``vmap`` chunk, which bounds the memory to
      ``O(chunk_size · m²)`` (``None``: sized from ``m``). The result does not depend on it.
    exact_method: static; how ``inner="exact"`` runs, as ``method`` of :func:`otkit.assignment`:
      ``"auto"`` (default: the host's solver when JAX's default backend is the CPU, the in-graph
      solver otherwise), ``"host"`` or ``"jax"``. Same costs either way.
    mesh: a ``jax.sharding.Mesh`` (static) to divide the batch pairs among its devices (points
      arriving split along ``n`` are gathered into batches), which then solve exact pairs
      in-graph (``"jax"``); ``None`` (default): one device. The costs are the same.

  Returns:
    :class:`MinibatchOutput` with ``value``, ``std_error``, ``costs (k,)`` and ``result`` (an
    :class:`otkit.Result` code; ``converged`` is ``result == CONVERGED``).
    ``value`` is differentiable in ``x`` and ``y`` (exact: the envelope gradient through the
    optimal matchings; Sinkhorn: through the solver).

  References:
    Fatras et al., "Learning with minibatch Wasserstein: asymptotic and gradient properties",
    AISTATS 2020.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (1000, 2))
    >>> y = jax.random.normal(jax.random.key(1), (1000, 2)) + 1.0
    >>> out = otkit.minibatch_ot(jax.random.key(2), x, y, batch_size=64, n_batches=100)
    >>> bool(out.converged), out.costs.shape
    (True, (100,))
    >>> out = otkit.minibatch_ot(jax.random.key(2), x, y, batch_size=32, n_batches=8,
    ...                          inner="sinkhorn", epsilon=0.1, solver=otkit.Sinkhorn(tol=1e-4))
    >>> bool(out.converged)
    True
  """
  key = V.check_key(key)
  x, y = check_clouds(x, y)
  dtype = x.dtype
  n, n2 = x.shape[0], y.shape[0]
  batch_size = check_batch_size(batch_size, n, n2)
  n_batches = V.check_static_int("n_batches", n_batches)
  a_w = V.check_weights("a", a, n, dtype)
  b_w = V.check_weights("b", b, n2, dtype)
  V.check_equal_mass(a_w, b_w)
  uniform = (a is None, b is None)
  epsilon, solver = check_inner(inner, epsilon, solver, dtype)
  chunk_size = check_chunk_size(chunk_size)
  method = _assignment.resolve_method(exact_method, "exact_method")
  return _minibatch(key, x, y, a_w, b_w, epsilon, solver, check_cost_fn(cost_fn),
                    batch_size=batch_size, n_batches=n_batches, inner=inner,
                    chunk_size=chunk_size, uniform=uniform, method=method,
                    mesh=_sharding.check_mesh(mesh))
