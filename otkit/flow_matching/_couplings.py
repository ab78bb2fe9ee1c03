"""Couplings of two mini-batches: which source point travels to which target point.

Flow matching regresses a velocity field on pairs ``(x0_i, x1_i)``. Drawing the pairs from an
optimal transport plan of each mini-batch instead of independently (OT-CFM) makes the
conditional paths cross less, so the learned flow is straighter and cheaper to integrate. The
plan is computed for the squared Euclidean cost ``‖x0 − x1‖²`` (no normalisation), as in
torchcfm.

- ``"exact"``: the optimal assignment of two equal batches (uniform weights), a permutation
  found by :func:`otkit.assignment`, warm-started by the Gaussian fit of the two batches (a
  near-optimal dual that shortens the search several-fold). Every point is used once.
- ``"sinkhorn"``: ``batch`` index pairs drawn with replacement from the entropic plan
  ``P_ε`` (Tong et al.'s rule; ``ε`` in units of the cost).
- ``"unbalanced"``: the same from the plan with KL-relaxed marginals (``tau``), which lets
  outliers go unmatched.
- ``"independent"``: a random permutation of ``x1`` (the product coupling of I-CFM).
- ``"paired"``: the batches as given (data that come paired, as in Meta Flow Matching).

References:
  Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio, "Improving and generalizing
  flow-based generative models with minibatch optimal transport", TMLR 2024.
  Pooladian, Ben-Hamu, Domingo-Enrich, Amos, Lipman, Chen, "Multisample Flow Matching:
  Straightening Flows with Minibatch Couplings", ICML 2023.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from otkit import _validation as V
from otkit.estimators import _minibatch
from otkit.geometry import CostMatrix, SqEuclidean
from otkit.solvers import Result, Sinkhorn, solve
from otkit.solvers import _assignment
from otkit.solvers._solver import check_solver

Array = jax.Array
COUPLINGS = ("exact", "sinkhorn", "unbalanced", "independent", "paired")
# The couplings that draw pairs from an entropic plan (any batch sizes); the others need equal ones.
ENTROPIC = ("sinkhorn", "unbalanced")
# torchcfm's default entropic regularisation of its Sinkhorn couplings (units of the cost).
DEFAULT_EPSILON = 0.05


def check_batches(x0, x1, *, same_size: bool = False, names=("x0", "x1")) -> tuple[Array, Array]:
  """Two point batches ``(batch, d)`` of one dtype and dimension, finite when concrete."""
  dtype = V.common_dtype(x0, x1)
  x0 = V.check_points(names[0], x0, dtype)
  x1 = V.check_points(names[1], x1, dtype)
  if x0.shape[1] != x1.shape[1]:
    raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same dimension; got "
                     f"{x0.shape[1]} and {x1.shape[1]}.")
  if same_size and x0.shape[0] != x1.shape[0]:
    raise ValueError(f"`{names[0]}` and `{names[1]}` must have the same batch size for this "
                     f"coupling; got {x0.shape[0]} and {x1.shape[0]}. Use "
                     "coupling='sinkhorn' for batches of different sizes.")
  return x0, x1


def default_epsilon(epsilon, path: str, sigma):
  """``ε = 2σ²`` for the Schrödinger bridge path (its entropic plan), else torchcfm's ``0.05``."""
  if epsilon is not None:
    return epsilon
  if path == "schrodinger_bridge":
    return 2.0 * jnp.square(sigma)
  return DEFAULT_EPSILON


def exact_permutation(x0: Array, x1: Array) -> tuple[Array, Array]:
  """The optimal assignment ``σ`` of ``‖x0_i − x1_σ(i)‖²`` (uniform equal batches) and the
  solve's result code.

  The host's solver on CPU (given the points: the costs are made on the host), the in-graph
  search elsewhere; no dual recovery (only the permutation is needed). Batched by ``vmap`` into
  one host call.
  """
  x0, x1 = jax.lax.stop_gradient(x0), jax.lax.stop_gradient(x1)
  out = _minibatch.assign_pair(x0, x1, SqEuclidean(), _assignment.resolve_method("auto"),
                               duals=False)
  return out.perm, out.result


def _plan_pairs(key: Array, x0: Array, x1: Array, epsilon: Array, tau, solver, count: int):
  """``count`` index pairs drawn with replacement from the entropic plan (uniform weights)."""
  x0, x1 = jax.lax.stop_gradient(x0), jax.lax.stop_gradient(x1)
  cost = SqEuclidean().pairwise(x0, x1)
  out = solve(CostMatrix(cost), epsilon=epsilon, tau_a=tau[0], tau_b=tau[1], solver=solver)
  logits = (out.f[:, None] + out.g[None, :] - cost) / out.epsilon
  ok = jnp.all(jnp.isfinite(logits))
  # A failed solve (reported in the result code) falls back to the independent coupling.
  logits = jnp.where(ok, logits, 0.0).reshape(-1)
  flat = sample_categorical(key, logits, count)
  result = jnp.where(ok, out.result, Result.NON_FINITE)
  return flat // x1.shape[0], flat % x1.shape[0], result


def sample_categorical(key: Array, logits: Array, count: int) -> Array:
  """``count`` draws with replacement from ``softmax(logits)`` by inverting its cumulative sum:
  ``O(len(logits))`` memory (``jax.random.categorical`` draws a Gumbel number per category and
  per sample)."""
  cdf = jnp.cumsum(jnp.exp(logits - jnp.max(logits)))
  u = jax.random.uniform(key, (count,), cdf.dtype) * cdf[-1]
  return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), logits.shape[0] - 1)


def check_tau(tau, dtype) -> tuple[Array, Array]:
  """``tau`` as a pair ``(tau_a, tau_b)`` in ``(0, 1]``."""
  if not isinstance(tau, (tuple, list)):
    tau = V.check_tau("tau", tau, dtype)
    return tau, tau
  if len(tau) != 2:
    raise ValueError(f"`tau` must be a number or a pair (tau_a, tau_b); got {tau!r}.")
  return V.check_tau("tau_a", tau[0], dtype), V.check_tau("tau_b", tau[1], dtype)


def couple_checked(key: Array, x0: Array, x1: Array, method: str, epsilon, tau, solver):
  """:func:`couple` on checked arguments; returns the pairs and a result code."""
  converged = jnp.asarray(Result.CONVERGED, jnp.int32)
  if method == "paired":
    return x0, x1, converged
  if method == "independent":
    return x0, x1[jax.random.permutation(key, x1.shape[0])], converged
  if method == "exact":
    perm, result = exact_permutation(x0, x1)
    return x0, x1[perm], result
  i, j, result = _plan_pairs(key, x0, x1, epsilon, tau, solver, x0.shape[0])
  return x0[i], x1[j], result


def check_coupling_options(method: str, epsilon, tau, solver, dtype, name: str = "coupling"):
  """Validates the options of a coupling; returns ``(epsilon, tau, solver)`` for it."""
  V.check_choice(name, method, COUPLINGS)
  if method not in ENTROPIC:
    return None, None, None
  epsilon = V.check_positive("epsilon", DEFAULT_EPSILON if epsilon is None else epsilon, dtype)
  tau = check_tau(tau if method == "unbalanced" else 1.0, dtype)
  solver = check_solver(Sinkhorn() if solver is None else solver)
  return epsilon, tau, solver


def couple(key, x0, x1, *, method="exact", epsilon=None, tau=0.9, solver=None,
           return_result=False):
  """Pairs two mini-batches by an optimal transport coupling (OT-CFM and its variants).

  Args:
    key: a PRNG key (the random draws of ``"sinkhorn"``, ``"unbalanced"``, ``"independent"``).
    x0: source batch ``(batch, d)``.
    x1: target batch ``(batch, d)`` (``(m, d)`` with ``m ≠ batch`` for the entropic methods).
    method: static; ``"exact"`` (default), ``"sinkhorn"``, ``"unbalanced"``, ``"independent"``
      or ``"paired"`` (see the module notes).
    epsilon: entropic regularisation of ``"sinkhorn"``/``"unbalanced"`` in units of the cost
      ``‖x0 − x1‖²`` (traced); default ``0.05`` (torchcfm's ``reg``). For SB-CFM use ``2σ²``.
    tau: ``"unbalanced"`` only: marginal relaxation in ``(0, 1]``, or a pair
      ``(tau_a, tau_b)``; ``ρ = ε τ / (1 − τ)`` is the weight of the KL marginal penalties
      (torchcfm's ``reg_m = ρ``). Default ``0.9``.
    solver: the :class:`otkit.Sinkhorn` or :class:`otkit.SinkhornNewton` of the entropic
      methods (default ``otkit.Sinkhorn()``).
    return_result: also return the solve's :class:`otkit.Result` code (an entropic solve that
      failed falls back to the independent coupling and reports ``NON_FINITE``).

  Returns:
    ``(x0_paired, x1_paired)``, each ``(batch, d)`` (and the result code if asked): row ``i``
    of both is one pair. Gradients flow to the points (the choice of pairs is a constant).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from otkit import flow_matching as fm
    >>> x0 = jnp.array([[0.0], [1.0], [2.0]]); x1 = jnp.array([[2.1], [0.1], [1.1]])
    >>> p0, p1 = fm.couple(jax.random.key(0), x0, x1)
    >>> bool(jnp.allclose(p1[:, 0], jnp.array([0.1, 1.1, 2.1])))
    True
  """
  key = V.check_key(key)
  V.check_choice("method", method, COUPLINGS)
  x0, x1 = check_batches(x0, x1, same_size=method not in ENTROPIC)
  epsilon, tau, solver = check_coupling_options(method, epsilon, tau, solver, x0.dtype, "method")
  p0, p1, result = _couple(key, x0, x1, epsilon, tau, solver, method=method)
  return (p0, p1, result) if return_result else (p0, p1)


@functools.partial(jax.jit, static_argnames=("method",))
def _couple(key, x0, x1, epsilon, tau, solver, *, method):
  return couple_checked(key, x0, x1, method, epsilon, tau, solver)
