"""Frobenius decay: the penalty ``(λ/2)‖U M Vᵀ‖_F²`` on a factorised weight, as an optax transform.

Weight decay on the factors, ``(λ/2)(‖U‖_F² + ‖V‖_F²)``, is at least ``λ‖U Vᵀ‖_*`` with equality at
balanced factors (Srebro–Shraibman): it penalises the nuclear norm of the product, an extra rank
penalty. Frobenius decay penalises the product itself and is invariant to ``(cU, V/c)``. Its
gradients, with Gram matrices ``G_U = UᵀU`` and ``G_V = VᵀV`` (``M = I`` for two factors), are

  ∂/∂U = λ U (M G_V Mᵀ),   ∂/∂M = λ G_U M G_V,   ∂/∂V = λ V (Mᵀ G_U M),

which cost ``O((p + q) r²)`` and never form the ``p × q`` product.

Factors are found in a parameter tree by name: any node holding leaves ``u`` (shape
``(..., p, r)``) and ``v`` (shape ``(..., q, r)``), and optionally ``m`` (``(..., r, r)``), is one
factorised weight ``u m vᵀ``, as in :class:`FactorizedDense` and :class:`FactorizedConv`. Leading
axes (stacked layers) are batch axes.

References:
  Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
  Layers", ICLR 2021, §4 (Frobenius decay).
  Srebro, Shraibman, "Rank, Trace-Norm and Max-Norm", COLT 2005.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from otkit import _validation as V

Array = jax.Array
FACTOR_NAMES = ("u", "m", "v")


def _t(x: Array) -> Array:
  return jnp.swapaxes(x, -1, -2)


def _gram(x: Array) -> Array:
  return _t(x) @ x


def frobenius_penalty(u, v, m=None) -> Array:
  """``½‖U M Vᵀ‖_F²`` of a factorised weight, computed from ``r × r`` Gram matrices.

  Args:
    u: ``U``, shape ``(..., p, r)``.
    v: ``V``, shape ``(..., q, r)``.
    m: optional square middle factor ``M``, shape ``(..., r, r)``; ``None`` means ``M = I``.

  Returns:
    A scalar: the penalty summed over any leading (batch) axes.

  References:
    Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
    Layers", ICLR 2021.

  Examples:
    >>> import jax.numpy as jnp
    >>> import otkit.nn
    >>> u, v = jnp.ones((3, 1)), jnp.ones((2, 1))  # U Vᵀ = ones((3, 2))
    >>> float(otkit.nn.frobenius_penalty(u, v))
    3.0
  """
  u, v, m = check_factors(u, v, m)
  um = u if m is None else u @ m
  return 0.5 * jnp.sum(_gram(um) * _gram(v))


def check_factors(u, v, m=None):
  """Validates factors ``U (..., p, r)``, ``V (..., q, r)`` and ``M (..., r, r)`` eagerly (shapes
  always, finiteness when concrete); returns them as floating arrays."""
  arrays = {}
  for name, x in (("u", u), ("v", v), ("m", m)):
    if x is None:
      arrays[name] = None
      continue
    x = V.as_float_array(name, x)
    if x.ndim < 2 or not x.size:
      raise ValueError(f"`{name}` must be a non-empty factor of shape (..., rows, r); got shape "
                       f"{x.shape}.")
    V.check_finite(name, x)
    arrays[name] = x
  u, v, m = arrays["u"], arrays["v"], arrays["m"]
  r = u.shape[-1]
  if v.shape[-1] != r:
    raise ValueError(f"`u` and `v` must have the same rank r (last axis); got {u.shape} and "
                     f"{v.shape}.")
  if any(x is not None and x.shape[:-2] != u.shape[:-2] for x in (v, m)):
    raise ValueError(f"`u`, `v` (and `m`) must have the same leading (batch) axes; got {u.shape}, "
                     f"{v.shape}" + ("" if m is None else f" and {m.shape}") + ".")
  if m is not None and m.shape[-2:] != (r, r):
    raise ValueError(f"`m` must have shape (..., {r}, {r}) to match the rank of `u`; got {m.shape}.")
  return u, v, m


def frobenius_gradients(u: Array, v: Array, m: Array | None = None) -> dict[str, Array]:
  """Gradients of ``½‖U M Vᵀ‖_F²`` with respect to each factor, keyed ``"u"``, ``"v"`` (, ``"m"``).

  Args:
    u: ``U``, shape ``(..., p, r)``.
    v: ``V``, shape ``(..., q, r)``.
    m: optional middle factor, shape ``(..., r, r)``.

  Returns:
    A dict of arrays shaped like the factors.

  Examples:
    >>> import jax.numpy as jnp
    >>> g = frobenius_gradients(jnp.ones((3, 1)), jnp.ones((2, 1)))
    >>> g["u"].ravel().tolist()  # U VᵀV = 2 U
    [2.0, 2.0, 2.0]
  """
  gram_v = _gram(v)
  if m is None:
    return {"u": u @ gram_v, "v": v @ _gram(u)}
  gram_u = _gram(u)
  return {"u": u @ (m @ gram_v @ _t(m)), "m": gram_u @ m @ gram_v, "v": v @ (_t(m) @ gram_u @ m)}


def _key_name(entry) -> Any:
  for attr in ("key", "name"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return None


def _factor_position(path) -> int | None:
  """Index of the entry naming a leaf ``u``, ``m`` or ``v`` (before a variable's ``.value``)."""
  i = len(path) - 1
  while i > 0 and isinstance(path[i], jax.tree_util.GetAttrKey) and path[i].name == "value":
    i -= 1
  return i if i >= 0 and _key_name(path[i]) in FACTOR_NAMES else None


def _check_group(where: str, leaves: dict[str, Any]) -> None:
  u, v = np.shape(leaves["u"]), np.shape(leaves["v"])
  m = np.shape(leaves["m"]) if "m" in leaves else None
  ok = len(u) >= 2 and len(v) >= 2 and u[:-2] == v[:-2] and u[-1] == v[-1]
  if m is not None:
    ok = ok and len(m) == len(u) and m[:-2] == u[:-2] and m[-2:] == (u[-1], u[-1])
  if not ok:
    raise ValueError(f"`params` holds factors at {where or 'its root'} that do not form a product "
                     f"u m vᵀ: expected u (..., p, r), "
                     f"v (..., q, r) and optionally m (..., r, r); got u {u}, v {v}, m {m}.")


def factor_groups(params) -> list[dict[str, tuple]]:
  """The factorised weights of a parameter tree: one ``{name: path}`` dict per ``u``/``v`` pair.

  Args:
    params: any pytree of arrays (a flax ``nnx.State``, a nested dict, ...).

  Returns:
    A list of dicts mapping ``"u"``, ``"v"`` and possibly ``"m"`` to their key paths, in tree order.

  Raises:
    ValueError: a node holds ``u`` and ``v`` whose shapes do not form a product.
  """
  groups: dict[tuple, dict[str, tuple]] = {}
  leaves: dict[tuple, Any] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    i = _factor_position(path)
    if i is None:
      continue
    node = tuple(path[:i]) + tuple(path[i + 1:])
    groups.setdefault(node, {})[_key_name(path[i])] = tuple(path)
    leaves[tuple(path)] = leaf
  found = []
  for node, group in groups.items():
    if "u" in group and "v" in group:
      _check_group(jax.tree_util.keystr(node), {k: leaves[p] for k, p in group.items()})
      found.append(group)
  return found


def factor_mask(params) -> Any:
  """A tree of booleans like ``params``: ``True`` on the factors that Frobenius decay acts on.

  Use its negation as the ``mask`` of ``optax.add_decayed_weights`` to keep plain weight decay on
  every other parameter.

  Args:
    params: a pytree of arrays.

  Returns:
    A pytree of Python booleans with the structure of ``params``.

  Examples:
    >>> import jax.numpy as jnp
    >>> import otkit.nn
    >>> otkit.nn.factor_mask({"u": jnp.ones((3, 1)), "v": jnp.ones((2, 1)), "bias": jnp.ones(2)})
    {'bias': False, 'u': True, 'v': True}
  """
  paths = {p for group in factor_groups(params) for p in group.values()}
  return jax.tree_util.tree_map_with_path(lambda path, _: tuple(path) in paths, params)


def _decay_terms(params) -> dict[tuple, Array]:
  by_path = dict((tuple(p), x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0])
  terms = {}
  for group in factor_groups(params):
    factors = {k: by_path[p] for k, p in group.items()}
    for name, grad in frobenius_gradients(**factors).items():
      terms[group[name]] = grad
  return terms


class FrobeniusDecayState(NamedTuple):
  """Frobenius decay keeps no state."""


def frobenius_decay(coeff) -> optax.GradientTransformation:
  """Adds ``λ ∇ ½‖U M Vᵀ‖_F²`` to the updates of every factorised weight in the parameters.

  The gradient transformation form of Frobenius decay: place it before the optimiser's scaling
  in an ``optax.chain``, where ``optax.add_decayed_weights`` would go, and exclude the factors from
  plain weight decay with :func:`factor_mask`. Parameters that are not ``u``/``v`` (/``m``) factors
  are passed through unchanged.

  Args:
    coeff: ``λ ≥ 0``, a scalar (may be a traced array).

  Returns:
    An ``optax.GradientTransformation``; its ``update`` needs ``params``.

  Raises:
    ValueError: ``coeff`` is not a finite scalar ``≥ 0``; at ``update``, ``params`` is missing
      or holds factors whose shapes do not form a product.

  References:
    Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
    Layers", ICLR 2021.

  Examples:
    >>> import jax.numpy as jnp, optax
    >>> import otkit.nn
    >>> params = {"u": jnp.ones((3, 1)), "v": jnp.ones((2, 1)), "bias": jnp.zeros(2)}
    >>> tx = optax.chain(otkit.nn.frobenius_decay(0.1), optax.sgd(1.0))
    >>> zero = {k: jnp.zeros_like(x) for k, x in params.items()}
    >>> updates, _ = tx.update(zero, tx.init(params), params)
    >>> [round(x, 6) for x in updates["u"].ravel().tolist()]  # −λ U VᵀV = −0.1 · 2 U
    [-0.2, -0.2, -0.2]
  """
  coeff = _check_coeff(coeff)

  def init_fn(params):
    del params
    return FrobeniusDecayState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("`params` is required by frobenius_decay: call "
                       "`update(updates, state, params)`.")
    terms = _decay_terms(params)

    def add(path, update):
      term = terms.get(tuple(path))
      if term is None or update is None:
        return update
      return update + (coeff * term).astype(update.dtype)

    return jax.tree_util.tree_map_with_path(add, updates), state

  return optax.GradientTransformation(init_fn, update_fn)


def _check_coeff(coeff) -> Array:
  arr = V.as_float_array("coeff", coeff)
  if arr.ndim != 0:
    raise ValueError(f"`coeff` must be a scalar λ ≥ 0; got shape {arr.shape}.")
  if V.is_concrete(arr):
    value = float(arr)
    if not (np.isfinite(value) and value >= 0.0):
      raise ValueError(f"`coeff` must be a finite number ≥ 0; got {value!r}.")
  return arr
