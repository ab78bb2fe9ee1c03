"""Wasserstein gradient flows of particle systems, as one compiled ``lax.scan``.

The flow ``∂_t ρ = ∇·(ρ ∇ δF/δρ)`` of a functional ``F`` moves each particle of
``ρ = (1/n) Σ_i δ_{x_i}`` with velocity ``−∇ δF/δρ (x_i) = −n ∇_{x_i} F̂(x_1..x_n)``, the
gradient of the empirical functional ``F̂`` (weights ``1/n``) times ``n``. Forward Euler with
step ``τ``:

  ``x_i ← x_i − τ · n · ∇_{x_i} F̂(x)``   (+ ``√(2τβ) ξ_i`` for an entropy term at temperature β).

The whole flow (every step, the saved frames, the values of ``F`` and the stopping rule on
``|ΔF|``) is one jitted program: a scan over frames of a scan over steps. An optax optimiser may
replace the plain step (``x ← x + τ · update(n ∇F̂)``; ``optax.sgd(1.0)`` is forward Euler).

References:
  Jordan, Kinderlehrer, Otto, "The variational formulation of the Fokker–Planck equation",
  SIAM J. Math. Anal. 1998.
  Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021
  (the particle scheme, its defaults and the stopping rule).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.flows._energies import as_energy
from otkit.solvers._output import Result

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlowOutput:
  """Result of :func:`gradient_flow` (a pytree).

  Attributes:
    frames: saved particles, shape ``(k, n, d)``: frame 0 is ``x0``, then every
      ``save_every``-th step, and the last frame is always the final state.
    steps: the step index of each frame, shape ``(k,)``.
    values: ``F`` at every step ``x_0 … x_N``, shape ``(n_steps + 1,)`` (constant after a stop).
    n_steps: steps actually taken (fewer than asked when the flow stopped or failed).
    stopped: whether the stopping rule ``|F(x_k) − F(x_{k−1})| <= tol`` ended the flow.
    failed: whether a step met a non-finite value, gradient or update; the flow then keeps the
      last finite particles (no NaN is returned).
    result: an ``int32`` :class:`otkit.Result` code: ``NON_FINITE`` if the flow failed,
      ``MAX_ITERS`` if a stopping ``tol`` was given and ``n_steps`` ran out first, else
      ``CONVERGED`` (every step taken, or stopped by ``tol``).
  """

  frames: Array
  steps: Array
  values: Array
  n_steps: Array
  stopped: Array
  failed: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED

  @property
  def x(self) -> Array:
    """The final particles ``(n, d)`` (the last frame)."""
    return self.frames[..., -1, :, :]


class FlowState(NamedTuple):
  """Loop state: particles, optimiser and energy state, ``F`` at ``x``'s predecessor, counters."""

  x: Any
  opt_state: Any
  energy_state: Any
  value: Array
  it: Array
  stopped: Array
  failed: Array
  key: Array | None  # None when no noise is drawn


def _where(cond: Array, new, old):
  return jax.tree.map(lambda a, b: jnp.where(cond, a, b), new, old)


def flow_step(energy, scale: Callable, optimizer, step_size: Array, temperature: Array,
              tol: Array, noise: bool, state: FlowState, last: Array) -> tuple[FlowState, Array]:
  """One explicit step from ``state.x``; returns the new state and ``F(state.x)``.

  ``scale(x, grad)`` turns the gradient of ``F̂`` into the Wasserstein gradient (``n ∇F̂`` for
  particles). The step is refused (the state kept, flagged) when ``|ΔF| <= tol`` (stopped) or
  when anything is non-finite (failed); with ``last`` only ``F`` is evaluated.
  """
  (value, energy_state), grad = jax.value_and_grad(energy.evaluate, has_aux=True)(
      state.x, state.energy_state)
  direction = scale(state.x, grad)
  if optimizer is None:
    updates, opt_state = jax.tree.map(jnp.negative, direction), state.opt_state
  else:
    updates, opt_state = optimizer.update(direction, state.opt_state, state.x)
  x = jax.tree.map(lambda p, u: p + (step_size * u).astype(p.dtype), state.x, updates)
  key = state.key
  if noise:
    key, sub = jax.random.split(key)
    leaves, tree = jax.tree.flatten(x)
    spread = jnp.sqrt(2.0 * step_size * temperature)
    leaves = [p + (spread * jax.random.normal(k, p.shape, p.dtype)).astype(p.dtype)
              for p, k in zip(leaves, jax.random.split(sub, len(leaves)))]
    x = jax.tree.unflatten(tree, leaves)
  finite_value = jnp.isfinite(value)
  finite_x = functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(p))
                                                for p in jax.tree.leaves(x)])
  failed = ~finite_value | (~finite_x & ~last)
  stop = (state.it > 0) & (jnp.abs(value - state.value) <= tol) & ~failed
  value = jnp.where(finite_value, value, state.value)
  move = ~failed & ~stop & ~last
  moved = FlowState(x, opt_state, energy_state, value, state.it + 1, stop, failed, key)
  kept = state._replace(value=value, stopped=stop, failed=failed)
  return _where(move, moved, kept), value


def run_flow(energy, x0, scale: Callable, optimizer, step_size, temperature, tol, key, *,
             n_steps: int, save_every: int, noise: bool, progress: bool):
  """The scan behind :func:`gradient_flow` (and the dataset flows); call it inside ``jit``.

  One ``lax.scan`` of ``n_steps + 1`` iterations (the last one only evaluates ``F(x_N)``); the
  frames are written in place into a buffer carried by the scan. Returns ``(frames, steps,
  values, n_taken, stopped, failed)``; ``frames`` is a pytree like ``x0`` with a leading frame
  axis. ``key`` is only used with ``noise`` (it may be ``None`` otherwise); the result code of
  the flow is :func:`flow_result`.
  """
  steps = np.arange(0, n_steps + 1, save_every)
  if steps[-1] != n_steps:
    steps = np.append(steps, n_steps)
  n_frames = len(steps)
  slot_of = np.full(n_steps + 2, n_frames, np.int32)  # slot n_frames is a scratch frame
  slot_of[steps] = np.arange(n_frames)

  opt_state = () if optimizer is None else optimizer.init(x0)
  value0 = jnp.zeros((), jax.tree.leaves(x0)[0].dtype)
  state = FlowState(x0, opt_state, energy.init(x0), value0, jnp.asarray(0, jnp.int32),
                    jnp.asarray(False), jnp.asarray(False), key)
  frames = jax.tree.map(
      lambda p: jnp.zeros((n_frames + 1,) + p.shape, p.dtype).at[0].set(p), x0)
  step = functools.partial(flow_step, energy, scale, optimizer, step_size, temperature, tol, noise)

  def body(carry, inputs):
    state, frames = carry
    j, slot = inputs
    done = state.stopped | state.failed
    state, value = jax.lax.cond(done, lambda s, _: (s, s.value), step, state, j == n_steps)
    frames = jax.tree.map(lambda f, p: jax.lax.dynamic_update_index_in_dim(f, p, slot, 0),
                          frames, state.x)
    if progress:
      jax.lax.cond(slot < n_frames,
                   lambda: jax.debug.callback(_report_progress, j + 1, n_steps, value),
                   lambda: None)
    return (state, frames), value

  slots = jnp.asarray(slot_of[1:n_steps + 2])
  (state, frames), values = jax.lax.scan(body, (state, frames),
                                         (jnp.arange(n_steps + 1), slots))
  frames = jax.tree.map(lambda f: f[:n_frames], frames)
  return frames, jnp.asarray(steps), values, state.it, state.stopped, state.failed


_BAR: dict = {}


def _report_progress(it, total, value) -> None:
  """Host side of ``progress=True``: a tqdm bar if tqdm is installed, else a printed line."""
  it, value = int(np.max(it)), float(np.mean(value))
  try:
    from tqdm.auto import tqdm
  except ImportError:  # pragma: no cover
    print(f"flow step {it}/{total}: F = {value:.6g}", flush=True)
    return
  bar = _BAR.get("bar")
  if bar is None or bar.n > it:
    bar = _BAR["bar"] = tqdm(total=int(total), desc="gradient flow", leave=False)
  bar.update(it - bar.n)
  bar.set_postfix(F=f"{value:.4g}")
  if it >= total:
    bar.close()
    _BAR.pop("bar", None)


def flow_result(stopped: Array, failed: Array, tol: Array) -> Array:
  """The :class:`otkit.Result` code of a flow: ``NON_FINITE`` if it failed, ``MAX_ITERS`` if a
  stopping ``tol`` (``>= 0``; ``check_tol`` encodes none as ``−1``) was not met, else
  ``CONVERGED``."""
  missed = (tol >= 0) & ~stopped
  return jnp.where(failed, Result.NON_FINITE,
                   jnp.where(missed, Result.MAX_ITERS, Result.CONVERGED)).astype(jnp.int32)


def particle_scale(x: Array, grad: Array) -> Array:
  """The Wasserstein gradient of an empirical functional: ``n ∇F̂``."""
  return grad * x.shape[0]


@functools.partial(jax.jit, static_argnames=("n_steps", "save_every", "optimizer", "noise",
                                             "progress"))
def _gradient_flow(energy, x0, step_size, temperature, tol, key, *, n_steps, save_every,
                   optimizer, noise, progress):
  frames, steps, values, taken, stopped, failed = run_flow(
      energy, x0, particle_scale, optimizer, step_size, temperature, tol, key,
      n_steps=n_steps, save_every=save_every, noise=noise, progress=progress)
  return FlowOutput(frames=frames, steps=steps, values=values, n_steps=taken, stopped=stopped,
                    failed=failed, result=flow_result(stopped, failed, tol))


# ---------------------------------------------------------------------------------------------
# Validation


def check_step_size(step_size, dtype) -> Array:
  return V.check_positive("step_size", step_size, dtype)


def check_optimizer(optimizer):
  if optimizer is None:
    return None
  if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update",
                                                                          None))):
    raise ValueError(f"`optimizer` must be an optax GradientTransformation (with `init` and "
                     f"`update`), e.g. `optax.adam(1.0)`; got {type(optimizer).__name__}.")
  return optimizer


def check_noise(temperature, key, dtype) -> tuple[Array, Array | None, bool]:
  """``(temperature, key, noise)``: Langevin noise is drawn from the caller's ``key``, which is
  then required (there is no default key); without noise the key is ``None``."""
  beta = V.check_nonnegative("temperature", temperature, dtype)
  if key is None:
    v = V.concrete_values(temperature)
    if v is None or float(v) != 0.0:
      raise ValueError("`key` is required when `temperature` > 0 (or traced): a Langevin flow "
                       "draws noise; pass a PRNG `key` (`jax.random.key(seed)`).")
    return beta, None, False
  return beta, V.check_key(key), True


def check_tol(tol, dtype) -> Array:
  if tol is None:
    return jnp.asarray(-1.0, dtype)  # |ΔF| >= 0 > −1: never stops
  return V.check_nonnegative("tol", tol, dtype)


# ---------------------------------------------------------------------------------------------
# Public function


def gradient_flow(energy, x0, *, step_size, n_steps, optimizer=None, save_every=1, tol=None,
                  temperature=0.0, key=None, progress=False) -> FlowOutput:
  """Runs the Wasserstein gradient flow of ``energy`` from the particles ``x0``.

  Each step moves every particle by ``−step_size · n · ∇_{x_i} F̂(x)`` (forward Euler), where
  ``F̂ = energy`` is the empirical functional with uniform weights ``1/n``; with ``temperature
  β > 0`` it adds ``√(2 · step_size · β) ξ_i``, ``ξ_i ~ N(0, I)`` (Langevin: the flow of
  ``F + β ∫ρ log ρ``). All ``n_steps`` steps run in one compiled ``lax.scan``; batch several
  flows with ``jax.vmap`` (over ``x0``, ``step_size``, or the arrays inside ``energy``).

  Args:
    energy: an :class:`otkit.flows.Energy` (built by :func:`potential_energy`,
      :func:`interaction_energy`, :func:`sinkhorn_divergence_to`, … and combined with ``+`` and
      ``*``) or a function ``fn(x (n, d)) -> scalar``. Its arrays are traced arguments; its
      functions are static (reuse the same objects to reuse the compiled flow).
    x0: initial particles ``(n, d)``.
    step_size: the time step ``τ > 0`` (traced).
    n_steps: number of steps (static).
    optimizer: ``None`` (forward Euler) or an optax ``GradientTransformation`` fed with the
      Wasserstein gradient ``n ∇F̂``; the step is ``x ← x + step_size · update`` (give the
      optimiser a learning rate of 1, e.g. ``optax.adam(1.0)``; ``optax.sgd(1.0)`` is Euler).
    save_every: keep every ``save_every``-th step as a frame (static); the final state is
      always kept.
    tol: stop (and freeze) when ``|F(x_k) − F(x_{k−1})| <= tol`` (traced); ``None`` (default)
      runs every step. The reference code uses ``1e-3``.
    temperature: Langevin temperature ``β >= 0`` (traced); ``β > 0`` needs ``key``.
    key: PRNG key of the Langevin noise, keyword-only; required when ``temperature`` is not
      known to be 0 (a ``ValueError`` otherwise: there is no default key). Unused without
      noise.
    progress: show a progress bar (tqdm if installed) through ``jax.debug.callback`` (static).

  Returns:
    :class:`FlowOutput` with ``frames (k, n, d)`` (frame 0 is ``x0``), ``values`` of ``F``
    along the flow, ``n_steps`` taken, ``stopped``, ``failed`` and ``result`` (an
    :class:`otkit.Result` code; ``converged`` is ``result == CONVERGED``).

  References:
    Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.
    Jordan, Kinderlehrer, Otto, "The variational formulation of the Fokker–Planck equation",
    SIAM J. Math. Anal. 1998.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> F = otkit.flows.potential_energy(lambda z: 0.5 * jnp.sum((z - 1.0) ** 2))
    >>> out = otkit.flows.gradient_flow(F, jnp.zeros((3, 2)), step_size=0.5, n_steps=4)
    >>> out.frames.shape, float(out.frames[-1, 0, 0])  # 1 − (1 − 0.5)⁴
    ((5, 3, 2), 0.9375)
  """
  energy = as_energy(energy)
  x0 = V.check_points("x0", x0)
  dtype = x0.dtype
  energy.check(x0)
  n_steps = V.check_static_int("n_steps", n_steps)
  save_every = V.check_static_int("save_every", save_every)
  optimizer = check_optimizer(optimizer)
  temperature, key, noise = check_noise(temperature, key, dtype)
  return _gradient_flow(energy, x0, check_step_size(step_size, dtype), temperature,
                        check_tol(tol, dtype), key, n_steps=n_steps,
                        save_every=min(save_every, n_steps), optimizer=optimizer, noise=noise,
                        progress=bool(progress))
