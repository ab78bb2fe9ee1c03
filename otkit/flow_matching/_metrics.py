"""How good and how straight a learned flow is.

- :func:`wasserstein2`: ``W₂`` between two equal-size samples (uniform weights), exactly, by
  the optimal assignment of ``‖x_i − y_j‖²``.
- :func:`path_energy`: the kinetic energy of the flow's trajectories,
  ``PE = E_{x(0)} ∫₀¹ ‖v(t, x(t))‖² dt`` (integrated with the sampler's steps), and its
  normalised excess over the transport it achieves, ``NPE = PE / W₂²(x(0), x(1)) − 1``. By the
  Benamou–Brenier formula ``PE ≥ W₂²(x(0), x(1))``, with equality exactly when the particles
  move on straight lines at constant speed along an optimal matching; a small ``NPE`` is a
  straight flow that few integration steps follow accurately.

References:
  Benamou, Brenier, "A computational fluid mechanics solution to the Monge–Kantorovich mass
  transfer problem", Numer. Math. 2000.
  Tong et al., "Improving and generalizing flow-based generative models with minibatch optimal
  transport", TMLR 2024 (the normalised path energy).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from otkit import _validation as V
from otkit.flow_matching import _sample
from otkit.flow_matching._couplings import check_batches
from otkit.flow_matching._loss import check_velocity_fn
from otkit.geometry import SqEuclidean
from otkit.solvers import assignment

Array = jax.Array


def wasserstein2(x, y):
  """``W₂`` between the uniform measures on two samples of equal size, exactly.

  Args:
    x, y: ``(n, d)`` samples (same ``n``).

  Returns:
    ``sqrt(min_σ (1/n) Σ_i ‖x_i − y_σ(i)‖²)``, a scalar; differentiable in ``x`` and ``y``.

  Example:
    >>> import jax.numpy as jnp
    >>> from otkit import flow_matching as fm
    >>> float(fm.wasserstein2(jnp.array([[0.0], [1.0]]), jnp.array([[4.0], [3.0]])))
    3.0
  """
  x, y = check_batches(x, y, same_size=True, names=("x", "y"))
  return jnp.sqrt(assignment(SqEuclidean().pairwise(x, y)).cost / x.shape[0])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PathEnergy:
  """Result of :func:`path_energy` (a pytree).

  Attributes:
    energy: ``PE = mean_i Σ_k h ‖v(t_k, x_i(t_k))‖²``, the flow's kinetic energy.
    transport: ``W₂²(x(0), x(1))`` between the start and end points (exact assignment).
    normalized: ``PE / transport − 1 ≥ 0`` up to discretisation: ``0`` for a straight flow.
    end: the end points ``x(1)`` ``(batch, d)``.
  """

  energy: Array
  transport: Array
  normalized: Array
  end: Array


def kinetic_energy(velocity_fn, x0: Array, n_steps: int, method: str) -> tuple[Array, Array]:
  """``(Σ_k h mean_i ‖v(t_k, x_i(t_k))‖², x(1))`` along the steps of ``method``."""
  h = 1.0 / n_steps

  def body(x, k):
    t = jnp.full(x.shape[:1], k * h, x.dtype)
    speed = jnp.mean(jnp.sum(jnp.square(velocity_fn(t, x)), axis=-1))
    return _sample.step(velocity_fn, method, k * h, x, h), h * speed

  x1, energies = jax.lax.scan(body, x0, jnp.arange(n_steps, dtype=x0.dtype))
  return jnp.sum(energies), x1


@functools.partial(jax.jit, static_argnames=("graphdef", "n_steps", "method"))
def _module_energy(graphdef, state, x0, *, n_steps, method):
  return kinetic_energy(nnx.merge(graphdef, state), x0, n_steps, method)


def path_energy(velocity_fn, x0, *, n_steps=100, method="euler") -> PathEnergy:
  """The path energy of a learned flow and its excess over the transport it performs.

  Args:
    velocity_fn: ``v(t, x)`` (a function or an ``nnx.Module``), ``t (batch,)``, ``x (batch, d)``.
    x0: start points ``(batch, d)``.
    n_steps: static; integration steps (the energy is a left Riemann sum on them).
    method: static; the sampler's scheme (see :func:`sample`).

  Returns:
    :class:`PathEnergy` with ``energy``, ``transport``, ``normalized`` and ``end``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from otkit import flow_matching as fm
    >>> x0 = jax.random.normal(jax.random.key(0), (32, 2))
    >>> out = fm.path_energy(lambda t, x: jnp.full_like(x, 2.0), x0, n_steps=4)
    >>> round(float(out.energy), 4), abs(float(out.normalized)) < 1e-6
    (8.0, True)
  """
  velocity_fn = check_velocity_fn(velocity_fn)
  x0 = V.check_points("x0", x0)
  n_steps = V.check_static_int("n_steps", n_steps)
  V.check_choice("method", method, _sample.METHODS)
  if isinstance(velocity_fn, nnx.Module):
    graphdef, state = nnx.split(velocity_fn)
    energy, x1 = _module_energy(graphdef, state, x0, n_steps=n_steps, method=method)
  else:
    energy, x1 = kinetic_energy(velocity_fn, x0, n_steps, method)
  transport = jnp.square(wasserstein2(x0, x1))
  tiny = jnp.finfo(transport.dtype).tiny
  return PathEnergy(energy, transport, energy / jnp.maximum(transport, tiny) - 1.0, x1)
