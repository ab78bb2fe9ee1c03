"""Training loops: flow matching (:func:`fit`) and Meta Flow Matching (:func:`fit_meta`).

A training step draws a batch from each side, couples it (:func:`couple`), draws times and
points on the conditional paths, and takes one optimiser step on the CFM loss. Many steps run in
one compiled call: the batches and their couplings for a block of ``steps_per_call`` steps are
drawn first (the couplings do not depend on the model, so a block's assignment problems go to the
exact solver as one batch, spread over the host's threads), then a ``lax.scan`` takes the
gradient steps. The compiled block is cached on the model's structure, the optimiser, the
shapes and the static options: a second ``fit`` on new data of the same shapes does not
recompile.

References:
  Tong et al., "Improving and generalizing flow-based generative models with minibatch optimal
  transport", TMLR 2024.
  Atanackovic et al., "Meta Flow Matching: Integrating Vector Fields on the Wasserstein
  Manifold", ICLR 2025.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from otkit import _validation as V
from otkit.flow_matching import _couplings, _loss, _paths
from otkit.solvers import Result

Array = jax.Array
DEFAULT_OPTIMIZER = optax.adam(1e-3)
DEFAULT_STEPS_PER_CALL = 100


# ---------------------------------------------------------------------------------------------
# Compiled blocks


def draw_batch(key: Array, data, fn, batch_size: int) -> Array:
  """A batch from an array ``(N, d)`` (uniform with replacement) or from ``fn(key)``."""
  if fn is not None:
    return fn(key)
  return data[jax.random.randint(key, (batch_size,), 0, data.shape[0])]


def gradient_steps(loss_fn, optimizer, params, opt_state, inputs):
  """A ``lax.scan`` of optimiser steps, ``loss_fn(params, *input)`` per step."""

  def body(carry, step_inputs):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params, *step_inputs)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), inputs)
  return params, opt_state, losses


STATIC = ("graphdef", "optimizer", "n", "batch_size", "coupling", "path", "source_fn",
          "target_fn")


@functools.partial(jax.jit, static_argnames=STATIC)
def train_block(params, rest, opt_state, key, source, target, sigma, epsilon, tau, solver, *,
                graphdef, optimizer, n, batch_size, coupling, path, source_fn, target_fn):
  """``n`` steps of :func:`fit`: the block's batches and couplings, then the gradient steps."""

  def pairs(k):
    k0, k1, kc, kp = jax.random.split(k, 4)
    k1 = k0 if coupling == "paired" else k1  # the same rows (or key) on both sides
    x0 = draw_batch(k0, source, source_fn, batch_size)
    x1 = draw_batch(k1, target, target_fn, batch_size)
    p0, p1, result = _couplings.couple_checked(kc, x0, x1, coupling, epsilon, tau, solver)
    return p0, p1, kp, result

  p0, p1, kp, results = jax.vmap(pairs)(jax.random.split(key, n))

  def loss_fn(params, x0, x1, k):
    t, xt, ut = _paths.draw(k, x0, x1, path, sigma)
    return _loss.squared_error(nnx.merge(graphdef, params, rest), t, xt, ut)

  params, opt_state, losses = gradient_steps(loss_fn, optimizer, params, opt_state, (p0, p1, kp))
  return params, opt_state, losses, results


META_STATIC = ("graphdef", "optimizer", "n", "batch_size", "populations_per_step", "coupling",
               "path")


@functools.partial(jax.jit, static_argnames=META_STATIC)
def train_meta_block(params, rest, opt_state, key, x0_pops, x1_pops, sigma, epsilon, tau, solver,
                     *, graphdef, optimizer, n, batch_size, populations_per_step, coupling, path):
  """``n`` steps of :func:`fit_meta`."""
  count, size0 = x0_pops.shape[:2]
  size1 = x1_pops.shape[1]

  def pairs(k):
    kp, k0, k1, kc, kd = jax.random.split(k, 5)
    which = jax.random.choice(kp, count, (populations_per_step,), replace=False)
    i0 = jax.random.randint(k0, (populations_per_step, batch_size), 0, size0)
    i1 = i0 if coupling == "paired" else jax.random.randint(k1, i0.shape, 0, size1)
    x0 = jnp.take_along_axis(x0_pops[which], i0[..., None], axis=1)
    x1 = jnp.take_along_axis(x1_pops[which], i1[..., None], axis=1)
    couple = lambda k, a, b: _couplings.couple_checked(k, a, b, coupling, epsilon, tau, solver)
    p0, p1, result = jax.vmap(couple)(jax.random.split(kc, populations_per_step), x0, x1)
    return which, p0, p1, kd, result

  which, p0, p1, kd, results = jax.vmap(pairs)(jax.random.split(key, n))

  def loss_fn(params, which, x0, x1, k):
    model = nnx.merge(graphdef, params, rest)

    def one(population, a, b, key):
      t, xt, ut = _paths.draw(key, a, b, path, sigma)
      return _loss.squared_error(lambda s, y: model(s, y, population), t, xt, ut)

    keys = jax.random.split(k, populations_per_step)
    return jnp.mean(jax.vmap(one)(x0_pops[which], x0, x1, keys))

  params, opt_state, losses = gradient_steps(loss_fn, optimizer, params, opt_state,
                                             (which, p0, p1, kd))
  return params, opt_state, losses, results


# ---------------------------------------------------------------------------------------------
# The host loop


def run_blocks(block: Callable, model: nnx.Module, optimizer, key: Array, n_steps: int,
               steps_per_call: int, progress: bool, desc: str):
  """Runs ``block(params, rest, opt_state, key, n, graphdef)`` over ``n_steps`` in blocks of at
  most ``steps_per_call``, writes the trained parameters back into ``model`` and returns the
  losses ``(n_steps,)``."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  opt_state = optimizer.init(params)
  losses, failed = [], 0
  bar = progress_bar(n_steps, desc) if progress else None
  done = 0
  for block_key in jax.random.split(key, -(-n_steps // steps_per_call)):
    n = min(steps_per_call, n_steps - done)
    params, opt_state, block_losses, results = block(params, rest, opt_state, block_key, n,
                                                     graphdef)
    losses.append(block_losses)
    failed += int(jnp.sum(results != Result.CONVERGED))
    done += n
    if bar is not None:
      bar.update(n)
      bar.set_postfix(loss=f"{float(block_losses[-1]):.4g}")
  if bar is not None:
    bar.close()
  if failed:
    warnings.warn(f"{failed} mini-batch coupling(s) did not converge; see otkit.Result (an "
                  "entropic coupling that failed fell back to the independent one).", stacklevel=3)
  nnx.update(model, params)
  return jnp.concatenate(losses)


def progress_bar(total: int, desc: str):
  try:
    from tqdm.auto import tqdm
  except ImportError:  # pragma: no cover
    return None
  return tqdm(total=total, desc=desc, leave=False)


# ---------------------------------------------------------------------------------------------
# Checks


def check_model(model, name: str = "model") -> nnx.Module:
  if not isinstance(model, nnx.Module):
    raise ValueError(f"`{name}` must be a flax nnx.Module with __call__(t, x); got "
                     f"{type(model).__name__}.")
  return model


def check_optimizer(optimizer):
  if optimizer is None:
    return DEFAULT_OPTIMIZER
  if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
    raise ValueError("`optimizer` must be an optax.GradientTransformation; got "
                     f"{type(optimizer).__name__}.")
  return optimizer


def check_source(name: str, data, batch_size: int, dtype=None):
  """``(array, None)`` for an array ``(N, d)``, ``(None, fn)`` for a function ``key -> batch``;
  the function's batch shape is checked with ``jax.eval_shape``."""
  if callable(data) and not hasattr(data, "shape"):
    try:
      shape = jax.eval_shape(data, jax.random.key(0))
    except Exception as err:  # a function that cannot take a key
      raise ValueError(f"`{name}` must be an array (N, d) or a function key -> (batch_size, d); "
                       f"calling it with a key failed: {err}") from err
    if len(getattr(shape, "shape", ())) != 2 or shape.shape[0] != batch_size:
      raise ValueError(f"`{name}` must return a batch of shape ({batch_size}, d) (batch_size) "
                       f"when called with a key; it returns {getattr(shape, 'shape', shape)}.")
    return None, data, shape.shape[1], shape.dtype
  points = V.check_points(name, data, dtype)
  return points, None, points.shape[1], points.dtype


def check_training(key, n_steps, batch_size, steps_per_call):
  key = V.check_key(key)
  n_steps = V.check_static_int("n_steps", n_steps)
  batch_size = V.check_static_int("batch_size", batch_size)
  steps = DEFAULT_STEPS_PER_CALL if steps_per_call is None else steps_per_call
  steps = min(V.check_static_int("steps_per_call", steps), n_steps)
  return key, n_steps, batch_size, steps


# ---------------------------------------------------------------------------------------------
# Public functions


def fit(model, source, target, *, key, n_steps, batch_size=256, coupling="exact", path="linear",
        sigma=0.0, epsilon=None, tau=0.9, solver=None, optimizer=None, steps_per_call=None,
        progress=False):
  """Trains a velocity field by (OT-)conditional flow matching, many steps per compiled call.

  Each step draws ``batch_size`` points from ``source`` and from ``target``, pairs them by
  ``coupling``, and takes one ``optimizer`` step on :func:`cfm_loss`. The model is updated in
  place (and returned).

  Args:
    model: a flax ``nnx.Module`` with ``__call__(t, x)`` (e.g. :class:`VelocityMLP`).
    source, target: arrays ``(N, d)`` to draw batches from (uniformly, with replacement), or
      functions ``key -> (batch_size, d)`` that sample a batch (static: pass the same function
      object again, not a new ``lambda``, to reuse the compiled block). With ``coupling="paired"`` both
      sides draw the same rows (or get the same key): row ``i`` of ``source`` goes to row ``i``
      of ``target``.
    key: a PRNG key.
    n_steps: number of training steps (static).
    batch_size: points per side and step (static; default 256).
    coupling: static; ``"exact"`` (OT-CFM, default), ``"sinkhorn"``, ``"unbalanced"``,
      ``"independent"`` (I-CFM) or ``"paired"`` (see :func:`couple`).
    path: static; see :func:`sample_path`.
    sigma: path noise ``σ ≥ 0``.
    epsilon, tau, solver: options of the entropic couplings (see :func:`cfm_loss`).
    optimizer: an optax transformation (default ``optax.adam(1e-3)``; pass the same object
      again to reuse the compiled block).
    steps_per_call: static; steps per compiled block (default ``min(100, n_steps)``).
    progress: show a progress bar (tqdm) with the last loss.

  Returns:
    ``(model, losses)``: the trained model (the same object) and the loss of every step
    ``(n_steps,)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from otkit import flow_matching as fm
    >>> x0 = jax.random.normal(jax.random.key(0), (512, 2))
    >>> model = fm.VelocityMLP(2, hidden=16, depth=2, rngs=nnx.Rngs(0))
    >>> model, losses = fm.fit(model, x0, x0 + 3.0, key=jax.random.key(1), n_steps=100,
    ...                        batch_size=32)
    >>> losses.shape, bool(losses[-10:].mean() < losses[:10].mean())
    ((100,), True)
  """
  model = check_model(model)
  key, n_steps, batch_size, steps = check_training(key, n_steps, batch_size, steps_per_call)
  optimizer = check_optimizer(optimizer)
  src, source_fn, d0, dtype0 = check_source("source", source, batch_size)
  tgt, target_fn, d1, dtype1 = check_source("target", target, batch_size)
  if d0 != d1:
    raise ValueError(f"`source` and `target` must have the same dimension; got {d0} and {d1}.")
  if coupling == "paired" and (src is None) != (tgt is None):
    raise ValueError("coupling='paired' needs `source` and `target` both arrays or both "
                     "functions.")
  if coupling == "paired" and src is not None and src.shape[0] != tgt.shape[0]:
    raise ValueError(f"coupling='paired' needs `source` and `target` of the same length (row i "
                     f"of one goes to row i of the other); got {src.shape[0]} and {tgt.shape[0]}.")
  dtype = jnp.result_type(dtype0, dtype1)
  src, tgt = (None if v is None else v.astype(dtype) for v in (src, tgt))
  sigma, epsilon, tau, solver = _loss.check_options(dtype, coupling, path, sigma, epsilon, tau,
                                                    solver)
  options = dict(optimizer=optimizer, batch_size=batch_size, coupling=coupling, path=path,
                 source_fn=source_fn, target_fn=target_fn)

  def block(params, rest, opt_state, k, n, graphdef):
    return train_block(params, rest, opt_state, k, src, tgt, sigma, epsilon, tau, solver,
                       graphdef=graphdef, n=n, **options)

  losses = run_blocks(block, model, optimizer, key, n_steps, steps, progress, "flow matching")
  return model, losses


def check_populations(x0_populations, x1_populations, same_size: bool):
  dtype = V.common_dtype(x0_populations, x1_populations)
  x0 = V.as_float_array("x0_populations", x0_populations, dtype)
  x1 = V.as_float_array("x1_populations", x1_populations, dtype)
  for name, x in (("x0_populations", x0), ("x1_populations", x1)):
    if x.ndim != 3 or 0 in x.shape:
      raise ValueError(f"`{name}` must have shape (P, n, d) with P, n, d >= 1; got {x.shape}.")
    V.check_finite(name, x)
  if x0.shape[0] != x1.shape[0] or x0.shape[2] != x1.shape[2]:
    raise ValueError(f"`x0_populations` and `x1_populations` must hold the same number of "
                     f"populations of the same dimension; got {x0.shape} and {x1.shape}.")
  if same_size and x0.shape[1] != x1.shape[1]:
    raise ValueError(f"`x0_populations` and `x1_populations` must have populations of the same "
                     f"size for this coupling; got {x0.shape[1]} and {x1.shape[1]}.")
  return x0, x1


def fit_meta(model, x0_populations, x1_populations, *, key, n_steps, batch_size=None,
             populations_per_step=16, coupling="paired", path="linear", sigma=0.0, epsilon=None,
             tau=0.9, solver=None, optimizer=None, steps_per_call=None, progress=False):
  """Trains a population-conditioned velocity field by Meta Flow Matching.

  Population ``p`` starts as ``x0_populations[p]`` and ends as ``x1_populations[p]``. Each step
  picks ``populations_per_step`` populations, draws ``batch_size`` points of each, couples them
  within their population, and regresses ``model(t, x_t, x0_populations[p])`` on the targets;
  the loss is averaged over populations (one ``vmap``) and the embedding and the field are
  trained jointly by one optimiser (the paper alternates two; joint training is the simpler
  equivalent of its objective).

  Args:
    model: an ``nnx.Module`` with ``__call__(t, x, population)`` (e.g. :class:`MetaVelocity`).
    x0_populations: ``(P, n, d)`` initial populations (the embedding sees all ``n`` points).
    x1_populations: ``(P, m, d)`` final populations (``m = n`` for ``"paired"``/``"exact"``).
    key: a PRNG key.
    n_steps: number of training steps (static).
    batch_size: points drawn per population and step (static; default ``n``).
    populations_per_step: populations per step (static; at most ``P``).
    coupling: static; ``"paired"`` (default: ``x1_populations[p, i]`` is where
      ``x0_populations[p, i]`` goes), or a coupling of :func:`couple` within each population.
    path, sigma, epsilon, tau, solver, optimizer, steps_per_call, progress: as in :func:`fit`.

  Returns:
    ``(model, losses)`` with ``losses (n_steps,)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from otkit import flow_matching as fm
    >>> x0 = jax.random.normal(jax.random.key(0), (4, 16, 2))
    >>> shift = jnp.arange(4.0)[:, None, None]
    >>> model = fm.MetaVelocity(2, features=4, hidden=16, depth=1, rngs=nnx.Rngs(0))
    >>> model, losses = fm.fit_meta(model, x0, x0 + shift, key=jax.random.key(1), n_steps=10,
    ...                             populations_per_step=2)
    >>> losses.shape
    (10,)
  """
  model = check_model(model)
  V.check_choice("coupling", coupling, _couplings.COUPLINGS)
  x0, x1 = check_populations(x0_populations, x1_populations,
                             same_size=coupling not in _couplings.ENTROPIC)
  if batch_size is None:
    batch_size = x0.shape[1]
  key, n_steps, batch_size, steps = check_training(key, n_steps, batch_size, steps_per_call)
  populations_per_step = V.check_static_int("populations_per_step", populations_per_step)
  if populations_per_step > x0.shape[0]:
    raise ValueError(f"`populations_per_step` must be at most the number of populations "
                     f"{x0.shape[0]}; got {populations_per_step}.")
  optimizer = check_optimizer(optimizer)
  sigma, epsilon, tau, solver = _loss.check_options(x0.dtype, coupling, path, sigma, epsilon,
                                                    tau, solver)
  options = dict(optimizer=optimizer, batch_size=batch_size, coupling=coupling, path=path,
                 populations_per_step=populations_per_step)

  def block(params, rest, opt_state, k, n, graphdef):
    return train_meta_block(params, rest, opt_state, k, x0, x1, sigma, epsilon, tau, solver,
                            graphdef=graphdef, n=n, **options)

  losses = run_blocks(block, model, optimizer, key, n_steps, steps, progress,
                      "meta flow matching")
  return model, losses
