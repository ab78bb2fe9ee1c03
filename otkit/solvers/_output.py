"""Result codes, the result of an entropic OT solve, and the readable check of any otkit output.

Every iterative output of otkit carries ``result``, a small integer code (:class:`Result`), and
``converged == (result == Result.CONVERGED)``. Composite outputs (a divergence, OTDD, a flow,
a mini-batch estimate) carry the worst code of their parts (:func:`combine_results`).
"""

from __future__ import annotations

import dataclasses
import enum

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V

Array = jax.Array


class Result(enum.IntEnum):
  """Why an iterative solver stopped; larger codes are worse (see :func:`combine_results`).

  Attributes:
    CONVERGED: the stopping criterion (``tol``) was met with finite iterates.
    STALLED: the error stopped improving above ``tol``: the floor of the floating-point precision
      (float32 at small ε), or a problem the method cannot make progress on. ``error`` is the
      accuracy reached.
    MAX_ITERS: the iteration cap was reached before ``tol``.
    NON_FINITE: an iterate or the value became NaN or infinite (the last finite iterate is
      returned), e.g. a run stopped by the cap before an ε-annealing schedule ended.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> x = jnp.linspace(0.0, 1.0, 5)[:, None]
    >>> out = otkit.sinkhorn(otkit.PointCloud(x, x + 0.5), epsilon=0.1, max_iters=1)
    >>> otkit.Result(int(out.result)).name
    'MAX_ITERS'
  """

  CONVERGED = 0
  STALLED = 1
  MAX_ITERS = 2
  NON_FINITE = 3


_ADVICE = {
    Result.STALLED: "the error stopped improving (the precision floor of the dtype at this ε): "
                    "use float64, a larger `epsilon`, a looser `tol`, or otkit.SinkhornNewton",
    Result.MAX_ITERS: "the iteration cap was reached: increase `max_iters`, loosen `tol`, or "
                      "increase `epsilon`",
    Result.NON_FINITE: "an iterate or the value became NaN or infinite: check the inputs "
                       "(costs, weights), try a larger `epsilon` or a larger `max_iters`",
}


def combine_results(*results: Array) -> Array:
  """The worst of several result codes, elementwise (``CONVERGED`` only if all converged).

  Args:
    *results: integer code arrays of broadcastable shapes.

  Returns:
    ``int32`` array of the broadcast shape.

  Example:
    >>> import otkit
    >>> int(otkit.combine_results(otkit.Result.CONVERGED, otkit.Result.MAX_ITERS))
    2
  """
  codes = [_check_codes(r) for r in results]
  try:
    jnp.broadcast_shapes(*(jnp.shape(c) for c in codes))
  except ValueError as err:
    raise ValueError(f"`results` must have broadcastable shapes ({err}).") from None
  out = jnp.asarray(Result.CONVERGED, jnp.int32)
  for c in codes:
    out = jnp.maximum(out, c)
  return out


def _check_codes(r) -> Array:
  """An integer array of result codes, each one of :class:`Result` when known."""
  try:
    arr = jnp.asarray(r)
  except TypeError as err:
    raise ValueError(f"`results` must be integer result codes (otkit.Result); got "
                     f"{type(r).__name__}.") from err
  if not jnp.issubdtype(arr.dtype, jnp.integer):
    raise ValueError(f"`results` must be integer result codes (otkit.Result); got dtype "
                     f"{arr.dtype}.")
  if V.is_concrete(arr) and arr.size:
    values = np.asarray(arr)
    if values.min() < min(Result) or values.max() > max(Result):
      raise ValueError(f"`results` must be codes of otkit.Result ({int(min(Result))}..."
                       f"{int(max(Result))}); got values in [{values.min()}, {values.max()}].")
  return arr.astype(jnp.int32)


def reduce_result(result: Array) -> Array:
  """The worst code over every entry of ``result`` (a scalar), e.g. over a batch of problems."""
  return jnp.max(jnp.asarray(result, jnp.int32))


def result_code(converged: Array, failed: Array, stalled: Array) -> Array:
  """The code of a solver that stopped: converged, else non-finite, stalled or at its cap."""
  return jnp.where(converged, Result.CONVERGED,
                   jnp.where(failed, Result.NON_FINITE,
                             jnp.where(stalled, Result.STALLED, Result.MAX_ITERS))).astype(jnp.int32)


def finite_result(*values: Array) -> Array:
  """``CONVERGED`` if every value is finite, else ``NON_FINITE`` (for non-iterative outputs)."""
  ok = jnp.asarray(True)
  for v in values:
    ok = ok & jnp.all(jnp.isfinite(v))
  return jnp.where(ok, Result.CONVERGED, Result.NON_FINITE).astype(jnp.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SinkhornOutput:
  """Dual potentials and diagnostics of an entropic OT problem (a pytree).

  Attributes:
    f: source potential, shape ``(n,)``.
    g: target potential, shape ``(m,)``.
    value: the regularised objective (the dual value, equal to the primal one at the optimum).
    result: why the solver stopped, an ``int32`` :class:`Result` code.
    n_iters: Sinkhorn sweeps (and Newton steps, for second-order solvers) performed.
    error: L1 violation of the two marginal conditions (rows plus columns) at the returned potentials.
    a, b: the weights the problem was solved with, shapes ``(n,)`` and ``(m,)``.
    epsilon, tau_a, tau_b: the scalars the problem was solved with.
    fingerprint: a cheap identity of the geometry (a few of its entries), which
      :func:`otkit.transport_plan` and friends compare eagerly to catch a different geometry of
      the same shape.

  The plan is ``P_ij = a_i b_j exp((f_i + g_j − C_ij) / ε)``: see :func:`otkit.transport_plan`.
  """

  f: Array
  g: Array
  value: Array
  result: Array
  n_iters: Array
  error: Array
  a: Array
  b: Array
  epsilon: Array
  tau_a: Array
  tau_b: Array
  fingerprint: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


def converged_of(out) -> Array:
  """``result == CONVERGED`` for any output with a ``result`` code."""
  return out.result == Result.CONVERGED


def _values(out) -> list:
  names = ("value", "f", "g", "x", "cost", "costs", "upper", "lower")
  found = []
  for name in names:
    v = getattr(out, name, None)
    if v is not None and not callable(v):
      try:
        found.append((name, np.asarray(v)))
      except (TypeError, ValueError):
        pass
  return found


def check(out):
  """Raises a readable ``RuntimeError`` if a solve failed; returns ``out`` unchanged otherwise.

  Accepts every output otkit returns (Sinkhorn, divergence, OTDD, flows, mini-batch, bounds,
  assignment, sliced), possibly batched by ``vmap``, and names the reason (a :class:`Result`)
  in its message. Call it outside ``jax.jit``.

  Args:
    out: an otkit output (a pytree with a ``result`` code).

  Returns:
    ``out``.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> x = jnp.linspace(0.0, 1.0, 4)[:, None]
    >>> out = otkit.check(otkit.sinkhorn(otkit.PointCloud(x, x + 0.5), epsilon=0.1))
    >>> bool(out.converged)
    True
  """
  if not hasattr(out, "result"):
    raise TypeError(f"`out` must be an otkit output (with a `result` code); got "
                    f"{type(out).__name__}.")
  if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(out)):
    raise ValueError("`otkit.check` inspects values: call it outside `jax.jit`.")
  codes = np.atleast_1d(np.asarray(out.result))
  bad = np.flatnonzero(codes != Result.CONVERGED)
  if bad.size == 0:
    for name, v in _values(out):
      if not np.all(np.isfinite(v)):
        raise RuntimeError(f"{type(out).__name__}.{name} is not finite: "
                           f"{_ADVICE[Result.NON_FINITE]}.")
    return out
  first = Result(int(codes[bad[0]]))
  where = f"{bad.size} of {codes.size} problem(s)" if codes.size > 1 else "the problem"
  detail = ""
  error, iters = getattr(out, "error", None), getattr(out, "n_iters", None)
  if error is not None and iters is not None and np.size(error) == codes.size:
    e = np.atleast_1d(np.asarray(error)).flat[bad[0]]
    it = np.atleast_1d(np.asarray(iters)).flat[bad[0]]
    detail = f" (marginal error {e:.3g} after {it} iterations)"
  raise RuntimeError(f"{type(out).__name__}: {where} stopped with {first.name}{detail}: "
                     f"{_ADVICE[first]}.")
