"""Spectral initialisation: the balanced factors of the truncated SVD of a full-rank weight.

For ``W = A S Bᵀ`` (singular values in decreasing order) and a rank ``r``,

  U = A_r S_r^{1/2},   V = B_r S_r^{1/2},

so ``U Vᵀ`` is the best rank-``r`` approximation of ``W`` (Eckart–Young), the factors are
balanced (``UᵀU = VᵀV = S_r``) and ``½(‖U‖_F² + ‖V‖_F²) = ‖U Vᵀ‖_*``.

References:
  Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
  Layers", ICLR 2021, §3 (spectral initialisation).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from otkit import _validation as V
from otkit.nn import _rank

Array = jax.Array
Initializer = Callable[..., Array]


@functools.partial(jax.jit, static_argnames=("rank",))
def _balanced_factors(w: Array, *, rank: int) -> tuple[Array, Array]:
  a, s, bt = jnp.linalg.svd(w, full_matrices=False)
  root_s = jnp.sqrt(s[:rank])
  return a[:, :rank] * root_s, bt[:rank].T * root_s


def spectral_init(w_full, rank: int) -> tuple[Array, Array]:
  """Balanced rank-``r`` factors ``(U, V)`` of a matrix, ``W ≈ U Vᵀ``, from its SVD.

  Args:
    w_full: the full-rank matrix ``W``, shape ``(p, q)``; floating dtypes are kept, integers
      become the default float.
    rank: ``r``, an integer in ``[1, min(p, q)]``.

  Returns:
    ``(U, V)`` of shapes ``(p, r)`` and ``(q, r)`` in the dtype of ``w_full``, with
    ``U = A_r S_r^{1/2}`` and ``V = B_r S_r^{1/2}`` for ``W = A S Bᵀ``.

  Raises:
    ValueError: ``w_full`` is not a finite 2-D array, or ``rank`` is out of range.

  References:
    Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
    Layers", ICLR 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> import otkit.nn
    >>> w = jnp.outer(jnp.arange(1.0, 4.0), jnp.ones(2))  # rank 1
    >>> u, v = otkit.nn.spectral_init(w, 1)
    >>> bool(jnp.allclose(u @ v.T, w, atol=1e-5))
    True
  """
  w = V.as_float_array("w_full", w_full)
  if w.ndim != 2 or not w.size:
    raise ValueError(f"`w_full` must be a non-empty 2-D matrix of shape (p, q); got shape {w.shape}. "
                     "Reshape convolution kernels with `conv_kernel_matrix` first.")
  V.check_finite("w_full", w)
  rank = _rank.check_rank(rank, *w.shape)
  return _balanced_factors(w, rank=rank)


def _as_matrix(w: Array) -> Array:
  return w


@functools.partial(jax.jit, static_argnames=("kernel_init", "shape", "rank", "dtype", "to_matrix"))
def spectral_factors(key: Array, *, kernel_init: Initializer, shape: tuple[int, ...], rank: int,
                     dtype, to_matrix: Callable[[Array], Array] = _as_matrix) -> tuple[Array, Array]:
  """Factors from the SVD of ``to_matrix(W₀)`` for a full-rank draw ``W₀ = kernel_init(key, shape, dtype)``.

  One compiled program per layer shape: drawing ``W₀`` op by op costs many small compilations.
  """
  return _balanced_factors(to_matrix(kernel_init(key, shape, dtype)), rank=rank)


def identity_middle(rank: int, dtype) -> Array:
  """The square middle factor ``M = I_r`` of a three-factor layer ``U M Vᵀ`` at initialisation."""
  return jnp.eye(rank, dtype=dtype)
