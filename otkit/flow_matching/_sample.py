"""Integration of a learned flow ``dx/dt = v(t, x)`` by fixed-step Runge–Kutta schemes.

The whole integration is one ``lax.scan`` (compiled once, differentiable, batched by ``vmap``).
Euler is first order, Heun (explicit trapezoidal) second and the classical Runge–Kutta scheme
fourth; a straight flow (OT-CFM) is integrated exactly by one Euler step.

References:
  Hairer, Nørsett, Wanner, "Solving Ordinary Differential Equations I", Springer 1993.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from otkit import _validation as V
from otkit.flow_matching._loss import check_velocity_fn

Array = jax.Array
METHODS = ("euler", "heun", "rk4")


def _times(t: Array, x: Array) -> Array:
  return jnp.broadcast_to(t, x.shape[:1])


def step(velocity_fn, method: str, t: Array, x: Array, h: Array) -> Array:
  """One step of ``method`` from ``(t, x)`` of length ``h``."""
  f = lambda s, y: velocity_fn(_times(s, y), y)
  k1 = f(t, x)
  if method == "euler":
    return x + h * k1
  if method == "heun":
    k2 = f(t + h, x + h * k1)
    return x + 0.5 * h * (k1 + k2)
  k2 = f(t + 0.5 * h, x + 0.5 * h * k1)
  k3 = f(t + 0.5 * h, x + 0.5 * h * k2)
  k4 = f(t + h, x + h * k3)
  return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(velocity_fn, x0: Array, t0: Array, t1: Array, *, n_steps: int, method: str,
              save_every: int | None):
  """The scan behind :func:`sample` (no checks)."""
  h = (t1 - t0) / n_steps

  def body(x, i):
    x = step(velocity_fn, method, t0 + i * h, x, h)
    return x, x if save_every else None

  x, path = jax.lax.scan(body, x0, jnp.arange(n_steps, dtype=x0.dtype))
  if not save_every:
    return x
  return jnp.concatenate([x0[None], path[save_every - 1::save_every]])


def sample(velocity_fn, x0, *, n_steps=10, method="euler", save_every=None, t0=0.0, t1=1.0):
  """Pushes ``x0`` along the flow of ``velocity_fn`` from ``t0`` to ``t1``.

  Args:
    velocity_fn: ``v(t, x)`` with ``t (batch,)`` and ``x (batch, d)`` returning ``(batch, d)``;
      a flax ``nnx.Module`` is compiled once per structure (its parameters are arguments).
    x0: starting points ``(batch, d)``.
    n_steps: static number of steps (``≥ 1``).
    method: static; ``"euler"`` (default), ``"heun"`` or ``"rk4"``.
    save_every: static; ``None`` returns the end points only, ``k`` the trajectory every ``k``
      steps, starting point included.
    t0, t1: start and end times (traced); ``t1 < t0`` integrates backwards.

  Returns:
    ``(batch, d)`` end points, or ``(1 + n_steps // save_every, batch, d)`` with ``save_every``.

  Example:
    >>> import jax.numpy as jnp
    >>> from otkit import flow_matching as fm
    >>> x1 = fm.sample(lambda t, x: -x, jnp.ones((1, 1)), n_steps=20, method="rk4")
    >>> round(float(x1[0, 0]), 6) == round(float(jnp.exp(-1.0)), 6)
    True
  """
  velocity_fn = check_velocity_fn(velocity_fn)
  x0 = V.check_points("x0", x0)
  n_steps = V.check_static_int("n_steps", n_steps)
  V.check_choice("method", method, METHODS)
  if save_every is not None:
    save_every = V.check_static_int("save_every", save_every)
  t0 = V.as_float_array("t0", t0, x0.dtype)
  t1 = V.as_float_array("t1", t1, x0.dtype)
  for name, value in (("t0", t0), ("t1", t1)):
    if value.ndim:
      raise ValueError(f"`{name}` must be a scalar; got shape {value.shape}.")
    V.check_finite(name, value)
  options = dict(n_steps=n_steps, method=method, save_every=save_every)
  if isinstance(velocity_fn, nnx.Module):  # compiled once per model structure
    graphdef, state = nnx.split(velocity_fn)
    return _integrate_module(graphdef, state, x0, t0, t1, **options)
  return integrate(velocity_fn, x0, t0, t1, **options)


@functools.partial(jax.jit, static_argnames=("graphdef", "n_steps", "method", "save_every"))
def _integrate_module(graphdef, state, x0, t0, t1, **options):
  return integrate(nnx.merge(graphdef, state), x0, t0, t1, **options)
