"""A dense layer with a factorised kernel ``W = U Vᵀ`` (or ``U M Vᵀ``), in flax NNX.

Flax NNX is the API the flax documentation recommends since flax 0.10 (Linen is kept for
existing code): a layer is a plain Python object that owns its parameters, so a researcher can
read ``layer.u`` or replace it in place, and `nnx.split` gives the pure pytree that
:func:`otkit.nn.frobenius_decay` and any optax optimiser act on.

References:
  Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
  Layers", ICLR 2021.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from otkit import _validation as V
from otkit.nn import _rank
from otkit.nn import _spectral

Array = jax.Array
INITS = ("spectral", "independent")
default_kernel_init = nnx.initializers.lecun_normal()


def set_factor_params(layer: nnx.Module, u: Array, v: Array, *, in_features: int,
                      out_features: int, rank: int, square: bool, use_bias: bool, bias_init,
                      dtype, param_dtype, precision, rngs: nnx.Rngs) -> None:
  """Stores the factors ``u``, ``v`` (and an identity middle factor if ``square``), the bias and
  the layer's options on ``layer``: the parameter layout every factorised layer shares."""
  layer.u = nnx.Param(u)
  layer.v = nnx.Param(v)
  layer.m = nnx.Param(_spectral.identity_middle(rank, param_dtype)) if square else nnx.data(None)
  if use_bias:
    layer.bias = nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
  else:
    layer.bias = nnx.data(None)
  layer.in_features, layer.out_features, layer.rank = in_features, out_features, rank
  layer.square, layer.use_bias = square, use_bias
  layer.dtype, layer.param_dtype, layer.precision = dtype, param_dtype, precision


def check_inputs(inputs, in_features: int, layout: str, name: str = "inputs") -> Array:
  """Checks a layer's ``inputs`` eagerly: real numbers, shape ``layout`` ending in
  ``in_features``, finite values when concrete. Returns them as a floating array (the layer
  computes in its own dtype)."""
  x = V.as_float_array(name, inputs)
  min_ndim = layout.count(",") + 1 - layout.count("...")
  if x.ndim < min_ndim or x.shape[-1] != in_features:
    raise ValueError(f"`{name}` must have shape {layout}; got {x.shape}.")
  V.check_finite(name, x)
  return x


def source_kernel(layer: nnx.Module) -> Array:
  """The kernel of a layer to factorise, checked finite (its SVD would be NaN)."""
  kernel = layer.kernel[...]
  V.check_finite("layer.kernel", kernel)
  return kernel


def left_factor(layer: nnx.Module) -> Array:
  """``u`` or, with a middle factor, ``u m``: the left factor of the product kernel."""
  return layer.u[...] if layer.m is None else layer.u[...] @ layer.m[...]


@functools.partial(jax.jit, static_argnames=("kernel_init", "shape", "rank", "dtype"))
def _independent_factors(key: Array, *, kernel_init, shape: tuple[int, int], rank: int,
                         dtype) -> tuple[Array, Array]:
  """``u`` and ``vᵀ`` drawn by ``kernel_init`` as the kernels of two stacked dense layers."""
  (p, q), (key_u, key_v) = shape, jax.random.split(key)
  return kernel_init(key_u, (p, rank), dtype), kernel_init(key_v, (rank, q), dtype).T


class FactorizedDense(nnx.Module):
  """``y = x U M Vᵀ + b``: a dense layer whose ``(in, out)`` kernel has rank at most ``r``.

  Parameters: ``u`` of shape ``(in_features, r)``, ``v`` of shape ``(out_features, r)``, with
  ``square=True`` a middle factor ``m`` of shape ``(r, r)``, and ``bias`` of shape
  ``(out_features,)``; ``r (in + out) [+ r²] + out`` numbers against ``in · out + out`` for
  ``nnx.Linear``. The kernel in flax's ``(in, out)`` layout is ``u m vᵀ``.

  Args:
    in_features, out_features: the layer's input and output widths.
    rank: ``r``, an integer in ``[1, min(in, out)]``; or
    rank_scale: ``r = round(rank_scale · min(in, out))`` with ``rank_scale`` in ``(0, 1]``.
    square: adds a square middle factor ``m``, initialised to the identity (for over-complete
      distillation with ``rank_scale = 1``).
    init: ``"spectral"`` (default): ``u, v`` are the balanced factors of the truncated SVD of a
      full-rank draw ``kernel_init(key, (in, out))`` (see :func:`spectral_init`);
      ``"independent"``: ``u`` and ``vᵀ`` are drawn by ``kernel_init`` as the kernels of two
      stacked dense layers (plain low-rank training).
    use_bias: whether to add ``bias``.
    dtype: the computation dtype (default: promoted from the inputs and parameters).
    param_dtype: the dtype of the parameters (default float32).
    precision: the matmul precision (``jax.lax.Precision``).
    kernel_init: the full-rank kernel initialiser (default: LeCun normal, as ``nnx.Linear``).
    bias_init: the bias initialiser (default: zeros).
    rngs: ``nnx.Rngs`` with a ``params`` stream.

  Raises:
    ValueError: bad ``rank``/``rank_scale`` or an unknown ``init``.

  References:
    Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
    Layers", ICLR 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import otkit.nn
    >>> layer = otkit.nn.FactorizedDense(64, 32, rank=8, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((5, 64))).shape
    (5, 32)
    >>> layer.u.shape, layer.v.shape
    ((64, 8), (32, 8))
  """

  def __init__(self, in_features: int, out_features: int, *, rank: int | None = None,
               rank_scale: float | None = None, square: bool = False, init: str = "spectral",
               use_bias: bool = True, dtype=None, param_dtype=jnp.float32, precision=None,
               kernel_init=default_kernel_init, bias_init=nnx.initializers.zeros_init(),
               rngs: nnx.Rngs):
    in_features = V.check_static_int("in_features", in_features)
    out_features = V.check_static_int("out_features", out_features)
    r = _rank.resolve_rank(rank, rank_scale, in_features, out_features)
    V.check_choice("init", init, INITS)
    make = _spectral.spectral_factors if init == "spectral" else _independent_factors
    u, v = make(rngs.params(), kernel_init=kernel_init, shape=(in_features, out_features), rank=r,
                dtype=param_dtype)
    set_factor_params(self, u, v, in_features=in_features, out_features=out_features, rank=r,
                      square=square, use_bias=use_bias, bias_init=bias_init, dtype=dtype,
                      param_dtype=param_dtype, precision=precision, rngs=rngs)

  def full_kernel(self) -> Array:
    """The product kernel ``u m vᵀ``, shape ``(in_features, out_features)`` (``nnx.Linear`` layout)."""
    return left_factor(self) @ self.v[...].T

  def __call__(self, inputs: Array) -> Array:
    """Applies the layer to ``inputs`` of shape ``(..., in_features)``; returns ``(..., out_features)``."""
    check_inputs(inputs, self.u.shape[0], f"(..., {self.u.shape[0]})")
    m = None if self.m is None else self.m[...]
    bias = None if self.bias is None else self.bias[...]
    x, u, m, v, bias = dtypes.promote_dtype((inputs, self.u[...], m, self.v[...], bias),
                                            dtype=self.dtype)
    h = jnp.matmul(x, u, precision=self.precision)
    if m is not None:
      h = jnp.matmul(h, m, precision=self.precision)
    y = jnp.matmul(h, v.T, precision=self.precision)
    return y if bias is None else y + bias


def factorize_dense(layer: nnx.Linear, *, rank: int | None = None, rank_scale: float | None = None,
                    square: bool = False) -> FactorizedDense:
  """A :class:`FactorizedDense` whose kernel is the best rank-``r`` approximation of a dense layer's.

  The factors are the spectral (balanced SVD) factors of ``layer.kernel``; the bias and the dtype
  options are copied. Use it to compress a trained ``nnx.Linear`` or to start distillation.

  Args:
    layer: an ``nnx.Linear`` with kernel of shape ``(in, out)``.
    rank, rank_scale: exactly one, as in :class:`FactorizedDense`.
    square: adds an identity middle factor ``m``.

  Returns:
    The factorised layer; with ``rank = min(in, out)`` it computes the same function.

  Raises:
    ValueError: ``layer`` is not an ``nnx.Linear``, or bad ``rank``/``rank_scale``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import otkit.nn
    >>> dense = nnx.Linear(16, 8, rngs=nnx.Rngs(0))
    >>> small = otkit.nn.factorize_dense(dense, rank=8)
    >>> x = jnp.ones((2, 16))
    >>> bool(jnp.allclose(small(x), dense(x), atol=1e-5))
    True
  """
  if not isinstance(layer, nnx.Linear):
    raise ValueError(f"`layer` must be an `nnx.Linear`; got {type(layer).__name__}.")
  kernel = source_kernel(layer)
  r = _rank.resolve_rank(rank, rank_scale, *kernel.shape)
  u, v = _spectral.spectral_init(kernel, r)
  out = nnx.eval_shape(lambda: FactorizedDense(
      layer.in_features, layer.out_features, rank=r, square=square, init="independent",
      use_bias=layer.bias is not None, dtype=layer.dtype, param_dtype=kernel.dtype,
      precision=layer.precision, rngs=nnx.Rngs(0)))
  out.u, out.v = nnx.Param(u), nnx.Param(v)
  if square:
    out.m = nnx.Param(_spectral.identity_middle(r, kernel.dtype))
  if layer.bias is not None:
    out.bias = nnx.Param(layer.bias[...])
  return out
