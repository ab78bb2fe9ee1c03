"""A 2-D convolution with a factorised kernel, run as two thin convolutions, in flax NNX.

A ``(k_h, k_w, c_in, c_out)`` kernel ``K`` (flax's HWIO layout) is read as the matrix
``W[(a, i), (b, o)] = K[a, b, i, o]`` of shape ``(k_h·c_in, k_w·c_out)`` and factorised as
``W = U M Vᵀ``. The convolution then splits into a ``(k_h, 1)`` convolution with ``c_in → r``
channels (from ``U M``) followed by a ``(1, k_w)`` convolution with ``r → c_out`` channels (from
``V``): ``r (k_h c_in + k_w c_out)`` parameters instead of ``k_h k_w c_in c_out``. Khodak et al.
write the same matrix transposed, ``(c_out·k, c_in·k)``.

References:
  Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
  Layers", ICLR 2021.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn import dtypes

from otkit import _validation as V
from otkit.nn import _rank
from otkit.nn import _spectral
from otkit.nn._dense import (INITS, check_inputs, default_kernel_init, left_factor,
                             set_factor_params, source_kernel)

Array = jax.Array
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv_kernel_matrix(kernel) -> Array:
  """The matrix ``(k_h·c_in, k_w·c_out)`` of a 2-D convolution kernel ``(k_h, k_w, c_in, c_out)``.

  Row ``a·c_in + i`` and column ``b·c_out + o`` hold ``kernel[a, b, i, o]``; a rank-``r``
  factorisation of this matrix is a ``(k_h, 1)`` convolution followed by a ``(1, k_w)`` one.

  Args:
    kernel: a flax (HWIO) convolution kernel, shape ``(k_h, k_w, c_in, c_out)``.

  Returns:
    The matrix, shape ``(k_h·c_in, k_w·c_out)``.

  Raises:
    ValueError: ``kernel`` is not 4-D.

  Examples:
    >>> import jax.numpy as jnp
    >>> import otkit.nn
    >>> otkit.nn.conv_kernel_matrix(jnp.zeros((3, 3, 16, 32))).shape
    (48, 96)
  """
  kernel = V.as_float_array("kernel", kernel)
  if kernel.ndim != 4 or not kernel.size:
    raise ValueError(f"`kernel` must have a non-empty shape (k_h, k_w, c_in, c_out); got "
                     f"{kernel.shape}.")
  V.check_finite("kernel", kernel)
  kh, kw, c_in, c_out = kernel.shape
  return kernel.transpose(0, 2, 1, 3).reshape(kh * c_in, kw * c_out)


def _kernel_from_matrix(w: Array, kernel_shape: tuple[int, int, int, int]) -> Array:
  kh, kw, c_in, c_out = kernel_shape
  return w.reshape(kh, c_in, kw, c_out).transpose(0, 2, 1, 3)


def _pair(name: str, value) -> tuple[int, int]:
  pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
  if len(pair) != 2 or any(isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1
                           for p in pair):
    raise ValueError(f"`{name}` must be a positive integer or a pair of them; got {value!r}.")
  return int(pair[0]), int(pair[1])


def _check_padding(padding):
  """``"SAME"``, ``"VALID"`` or ``((lo_h, hi_h), (lo_w, hi_w))`` from the accepted forms."""
  if isinstance(padding, str):
    if padding not in ("SAME", "VALID"):
      raise ValueError(f"`padding` must be 'SAME', 'VALID', an int or ((lo, hi), (lo, hi)); got {padding!r}.")
    return padding
  if isinstance(padding, numbers.Integral):
    padding = (padding, padding)
  try:
    pads = tuple((p, p) if isinstance(p, numbers.Integral) else tuple(p) for p in padding)
  except TypeError:
    pads = ()
  if len(pads) != 2 or any(len(p) != 2 or not all(isinstance(e, numbers.Integral) for e in p)
                           for p in pads):
    raise ValueError(f"`padding` must give integer (lo, hi) for height and width; got {padding!r}.")
  return tuple((int(lo), int(hi)) for lo, hi in pads)


def _split_padding(padding):
  """Padding of the ``(k_h, 1)`` and of the ``(1, k_w)`` convolution: height first, then width."""
  if isinstance(padding, str):
    return padding, padding
  return (padding[0], (0, 0)), ((0, 0), padding[1])


@functools.partial(jax.jit, static_argnames=("kernel_init", "shape", "rank", "dtype"))
def _independent_factors(key: Array, *, kernel_init, shape: tuple[int, int, int, int], rank: int,
                         dtype) -> tuple[Array, Array]:
  """``u`` and ``v`` drawn as the kernels of a ``(k_h, 1)`` and a ``(1, k_w)`` convolution."""
  kh, kw, c_in, c_out = shape
  key_u, key_v = jax.random.split(key)
  u = kernel_init(key_u, (kh, 1, c_in, rank), dtype).reshape(kh * c_in, rank)
  v = kernel_init(key_v, (1, kw, rank, c_out), dtype)[0].transpose(0, 2, 1).reshape(kw * c_out, rank)
  return u, v


class FactorizedConv(nnx.Module):
  """A 2-D convolution whose kernel matrix ``(k_h·c_in, k_w·c_out)`` is ``U M Vᵀ`` of rank ``r``.

  Parameters: ``u`` of shape ``(k_h·c_in, r)``, ``v`` of shape ``(k_w·c_out, r)``, with
  ``square=True`` a middle factor ``m`` of shape ``(r, r)``, and ``bias`` of shape ``(c_out,)``.
  The layer computes the same function as ``nnx.Conv`` with kernel :meth:`full_kernel`, but as a
  ``(k_h, 1)`` convolution to ``r`` channels followed by a ``(1, k_w)`` one.

  Args:
    in_features, out_features: ``c_in`` and ``c_out``.
    kernel_size: ``k`` (a ``k × k`` kernel; ``nnx.Conv`` reads an int as a 1-D kernel) or
      ``(k_h, k_w)``.
    strides: ``s`` or ``(s_h, s_w)``.
    padding: ``"SAME"`` (default), ``"VALID"``, an int, or ``((lo, hi), (lo, hi))``.
    kernel_dilation: ``d`` or ``(d_h, d_w)``.
    rank: ``r`` in ``[1, min(k_h·c_in, k_w·c_out)]``; or
    rank_scale: ``r = round(rank_scale · min(k_h·c_in, k_w·c_out))`` with ``rank_scale`` in
      ``(0, 1]`` (the reference code scales ``c_out·k`` instead; equal when ``c_in = c_out``).
    square: adds a middle factor ``m``, initialised to the identity.
    init: ``"spectral"`` (default): the balanced factors of the truncated SVD of the matrix of a
      full-rank draw ``kernel_init(key, (k_h, k_w, c_in, c_out))``; ``"independent"``: the two
      thin convolution kernels are drawn by ``kernel_init`` (plain low-rank training).
    use_bias, dtype, param_dtype, precision, kernel_init, bias_init, rngs: as in ``nnx.Conv``.

  Raises:
    ValueError: bad sizes, ``rank``/``rank_scale``, ``padding`` or ``init``.

  References:
    Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
    Layers", ICLR 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import otkit.nn
    >>> conv = otkit.nn.FactorizedConv(16, 32, 3, rank=12, rngs=nnx.Rngs(0))
    >>> conv(jnp.ones((2, 8, 8, 16))).shape
    (2, 8, 8, 32)
  """

  def __init__(self, in_features: int, out_features: int, kernel_size, strides=1, *,
               padding="SAME", kernel_dilation=1, rank: int | None = None,
               rank_scale: float | None = None, square: bool = False, init: str = "spectral",
               use_bias: bool = True, dtype=None, param_dtype=jnp.float32, precision=None,
               kernel_init=default_kernel_init, bias_init=nnx.initializers.zeros_init(),
               rngs: nnx.Rngs):
    c_in = V.check_static_int("in_features", in_features)
    c_out = V.check_static_int("out_features", out_features)
    kh, kw = _pair("kernel_size", kernel_size)
    self.kernel_shape = (kh, kw, c_in, c_out)
    self.strides = _pair("strides", strides)
    self.kernel_dilation = _pair("kernel_dilation", kernel_dilation)
    self.padding = _check_padding(padding)
    self.paddings = _split_padding(self.padding)
    r = _rank.resolve_rank(rank, rank_scale, kh * c_in, kw * c_out)
    V.check_choice("init", init, INITS)
    if init == "spectral":
      make = functools.partial(_spectral.spectral_factors, to_matrix=conv_kernel_matrix)
    else:
      make = _independent_factors
    u, v = make(rngs.params(), kernel_init=kernel_init, shape=self.kernel_shape, rank=r,
                dtype=param_dtype)
    set_factor_params(self, u, v, in_features=c_in, out_features=c_out, rank=r, square=square,
                      use_bias=use_bias, bias_init=bias_init, dtype=dtype,
                      param_dtype=param_dtype, precision=precision, rngs=rngs)

  def full_kernel(self) -> Array:
    """The product kernel, shape ``(k_h, k_w, c_in, c_out)`` (``nnx.Conv`` layout)."""
    return _kernel_from_matrix(left_factor(self) @ self.v[...].T, self.kernel_shape)

  def _conv(self, x: Array, kernel: Array, strides, padding, dilation) -> Array:
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=DIMENSION_NUMBERS,
                                        precision=self.precision)

  def __call__(self, inputs: Array) -> Array:
    """Applies the layer to ``inputs`` of shape ``(..., H, W, c_in)``; returns ``(..., H', W', c_out)``."""
    kh, kw, c_in, c_out = self.kernel_shape
    check_inputs(inputs, c_in, f"(..., H, W, {c_in})")
    m = None if self.m is None else self.m[...]
    bias = None if self.bias is None else self.bias[...]
    x, u, m, v, bias = dtypes.promote_dtype((inputs, self.u[...], m, self.v[...], bias),
                                            dtype=self.dtype)
    if m is not None:
      u = jnp.matmul(u, m, precision=self.precision)
    batch = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:])
    (sh, sw), (dh, dw) = self.strides, self.kernel_dilation
    pad_h, pad_w = self.paddings
    h = self._conv(x, u.reshape(kh, 1, c_in, self.rank), (sh, 1), pad_h, (dh, 1))
    kernel_v = v.reshape(kw, c_out, self.rank).transpose(0, 2, 1)[None]
    y = self._conv(h, kernel_v, (1, sw), pad_w, (1, dw))
    y = y.reshape(batch + y.shape[1:])
    return y if bias is None else y + bias


def factorize_conv(layer: nnx.Conv, *, rank: int | None = None, rank_scale: float | None = None,
                   square: bool = False) -> FactorizedConv:
  """A :class:`FactorizedConv` whose kernel matrix is the best rank-``r`` approximation of a conv's.

  Args:
    layer: an ``nnx.Conv`` with a 2-D kernel ``(k_h, k_w, c_in, c_out)``, no feature groups, no
      input dilation, and padding ``"SAME"``, ``"VALID"``, an int or explicit pairs.
    rank, rank_scale: exactly one, as in :class:`FactorizedConv`.
    square: adds an identity middle factor ``m``.

  Returns:
    The factorised layer; at full rank it computes the same function.

  Raises:
    ValueError: ``layer`` is not such an ``nnx.Conv``, or bad ``rank``/``rank_scale``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import otkit.nn
    >>> conv = nnx.Conv(4, 6, (3, 3), rngs=nnx.Rngs(0))
    >>> small = otkit.nn.factorize_conv(conv, rank=12)
    >>> x = jnp.ones((1, 5, 5, 4))
    >>> bool(jnp.allclose(small(x), conv(x), atol=1e-5))
    True
  """
  if not isinstance(layer, nnx.Conv):
    raise ValueError(f"`layer` must be an `nnx.Conv`; got {type(layer).__name__}.")
  kernel = source_kernel(layer)
  plain = layer.feature_group_count == 1 and layer.input_dilation in (1, None, (1, 1))
  if kernel.ndim != 4 or not plain or layer.mask is not None:
    raise ValueError("`layer` must be a 2-D `nnx.Conv` without feature groups, input dilation or "
                     f"mask; got kernel shape {kernel.shape}.")
  kh, kw, c_in, c_out = kernel.shape
  r = _rank.resolve_rank(rank, rank_scale, kh * c_in, kw * c_out)
  u, v = _spectral.spectral_init(conv_kernel_matrix(kernel), r)
  out = nnx.eval_shape(lambda: FactorizedConv(
      c_in, c_out, (kh, kw), layer.strides, padding=layer.padding,
      kernel_dilation=layer.kernel_dilation, rank=r, square=square, init="independent",
      use_bias=layer.bias is not None, dtype=layer.dtype, param_dtype=kernel.dtype,
      precision=layer.precision, rngs=nnx.Rngs(0)))
  out.u, out.v = nnx.Param(u), nnx.Param(v)
  if square:
    out.m = nnx.Param(_spectral.identity_middle(r, kernel.dtype))
  if layer.bias is not None:
    out.bias = nnx.Param(layer.bias[...])
  return out
