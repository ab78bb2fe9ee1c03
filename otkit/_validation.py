"""Eager input checks shared by every public entry point.

Each check runs in Python before tracing. Shapes and ranks are always checked; values
(finiteness, signs, sums) only when the array is concrete, so that the same public function
can be called inside a user's ``jax.jit`` without raising on tracers.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def is_concrete(x: Any) -> bool:
  """Whether ``x`` holds values that Python can inspect (not a tracer)."""
  return not isinstance(x, jax.core.Tracer)


def concrete_values(x: Any) -> np.ndarray | None:
  """The values of ``x``, ``None`` when traced. Scalar options are checked on the caller's own
  object: converting a Python number inside a caller's ``jit`` already yields a tracer."""
  return np.asarray(x) if is_concrete(x) else None


def as_float_array(name: str, x: Any, dtype=None) -> Array:
  """Converts ``x`` to a floating JAX array, keeping its precision.

  Integers and booleans are converted to the default floating dtype (float32, or float64 with
  ``jax_enable_x64``); complex numbers, strings and ragged lists raise a ``ValueError``.

  A concrete ``x`` stays concrete even while a caller's function is traced (an array that a
  jitted function closes over), so that its values are checked like those of an eager call.
  """
  if x is None:
    raise ValueError(f"`{name}` is required, got None.")
  with jax.ensure_compile_time_eval():
    try:
      arr = jnp.asarray(x)
    except (TypeError, ValueError) as err:  # strings, objects, ragged nested lists
      raise ValueError(f"`{name}` must be an array of numbers, got {type(x).__name__} "
                       f"({err}).") from err
    if jnp.issubdtype(arr.dtype, jnp.complexfloating):
      raise ValueError(f"`{name}` must hold real numbers, got dtype {arr.dtype}; pass its real "
                       "part (`x.real`) or split real and imaginary parts into coordinates.")
    if not (jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool):
      raise ValueError(f"`{name}` must hold numbers, got dtype {arr.dtype}.")
    if dtype is None:
      dtype = arr.dtype if jnp.issubdtype(arr.dtype, jnp.floating) else jnp.result_type(float)
    return arr.astype(dtype)


def check_finite(name: str, x: Array) -> None:
  if not is_concrete(x):
    return
  # Reduce where the array lives (only a count crosses to the host), eagerly even when called
  # while a caller's function is traced with ``x`` closed over as a constant.
  with jax.ensure_compile_time_eval():
    bad = int(jnp.size(x) - jnp.count_nonzero(jnp.isfinite(x)))
  if bad:
    raise ValueError(f"`{name}` contains {bad} NaN or infinite value(s); all entries must be finite.")


def check_points(name: str, x: Any, dtype=None) -> Array:
  """Validates a point cloud of shape ``(n, d)`` with ``n, d >= 1`` and finite entries."""
  arr = as_float_array(name, x, dtype)
  if arr.ndim == 1:
    raise ValueError(f"`{name}` must have shape (n, d); got a 1-D array of shape {arr.shape}. "
                     f"Use `{name}[:, None]` for points on a line.")
  if arr.ndim != 2:
    raise ValueError(f"`{name}` must have shape (n, d); got shape {arr.shape}.")
  if arr.shape[0] == 0 or arr.shape[1] == 0:
    raise ValueError(f"`{name}` is empty (shape {arr.shape}); it needs at least one point and one dimension.")
  check_finite(name, arr)
  return arr


def check_weights(name: str, w: Any, n: int, dtype) -> Array:
  """Validates a weight vector of shape ``(n,)``; ``None`` means uniform ``1/n``."""
  if w is None:
    with jax.ensure_compile_time_eval():  # concrete, also while a caller's function is traced
      return jnp.full((n,), 1.0 / n, dtype=dtype)
  arr = as_float_array(name, w, dtype)
  if arr.shape != (n,):
    raise ValueError(f"`{name}` must have shape ({n},) to match the points; got shape {arr.shape}.")
  check_finite(name, arr)
  values = concrete_values(arr)
  if values is not None:
    if np.any(values < 0):
      raise ValueError(f"`{name}` has negative entries (min {values.min():.3g}); weights must be >= 0.")
    if values.sum() <= 0:
      raise ValueError(f"`{name}` sums to {values.sum():.3g}; weights need a positive total mass.")
  return arr


def _check_scalar(name: str, value: Any, dtype, strict: bool) -> Array:
  arr = as_float_array(name, value, dtype)
  if arr.ndim != 0:
    raise ValueError(f"`{name}` must be a scalar; got shape {arr.shape}. Use `jax.vmap` to batch it.")
  values = concrete_values(value)
  if values is not None and not (np.isfinite(values) and (values > 0 if strict else values >= 0)):
    raise ValueError(f"`{name}` must be a finite number {'>' if strict else '>='} 0; "
                     f"got {float(values)!r}.")
  if values is not None and strict and is_concrete(arr):
    tiny = float(jnp.finfo(arr.dtype).tiny)
    with jax.ensure_compile_time_eval():
      cast = float(arr)
    if not (tiny <= cast < float("inf")):
      raise ValueError(f"`{name}` = {float(values)!r} is outside the range of {arr.dtype} (it "
                       f"becomes {cast!r}); rescale the problem or use a wider dtype.")
  return arr


def check_positive(name: str, value: Any, dtype) -> Array:
  """Validates a positive scalar such as ``epsilon`` (checked when concrete)."""
  return _check_scalar(name, value, dtype, strict=True)


def check_nonnegative(name: str, value: Any, dtype) -> Array:
  """Validates a scalar ``>= 0`` such as a cost weight (checked when concrete)."""
  return _check_scalar(name, value, dtype, strict=False)


def check_tau(name: str, tau: Any, dtype) -> Array:
  """Validates a marginal relaxation ``tau`` in ``(0, 1]`` (1 = balanced)."""
  arr = as_float_array(name, tau, dtype)
  if arr.ndim != 0:
    raise ValueError(f"`{name}` must be a scalar in (0, 1]; got shape {arr.shape}.")
  values = concrete_values(tau)
  if values is not None and not (0.0 < values <= 1.0):
    raise ValueError(f"`{name}` must lie in (0, 1] (1 = balanced marginal); got {float(values)!r}.")
  return arr


def check_equal_mass(a: Array, b: Array, tau_a: Array | None = None, tau_b: Array | None = None,
                     *, names: tuple[str, str] = ("a", "b")) -> None:
  """Hard marginals need ``sum(a) == sum(b)`` (to the dtype's resolution).

  ``tau_a``, ``tau_b``: the caller's marginal relaxations; ``None`` where the caller has none
  (both marginals are then hard). ``names``: the arguments' names in the message.
  """
  values = [concrete_values(v) for v in (a, b)]
  taus = [1.0 if t is None else concrete_values(t) for t in (tau_a, tau_b)]
  if any(v is None for v in (*values, *taus)) or not (taus[0] == 1.0 and taus[1] == 1.0):
    return
  va, vb = values
  ma, mb = float(va.sum()), float(vb.sum())
  # Rounding of a sum of n weights grows with n and the dtype's resolution (bfloat16: 2⁻⁷).
  resolution = max(float(jnp.finfo(va.dtype).eps), float(jnp.finfo(vb.dtype).eps))
  base = 1e-10 if resolution < 1e-10 else 1e-5
  tol = max(base, resolution * max(va.size, vb.size))
  if abs(ma - mb) > tol * max(ma, mb):
    relax = "" if tau_a is None and tau_b is None else " or pass tau_a/tau_b < 1"
    raise ValueError(f"`{names[0]}` and `{names[1]}` have different total mass ({ma:.6g} vs "
                     f"{mb:.6g}); balanced OT needs equal mass. Normalise the weights{relax}.")

def check_bool(name: str, value: Any) -> bool:
  """A static flag: ``True`` or ``False`` (NumPy booleans too), nothing else."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"`{name}` must be True or False; got {value!r}.")
  return bool(value)


def check_static_int(name: str, value: Any, minimum: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
  return int(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {choices}; got {value!r}.")
  return value


def common_dtype(*arrays: Any):
  """The floating dtype of the inputs (float32 unless one of them is float64)."""
  dtypes = []
  for x in arrays:
    try:
      if x is not None:
        dtypes.append(jnp.asarray(x).dtype)
    except (TypeError, ValueError):  # not an array of numbers: the argument's own check names it
      pass
  dtypes = [d for d in dtypes if jnp.issubdtype(d, jnp.number) or d == bool]
  dtype = jnp.result_type(*dtypes) if dtypes else jnp.result_type(float)
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def is_key(x) -> bool:
  """Whether ``x`` is a single PRNG key (typed, or a raw ``uint32[2]`` one)."""
  dtype, shape = getattr(x, "dtype", None), getattr(x, "shape", None)
  if dtype is None:
    return False
  typed = jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
  return typed or (dtype == jnp.uint32 and shape == (2,))


def check_key(key) -> Array:
  """A PRNG key (typed, from ``jax.random.key``, or a raw ``uint32[2]`` one)."""
  if key is None:
    raise ValueError("`key` is required: pass `jax.random.key(seed)` (and split it per call).")
  try:
    arr = jnp.asarray(key)
  except TypeError as err:
    raise ValueError(f"`key` must be a PRNG key from `jax.random.key`; got {type(key).__name__}."
                     ) from err
  if not is_key(arr):
    raise ValueError(f"`key` must be a single PRNG key from `jax.random.key`; got dtype "
                     f"{arr.dtype} and shape {arr.shape}. Use `jax.vmap` to batch keys.")
  return arr
