"""Solver objects: the options of an entropic OT solver, validated once.

A solver is a frozen dataclass registered as a pytree: the numbers that may be traced (``tol``,
``anneal_decay``, ``warmup_tol``) are its leaves, so ``grad``/``vmap`` over them work and a new
value does not recompile; the options that shape the program (iteration caps, modes) are static.
:func:`otkit.solve` runs one; every estimator that solves entropic OT inside takes ``solver=``.

The constructor validates; JAX rebuilds a solver from its leaves without re-validating them
(they may be tracers or placeholders).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V

Array = jax.Array
GRAD_MODES = ("implicit", "unroll", "envelope")
ANNEAL = ("auto", True, False)


def _register(cls, data: tuple[str, ...]):
  """Registers a frozen dataclass as a pytree whose leaves are the fields ``data``."""
  meta = tuple(f.name for f in dataclasses.fields(cls) if f.name not in data)

  def flatten(obj):
    return [getattr(obj, k) for k in data], tuple(getattr(obj, k) for k in meta)

  def unflatten(aux, leaves):
    obj = object.__new__(cls)
    for k, v in (*zip(meta, aux), *zip(data, leaves)):
      object.__setattr__(obj, k, v)
    return obj

  jax.tree_util.register_pytree_node(cls, flatten, unflatten)
  return cls


def _number(name: str, value: Any, low: float, high: float | None = None, *,
            allow_none: bool = False, closed_low: bool = False):
  """Checks a traceable scalar option when its value is known; returns it unchanged."""
  if value is None and allow_none:
    return None
  if isinstance(value, bool) or value is None:
    raise ValueError(f"`{name}` must be a number; got {value!r}.")
  values = V.concrete_values(value)
  if values is None:
    return value
  if values.shape != () or not (np.issubdtype(values.dtype, np.integer)
                                or np.issubdtype(values.dtype, np.floating)):
    raise ValueError(f"`{name}` must be a scalar number; got {value!r}.")
  v = float(values)
  above = v >= low if closed_low else v > low
  if not (math.isfinite(v) and above and (high is None or v < high)):
    bounds = f"{'[' if closed_low else '('}{low}, {'∞' if high is None else high})"
    raise ValueError(f"`{name}` must lie in {bounds}; got {v!r}.")
  return value


def _anneal(anneal):
  if not any(anneal is choice or (isinstance(choice, str) and anneal == choice)
             for choice in ANNEAL):
    raise ValueError(f"`anneal` must be 'auto', True or False; got {anneal!r}.")
  return anneal


@dataclasses.dataclass(frozen=True)
class Sinkhorn:
  """Log-domain Sinkhorn: the options of :func:`otkit.solve` (and of :func:`otkit.sinkhorn`).

  Args:
    tol: tolerance on the L1 violation of both marginal conditions (rows plus columns), checked
      every sweep at the target ε (traced). Default ``1e-3``.
    max_iters: static cap on sweeps (annealing sweeps included). The loop also stops, with
      ``result = STALLED``, at the precision floor of the dtype (float32 at small ε): 300
      sweeps at the target ε without a 1 % gain on the best error while the potentials move by
      no more than rounding. A long plateau on which the potentials still drift is not a floor.
    anneal: ``"auto"`` (anneal when ``ε ≤ 3e-3 × mean cost`` and no warm start is given),
      ``True`` or ``False``. Annealing starts at ``ε₀ = max C`` and multiplies ε by
      ``anneal_decay`` each sweep until it reaches ``epsilon``, then iterates there until ``tol``.
    anneal_decay: the geometric factor of the annealing schedule in ``(0, 1)`` (traced).
    fixed_iters: static; if set, exactly this many sweeps with no early exit (a ``lax.scan``):
      predictable cost for large ``vmap`` batches. ``result`` still reports ``tol``.
    grad_mode: ``"implicit"`` (default; implicit function theorem, one matrix-free CG solve at the
      optimum), ``"unroll"`` (backpropagates through up to ``max_iters`` sweeps; the mode for
      ``jax.hessian`` and other higher derivatives) or ``"envelope"`` (potentials treated as
      constants: exact first derivatives of ``value`` by Danskin's theorem, no solve).
      ``"implicit"`` is a reverse-mode rule (``jax.custom_vjp``): ``jax.grad``/``jax.vjp`` only;
      ``jax.jvp`` needs ``"unroll"`` or ``"envelope"``.
    cg_maxiter: static cap on conjugate-gradient iterations in the implicit backward pass.

  References:
    Cuturi, "Sinkhorn Distances", NeurIPS 2013; Schmitzer, "Stabilized Sparse Scaling
    Algorithms for Entropy Regularized Transport Problems", SIAM J. Sci. Comput. 2019.

  Example:
    >>> import jax, otkit
    >>> x = jax.random.normal(jax.random.key(0), (64, 2))
    >>> solver = otkit.Sinkhorn(tol=1e-4, max_iters=5000)
    >>> out = otkit.solve(otkit.PointCloud(x, x + 1.0), epsilon=0.05, solver=solver)
    >>> bool(out.converged)
    True
  """

  tol: Any = 1e-3
  max_iters: int = 2000
  anneal: bool | str = "auto"
  anneal_decay: Any = 0.5
  fixed_iters: int | None = None
  grad_mode: str = "implicit"
  cg_maxiter: int = 500

  def __post_init__(self):
    _number("tol", self.tol, 0.0)
    V.check_static_int("max_iters", self.max_iters)
    _anneal(self.anneal)
    _number("anneal_decay", self.anneal_decay, 0.0, 1.0)
    if self.fixed_iters is not None:
      V.check_static_int("fixed_iters", self.fixed_iters)
    V.check_choice("grad_mode", self.grad_mode, GRAD_MODES)
    V.check_static_int("cg_maxiter", self.cg_maxiter)

  def tol_for(self, dtype) -> Array:
    """``tol`` as an array of ``dtype``."""
    return jnp.asarray(self.tol, dtype)


def newton_default_tol(dtype) -> float:
  """``finfo(dtype).eps ** 0.6``: about 4e-10 in float64, 7e-5 in float32."""
  return float(jnp.finfo(dtype).eps) ** 0.6


@dataclasses.dataclass(frozen=True)
class SinkhornNewton:
  """Sinkhorn–Newton–Sparse (SNS): the options of :func:`otkit.solve` for high accuracy.

  Sinkhorn sweeps until the marginal error is below ``warmup_tol``, then Newton steps on the
  concave dual with a sparsified Hessian (see :func:`otkit.sinkhorn_newton`).

  Args:
    tol: tolerance on the L1 marginal error (traced); ``None`` (default) is
      ``finfo(dtype).eps ** 0.6`` (4e-10 in float64, 7e-5 in float32). When rounding keeps the
      error above ``tol`` the solver stops after 18 iterations without a 1 % gain with
      ``result = STALLED``.
    warmup_iters: static cap on the Sinkhorn sweeps of stage 1, ``≥ 0``.
    warmup_tol: stage 1 ends once the error is at most ``max(tol, warmup_tol)`` (traced).
    density: static; the sparse Hessian keeps ``⌈density · max(n, m)⌉`` entries of the plan.
    max_newton_iters: static cap on stage-2 iterations (Newton steps and fall-back sweeps).
    anneal, anneal_decay: ε-annealing of the stage-1 sweeps, as in :class:`Sinkhorn`.
    grad_mode: as in :class:`Sinkhorn`.
    newton_cg_maxiter: static cap on CG iterations per Newton direction.
    cg_maxiter: static cap on CG iterations in the implicit backward pass.

  References:
    Tang et al., "Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024.

  Example:
    >>> import jax, otkit
    >>> C = jax.random.uniform(jax.random.key(0), (200, 200))
    >>> out = otkit.solve(otkit.CostMatrix(C), epsilon=1e-3, solver=otkit.SinkhornNewton(tol=1e-4))
    >>> bool(out.converged), int(out.n_iters) < 60
    (True, True)
  """

  tol: Any = None
  warmup_iters: int = 1000
  warmup_tol: Any = 0.05
  density: float = 10.0
  max_newton_iters: int = 500
  anneal: bool | str = "auto"
  anneal_decay: Any = 0.5
  grad_mode: str = "implicit"
  newton_cg_maxiter: int = 500
  cg_maxiter: int = 500

  def __post_init__(self):
    _number("tol", self.tol, 0.0, allow_none=True)
    V.check_static_int("warmup_iters", self.warmup_iters, minimum=0)
    _number("warmup_tol", self.warmup_tol, 0.0, closed_low=True)
    if (isinstance(self.density, bool)
        or not isinstance(self.density, (int, float, np.integer, np.floating))
        or not (math.isfinite(float(self.density)) and float(self.density) > 0)):
      raise ValueError(f"`density` must be a finite number > 0, e.g. 5 (keeps 5·max(n, m) "
                       f"entries of the plan); got {self.density!r}.")
    object.__setattr__(self, "density", float(self.density))
    V.check_static_int("max_newton_iters", self.max_newton_iters)
    _anneal(self.anneal)
    _number("anneal_decay", self.anneal_decay, 0.0, 1.0)
    V.check_choice("grad_mode", self.grad_mode, GRAD_MODES)
    V.check_static_int("newton_cg_maxiter", self.newton_cg_maxiter)
    V.check_static_int("cg_maxiter", self.cg_maxiter)

  def tol_for(self, dtype) -> Array:
    """``tol`` as an array of ``dtype`` (``finfo(dtype).eps ** 0.6`` when ``None``)."""
    return jnp.asarray(newton_default_tol(dtype) if self.tol is None else self.tol, dtype)


_register(Sinkhorn, ("tol", "anneal_decay"))
_register(SinkhornNewton, ("tol", "warmup_tol", "anneal_decay"))
SOLVERS = (Sinkhorn, SinkhornNewton)


def check_solver(solver, name: str = "solver"):
  """``solver`` if it is an otkit solver object; ``None`` gives ``Sinkhorn()``."""
  if solver is None:
    return Sinkhorn()
  if not isinstance(solver, SOLVERS):
    raise ValueError(f"`{name}` must be an otkit solver object (otkit.Sinkhorn(...) or "
                     f"otkit.SinkhornNewton(...)); got {type(solver).__name__}.")
  return solver
