"""Velocity fields for flow matching, as flax NNX modules.

:class:`VelocityMLP` is the network of the torchcfm examples (an MLP on ``[x, t]``, SELU, three
hidden layers of 64) with an optional sinusoidal time embedding. :class:`PopulationEmbedding`
and :class:`MetaVelocity` are the population-conditioned field of Meta Flow Matching: the
velocity of a particle depends on the initial population it belongs to, through an embedding of
that population (a permutation-invariant set function).

References:
  Tong et al., "Improving and generalizing flow-based generative models with minibatch optimal
  transport", TMLR 2024 (the MLP).
  Zaheer, Kottur, Ravanbakhsh, Póczos, Salakhutdinov, Smola, "Deep Sets", NeurIPS 2017.
  Kipf, Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017.
  Atanackovic, Zhang, Amos, Blanchette, Lee, Bengio, Tong, Neklyudov, "Meta Flow Matching:
  Integrating Vector Fields on the Wasserstein Manifold", ICLR 2025.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from otkit import _validation as V
from otkit.nn._dense import check_inputs

Array = jax.Array
EMBEDDINGS = ("deepsets", "gcn")


def time_embedding(t: Array, features: int) -> Array:
  """``t (...)`` as ``(..., 1)`` if ``features == 0``, else ``features`` sinusoids
  ``[sin(2πkt), cos(2πkt)]``, ``k = 1 … features/2``."""
  t = t[..., None]
  if features == 0:
    return t
  k = jnp.arange(1, features // 2 + 1, dtype=t.dtype)
  return jnp.concatenate([jnp.sin(2 * jnp.pi * k * t), jnp.cos(2 * jnp.pi * k * t)], axis=-1)


def check_mlp_options(dim, hidden, depth, time_features) -> tuple[int, int, int, int]:
  dim = V.check_static_int("dim", dim)
  hidden = V.check_static_int("hidden", hidden)
  depth = V.check_static_int("depth", depth)
  time_features = V.check_static_int("time_features", time_features, minimum=0)
  if time_features % 2:
    raise ValueError(f"`time_features` must be even (sines and cosines); got {time_features}.")
  return dim, hidden, depth, time_features


def mlp_layers(in_features: int, hidden: int, depth: int, out_features: int,
               rngs: nnx.Rngs) -> nnx.List:
  """``depth`` hidden dense layers of width ``hidden``, then a dense output layer."""
  sizes = [in_features] + [hidden] * depth
  layers = [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
  return nnx.List([*layers, nnx.Linear(hidden, out_features, rngs=rngs)])


def run_mlp(layers, h: Array, activation: Callable) -> Array:
  for layer in layers[:-1]:
    h = activation(layer(h))
  return layers[-1](h)


def broadcast_time(t, x: Array) -> Array:
  t = V.as_float_array("t", t, x.dtype)
  V.check_finite("t", t)
  try:
    return jnp.broadcast_to(t, x.shape[:-1])
  except ValueError as err:
    raise ValueError(f"`t` must be a scalar or have shape {x.shape[:-1]}; got {t.shape}.") from err


class VelocityMLP(nnx.Module):
  """A time-dependent velocity field ``v(t, x)``: an MLP on ``[x, embed(t)]``.

  Args:
    dim: the dimension ``d`` of the points.
    hidden: width of the hidden layers (default 64).
    depth: number of hidden layers (default 3).
    time_features: ``0`` (default) appends ``t`` itself (torchcfm's MLP); an even ``k > 0``
      appends ``k`` sinusoids of ``t``.
    activation: the hidden activation (default ``nnx.selu``).
    rngs: ``nnx.Rngs`` for the initial weights.

  Call: ``model(t, x)`` with ``x (..., d)`` and ``t`` a scalar or ``(...)``; returns ``(..., d)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from otkit import flow_matching as fm
    >>> model = fm.VelocityMLP(2, rngs=nnx.Rngs(0))
    >>> model(jnp.zeros(5), jnp.ones((5, 2))).shape
    (5, 2)
  """

  def __init__(self, dim: int, hidden: int = 64, depth: int = 3, *, time_features: int = 0,
               activation: Callable = nnx.selu, rngs: nnx.Rngs):
    dim, hidden, depth, time_features = check_mlp_options(dim, hidden, depth, time_features)
    self.dim, self.time_features, self.activation = dim, time_features, activation
    self.layers = mlp_layers(dim + max(time_features, 1), hidden, depth, dim, rngs)

  def __call__(self, t, x) -> Array:
    x = check_inputs(x, self.dim, f"(..., {self.dim})", "x")
    t = broadcast_time(t, x)
    h = jnp.concatenate([x, time_embedding(t, self.time_features)], axis=-1)
    return run_mlp(self.layers, h, self.activation)


def knn_mean(h: Array, neighbours: Array) -> Array:
  """The mean of ``h (n, f)`` over each point's neighbours ``(n, k)``."""
  return jnp.mean(h[neighbours], axis=1)


def knn_graph(x: Array, k: int) -> Array:
  """Indices ``(n, k)`` of the ``k`` nearest points of each point (itself included)."""
  sq = jnp.sum(jnp.square(x[:, None, :] - x[None, :, :]), axis=-1)
  return jax.lax.top_k(-sq, min(k, x.shape[0]))[1]


class PopulationEmbedding(nnx.Module):
  """A permutation-invariant embedding ``φ(population) ∈ R^features`` of a point set.

  ``kind="deepsets"`` (default): ``ρ(mean_i ψ(x_i))`` with MLPs ``ψ`` (``depth`` layers of
  ``hidden``) and a linear ``ρ``. ``kind="gcn"``: the graph convolution network of Meta Flow
  Matching: ``depth`` layers ``H ← relu(mean_{j ∈ kNN(i)} H_j W)`` over the ``k``-nearest
  neighbour graph of the population (``O(n²)`` distances), mean-pooled, projected, and
  L2-normalised as in the paper (``normalize`` overrides).

  Call: ``embed(population)`` with ``population (n, d)`` returns ``(features,)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from otkit import flow_matching as fm
    >>> embed = fm.PopulationEmbedding(2, features=8, rngs=nnx.Rngs(0))
    >>> x = jnp.arange(10.0).reshape(5, 2)
    >>> bool(jnp.allclose(embed(x), embed(x[::-1]), atol=1e-6))
    True
  """

  def __init__(self, dim: int, features: int = 16, hidden: int = 64, depth: int = 2, *,
               kind: str = "deepsets", k: int = 10, normalize: bool | None = None,
               rngs: nnx.Rngs):
    dim, hidden, depth, _ = check_mlp_options(dim, hidden, depth, 0)
    self.features = V.check_static_int("features", features)
    self.kind = V.check_choice("kind", kind, EMBEDDINGS)
    self.k = V.check_static_int("k", k)
    self.dim = dim
    self.normalize = (kind == "gcn") if normalize is None else bool(normalize)
    sizes = [dim] + [hidden] * depth
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
    self.out = nnx.Linear(hidden, self.features, rngs=rngs)

  def __call__(self, population) -> Array:
    x = check_inputs(population, self.dim, f"(n, {self.dim})", "population")
    if x.ndim != 2 or x.shape[0] == 0:
      raise ValueError(f"`population` must have shape (n, {self.dim}) with n >= 1; got {x.shape}.")
    h = x
    neighbours = knn_graph(x, self.k) if self.kind == "gcn" else None
    for layer in self.layers:
      h = jax.nn.relu(layer(h if neighbours is None else knn_mean(h, neighbours)))
    e = self.out(jnp.mean(h, axis=0))
    if self.normalize:
      e = e / jnp.maximum(jnp.linalg.norm(e), jnp.finfo(e.dtype).tiny)
    return e


class MetaVelocity(nnx.Module):
  """A population-conditioned velocity field ``v(t, x | φ(p₀))`` (Meta Flow Matching).

  Args:
    dim: the dimension ``d`` of the points.
    embedding: any ``nnx.Module`` mapping a population ``(n, d)`` to ``(features,)``; default
      ``PopulationEmbedding(dim, features, rngs=rngs)``.
    features: the embedding size when ``embedding`` is not given (default 16).
    hidden, depth, time_features, activation: the MLP on ``[x, embed(t), φ(p₀)]`` (see
      :class:`VelocityMLP`).
    rngs: ``nnx.Rngs``.

  Call: ``model(t, x, population)`` with ``x (..., d)``, ``t`` a scalar or ``(...)`` and the
  initial population ``(n, d)``; returns ``(..., d)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from otkit import flow_matching as fm
    >>> model = fm.MetaVelocity(2, rngs=nnx.Rngs(0))
    >>> model(0.5, jnp.ones((3, 2)), jnp.zeros((10, 2))).shape
    (3, 2)
  """

  def __init__(self, dim: int, *, embedding: nnx.Module | None = None, features: int = 16,
               hidden: int = 64, depth: int = 3, time_features: int = 0,
               activation: Callable = nnx.selu, rngs: nnx.Rngs):
    dim, hidden, depth, time_features = check_mlp_options(dim, hidden, depth, time_features)
    self.embedding = PopulationEmbedding(dim, features, rngs=rngs) if embedding is None else embedding
    probe = jax.eval_shape(self.embedding, jax.ShapeDtypeStruct((2, dim), jnp.float32))
    if len(probe.shape) != 1:
      raise ValueError(f"`embedding` must map a population (n, {dim}) to a vector; it returns "
                       f"shape {probe.shape}.")
    self.dim, self.time_features, self.activation = dim, time_features, activation
    self.layers = mlp_layers(dim + max(time_features, 1) + probe.shape[0], hidden, depth, dim,
                             rngs)

  def __call__(self, t, x, population) -> Array:
    x = check_inputs(x, self.dim, f"(..., {self.dim})", "x")
    t = broadcast_time(t, x)
    e = self.embedding(population).astype(x.dtype)
    e = jnp.broadcast_to(e, (*x.shape[:-1], e.shape[0]))
    h = jnp.concatenate([x, time_embedding(t, self.time_features), e], axis=-1)
    return run_mlp(self.layers, h, self.activation)
