"""The result of an entropic OT solve, and the readable check of it."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SinkhornOutput:
  """Dual potentials and diagnostics of an entropic OT problem (a pytree).

  Attributes:
    f: source potential, shape ``(n,)``.
    g: target potential, shape ``(m,)``.
    value: the regularised objective (the dual value, equal to the primal one at the optimum).
    converged: whether the L1 marginal error reached ``tol`` at the target ε with finite iterates.
    n_iters: Sinkhorn sweeps (and Newton steps, for second-order solvers) performed.
    error: L1 violation of the two marginal conditions (rows plus columns) at the returned potentials.
    a, b: the weights the problem was solved with, shapes ``(n,)`` and ``(m,)``.
    epsilon, tau_a, tau_b: the scalars the problem was solved with.

  The plan is ``P_ij = a_i b_j exp((f_i + g_j − C_ij) / ε)``: see :func:`otkit.transport_plan`.
  """

  f: Array
  g: Array
  value: Array
  converged: Array
  n_iters: Array
  error: Array
  a: Array
  b: Array
  epsilon: Array
  tau_a: Array
  tau_b: Array


def check(out: SinkhornOutput) -> SinkhornOutput:
  """Raises a readable ``RuntimeError`` if a solve failed; returns ``out`` unchanged otherwise.

  Call it outside ``jit`` on a (possibly batched) :class:`SinkhornOutput`.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> x = jnp.linspace(0.0, 1.0, 5)[:, None]
    >>> out = otkit.check(otkit.sinkhorn(otkit.PointCloud(x, x + 0.5), epsilon=0.1))
    >>> bool(out.converged)
    True
  """
  if isinstance(jax.numpy.asarray(out.f), jax.core.Tracer):
    raise ValueError("`otkit.check` inspects values: call it outside `jax.jit`.")
  converged = np.asarray(out.converged)
  finite = all(np.all(np.isfinite(np.asarray(v))) for v in (out.f, out.g, out.value))
  if not finite:
    raise RuntimeError("The solver returned non-finite potentials or value; check the inputs "
                       "(costs, weights) and try a larger `epsilon`.")
  if not np.all(converged):
    errors = np.atleast_1d(np.asarray(out.error))
    iters = np.atleast_1d(np.asarray(out.n_iters))
    bad = np.flatnonzero(~np.atleast_1d(converged))
    first = bad[0]
    raise RuntimeError(
        f"{bad.size} of {converged.size} problem(s) did not converge: e.g. marginal error "
        f"{errors.flat[first]:.3g} after {iters.flat[first]} iterations. Increase `max_iters`, "
        "loosen `tol`, or increase `epsilon`.")
  return out
