"""Conditional probability paths ``p_t(x | x0, x1)`` and their target velocities ``u_t``.

Each path is Gaussian, ``x_t = μ_t(x0, x1) + σ_t z`` with ``z ~ N(0, I)``, and its conditional
velocity field ``u_t(x | x0, x1)`` generates it: along a sample with fixed ``z``,
``d x_t / dt = u_t(x_t | x0, x1)``. Flow matching regresses ``v_θ(t, x_t)`` on ``u_t``.

- ``"linear"`` (I-CFM, OT-CFM): ``μ_t = (1 − t) x0 + t x1``, ``σ_t = σ``,
  ``u_t = x1 − x0``.
- ``"schrodinger_bridge"`` (SB-CFM): the same ``μ_t``, ``σ_t = σ √(t (1 − t))``,
  ``u_t = (1 − 2t) / (2t (1 − t)) · (x − μ_t) + x1 − x0``.
- ``"target"`` (Lipman's FM): ``x_t = t x1 + (1 − (1 − σ) t) x0``,
  ``u_t = (x1 − (1 − σ) x) / (1 − (1 − σ) t)``.
- ``"variance_preserving"``: ``μ_t = cos(πt/2) x0 + sin(πt/2) x1``, ``σ_t = σ``,
  ``u_t = π/2 · (cos(πt/2) x1 − sin(πt/2) x0)``.

Lipman's path transports ``N(0, I)`` to the data: its source ``x0`` must be standard normal
noise, which plays the role of ``z``. The Schrödinger bridge path is the Brownian bridge of
variance ``σ²`` between ``x0`` and ``x1``; paired by the entropic plan with ``ε = 2σ²``, it
matches the Schrödinger bridge between the two measures (SB-CFM). Its target is singular at
``t ∈ {0, 1}``, so its times are drawn from ``[δ, 1 − δ]`` with ``δ = 1e-4``, given times
outside are refused, and traced ones are clipped to that interval.

References:
  Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling", ICLR 2023.
  Tong et al., "Improving and generalizing flow-based generative models with minibatch optimal
  transport", TMLR 2024 (I-CFM, OT-CFM, SB-CFM).
  Albergo, Vanden-Eijnden, "Building Normalizing Flows with Stochastic Interpolants", ICLR 2023
  (the trigonometric, variance-preserving interpolant).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.flow_matching._couplings import check_batches

Array = jax.Array
PATHS = ("linear", "schrodinger_bridge", "target", "variance_preserving")
BRIDGE_MARGIN = 1e-4


def _column(t: Array, x: Array) -> Array:
  return jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])[:, None]


def path_point(t: Array, x0: Array, x1: Array, noise: Array, path: str, sigma) -> tuple[Array, Array]:
  """``(x_t, u_t)`` of ``path`` at times ``t (batch,)`` for the pairs ``x0, x1`` and the noise
  ``z`` (all ``(batch, d)``); no checks (see :func:`conditional_path`)."""
  s = _column(t, x0)
  sigma = jnp.asarray(sigma, x0.dtype)
  if path == "linear":
    return (1 - s) * x0 + s * x1 + sigma * noise, x1 - x0
  if path == "schrodinger_bridge":  # singular at t ∈ {0, 1}: times are kept in [δ, 1 − δ]
    s = jnp.clip(s, BRIDGE_MARGIN, 1 - BRIDGE_MARGIN)
    mu = (1 - s) * x0 + s * x1
    x = mu + sigma * jnp.sqrt(s * (1 - s)) * noise
    return x, (1 - 2 * s) / (2 * s * (1 - s)) * (x - mu) + x1 - x0
  if path == "target":
    x = s * x1 + (1 - (1 - sigma) * s) * x0
    return x, (x1 - (1 - sigma) * x) / (1 - (1 - sigma) * s)
  angle = 0.5 * jnp.pi * s
  x = jnp.cos(angle) * x0 + jnp.sin(angle) * x1 + sigma * noise
  return x, 0.5 * jnp.pi * (jnp.cos(angle) * x1 - jnp.sin(angle) * x0)


def sample_times(key: Array, batch: int, path: str, dtype) -> Array:
  """``t ~ U[0, 1]`` per sample (``U[δ, 1 − δ]`` for the Schrödinger bridge)."""
  low, high = (BRIDGE_MARGIN, 1 - BRIDGE_MARGIN) if path == "schrodinger_bridge" else (0.0, 1.0)
  return jax.random.uniform(key, (batch,), dtype, low, high)


def draw(key: Array, x0: Array, x1: Array, path: str, sigma, t=None):
  """``(t, x_t, u_t)`` with ``t`` and the noise drawn from ``key`` (``t`` if given)."""
  key_t, key_z = jax.random.split(key)
  if t is None:
    t = sample_times(key_t, x0.shape[0], path, x0.dtype)
  t = jnp.broadcast_to(jnp.asarray(t, x0.dtype), x0.shape[:1])
  noise = jax.random.normal(key_z, x0.shape, x0.dtype)
  return (t, *path_point(t, x0, x1, noise, path, sigma))


def check_path(path: str, sigma, dtype) -> Array:
  """Validates ``path`` and ``σ ≥ 0`` (``σ < 1`` for Lipman's path)."""
  V.check_choice("path", path, PATHS)
  sigma = V.check_nonnegative("sigma", sigma, dtype)
  values = V.concrete_values(sigma)
  if path == "target" and values is not None and values >= 1:
    raise ValueError(f"`sigma` must be < 1 for path='target' (σ_1 = σ is the final width); "
                     f"got {float(values)}.")
  return sigma


def check_times(t, batch: int, dtype, path: str) -> Array | None:
  if t is None:
    return None
  t = V.as_float_array("t", t, dtype)
  if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != batch):
    raise ValueError(f"`t` must be a scalar or have shape ({batch},); got {t.shape}.")
  V.check_finite("t", t)
  values = V.concrete_values(t)
  if values is not None and (np.any(values < 0) or np.any(values > 1)):
    raise ValueError("`t` must lie in [0, 1].")
  low = BRIDGE_MARGIN if path == "schrodinger_bridge" else 0.0
  if values is not None and (np.any(values < low) or np.any(values > 1 - low)):
    raise ValueError(f"`t` must lie in [{low}, {1 - low}] on the Schrödinger bridge path, whose "
                     "target velocity is singular at t = 0 and t = 1.")
  return t


def conditional_path(t, x0, x1, noise, *, path="linear", sigma=0.0):
  """The point ``x_t`` of a conditional path and its target velocity ``u_t`` (module table).

  Deterministic given the noise: ``d x_t / dt = u_t`` along ``t ↦ x_t`` at fixed ``noise``.

  Args:
    t: times, a scalar or ``(batch,)`` in ``[0, 1]``.
    x0, x1: paired source and target points ``(batch, d)``.
    noise: ``z`` of shape ``(batch, d)`` (unused by ``"target"``, whose noise is ``x0``).
    path: static; ``"linear"``, ``"schrodinger_bridge"``, ``"target"`` or
      ``"variance_preserving"``.
    sigma: the noise level ``σ ≥ 0`` (traced).

  Returns:
    ``(x_t, u_t)``, each ``(batch, d)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from otkit import flow_matching as fm
    >>> x0, x1 = jnp.zeros((1, 2)), jnp.ones((1, 2))
    >>> xt, ut = fm.conditional_path(0.25, x0, x1, jnp.zeros((1, 2)))
    >>> xt.tolist(), ut.tolist()
    ([[0.25, 0.25]], [[1.0, 1.0]])
  """
  x0, x1 = check_batches(x0, x1, same_size=True)
  noise = V.as_float_array("noise", noise, x0.dtype)
  if noise.shape != x0.shape:
    raise ValueError(f"`noise` must have the shape of `x0`, {x0.shape}; got {noise.shape}.")
  V.check_finite("noise", noise)
  sigma = check_path(path, sigma, x0.dtype)
  t = check_times(t, x0.shape[0], x0.dtype, path)
  if t is None:
    raise ValueError("`t` is required.")
  return path_point(t, x0, x1, noise, path, sigma)


def sample_path(key, x0, x1, *, path="linear", sigma=0.0, t=None):
  """Draws ``(t, x_t, u_t)``: times ``t ~ U[0, 1]``, a point of the conditional path of each
  pair, and its target velocity (the regression target of flow matching).

  Args:
    key: a PRNG key.
    x0, x1: paired source and target points ``(batch, d)`` (see :func:`couple`).
    path: static; one of :data:`PATHS` (see the module notes).
    sigma: the noise level ``σ ≥ 0`` (traced).
    t: optional times (a scalar or ``(batch,)``) instead of uniform draws.

  Returns:
    ``t (batch,)``, ``x_t (batch, d)``, ``u_t (batch, d)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from otkit import flow_matching as fm
    >>> t, xt, ut = fm.sample_path(jax.random.key(0), jnp.zeros((4, 2)), jnp.ones((4, 2)))
    >>> t.shape, xt.shape, bool(jnp.allclose(xt, t[:, None]))
    ((4,), (4, 2), True)
  """
  key = V.check_key(key)
  x0, x1 = check_batches(x0, x1, same_size=True)
  sigma = check_path(path, sigma, x0.dtype)
  t = check_times(t, x0.shape[0], x0.dtype, path)
  return draw(key, x0, x1, path, sigma, t)
