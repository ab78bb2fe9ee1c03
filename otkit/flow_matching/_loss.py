"""The conditional flow matching loss.

``L(θ) = E_{t, (x0, x1) ~ π, x ~ p_t(· | x0, x1)} ‖v_θ(t, x) − u_t(x | x0, x1)‖²``, estimated on
one mini-batch: the batch is paired by a coupling ``π`` (:func:`couple`), each pair gets a time
and a point of its conditional path (:func:`sample_path`), and the squared error is averaged
over the batch *and* the coordinates (torchcfm's ``mean((v − u)²)``, so values compare with it).

References:
  Lipman et al., "Flow Matching for Generative Modeling", ICLR 2023.
  Tong et al., "Improving and generalizing flow-based generative models with minibatch optimal
  transport", TMLR 2024.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from otkit import _validation as V
from otkit.flow_matching import _couplings, _paths

Array = jax.Array


def squared_error(velocity_fn, t: Array, xt: Array, ut: Array) -> Array:
  """``mean((v(t, x_t) − u_t)²)`` over the batch and the coordinates."""
  v = velocity_fn(t, xt)
  return jnp.mean(jnp.square(v - ut))


@functools.partial(jax.jit, static_argnames=("coupling", "path"))
def pair_and_draw(key: Array, x0: Array, x1: Array, sigma, epsilon, tau, solver, *,
                  coupling: str, path: str):
  """Couples one batch and draws ``(t, x_t, u_t)`` on it (no checks; compiled once)."""
  key_pair, key_path = jax.random.split(key)
  p0, p1, _ = _couplings.couple_checked(key_pair, x0, x1, coupling, epsilon, tau, solver)
  return _paths.draw(key_path, p0, p1, path, sigma)


def check_velocity_fn(velocity_fn, name: str = "velocity_fn"):
  if not callable(velocity_fn):
    raise ValueError(f"`{name}` must be a callable v(t, x) -> (batch, d); got "
                     f"{type(velocity_fn).__name__}.")
  return velocity_fn


def check_options(dtype, coupling, path, sigma, epsilon, tau, solver):
  """``(σ, ε, τ, solver)`` of a coupling and a path, checked: shared by :func:`cfm_loss` and the
  training loops."""
  sigma = _paths.check_path(path, sigma, dtype)
  epsilon = _couplings.default_epsilon(epsilon, path, sigma)
  return (sigma, *_couplings.check_coupling_options(coupling, epsilon, tau, solver, dtype))


def cfm_loss(velocity_fn, key, x0, x1, *, coupling="exact", path="linear", sigma=0.0,
             epsilon=None, tau=0.9, solver=None):
  """The conditional flow matching loss of ``velocity_fn`` on one mini-batch.

  I-CFM is ``coupling="independent", path="linear"``; OT-CFM ``coupling="exact"`` (default);
  SB-CFM ``coupling="sinkhorn", path="schrodinger_bridge"`` (``ε = 2σ²`` by default); Lipman's
  FM ``coupling="independent", path="target"`` with standard normal ``x0``.

  Args:
    velocity_fn: ``v(t, x)`` with ``t (batch,)`` and ``x (batch, d)`` returning ``(batch, d)``;
      the loss is differentiable in whatever it closes over.
    key: a PRNG key (coupling draws, times, path noise).
    x0: source batch ``(batch, d)``.
    x1: target batch ``(batch, d)`` (another size allowed for the entropic couplings).
    coupling: static; see :func:`couple`.
    path: static; see :func:`sample_path`.
    sigma: path noise ``σ ≥ 0`` (traced).
    epsilon, tau, solver: options of the entropic couplings (see :func:`couple`); ``epsilon``
      defaults to ``2σ²`` on the Schrödinger bridge path, else ``0.05``.

  Returns:
    A scalar: the mean over the batch and the coordinates of ``(v(t, x_t) − u_t)²``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from otkit import flow_matching as fm
    >>> x0 = jax.random.normal(jax.random.key(0), (64, 2))
    >>> v = lambda t, x: jnp.ones_like(x)        # the exact velocity of x -> x + 1
    >>> round(float(fm.cfm_loss(v, jax.random.key(1), x0, x0 + 1.0)), 6)
    0.0
  """
  velocity_fn = check_velocity_fn(velocity_fn)
  key = V.check_key(key)
  V.check_choice("coupling", coupling, _couplings.COUPLINGS)
  x0, x1 = _couplings.check_batches(x0, x1, same_size=coupling not in _couplings.ENTROPIC)
  sigma, epsilon, tau, solver = check_options(x0.dtype, coupling, path, sigma, epsilon, tau,
                                              solver)
  t, xt, ut = pair_and_draw(key, x0, x1, sigma, epsilon, tau, solver, coupling=coupling,
                            path=path)
  return squared_error(velocity_fn, t, xt, ut)
