"""Helpers shared by the tests: oracles in float64 NumPy, finite differences, tree closeness and
"a second call does not recompile".

Imported as ``import helpers`` (``tests/`` is on the path of every test through its
``conftest.py``).
"""

from __future__ import annotations

import contextlib
import logging

import chex
import jax
import jax.numpy as jnp
import numpy as np

import otkit

EPS64 = float(np.finfo(np.float64).eps)


# ----------------------------------------------------------------------------- OT oracles


def sq_cost(x, y) -> np.ndarray:
  """``C_ij = ‖x_i − y_j‖²`` in float64 NumPy, shape ``(n, m)``."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  return ((x[:, None] - y[None]) ** 2).sum(-1)


def log_plan(C, a, b, f, g, epsilon) -> np.ndarray:
  """``log P_ij = log a_i + log b_j + (f_i + g_j − C_ij)/ε`` in float64 NumPy."""
  f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
  C, a, b = (np.asarray(v, np.float64) for v in (C, a, b))
  with np.errstate(divide="ignore"):
    return np.log(a)[:, None] + np.log(b)[None] + (f[:, None] + g[None] - C) / np.float64(epsilon)


def plan(C, a, b, f, g, epsilon) -> np.ndarray:
  """The plan ``a_i b_j exp((f_i + g_j − C_ij)/ε)`` in float64 NumPy, shape ``(n, m)``."""
  return np.exp(log_plan(C, a, b, f, g, epsilon))


def l1_marginal_error(P, a, b) -> float:
  """``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁``: the error a solver's ``tol`` bounds."""
  return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def marginal_error_rounding(C, a, b, f, g, epsilon) -> float:
  """A bound on the float64 rounding of :func:`l1_marginal_error` of the plan of ``(f, g)``.

  Every entry ``P_ij = exp(z_ij)`` carries a relative error of a few ulps of its exponent's
  terms, ``|log a_i| + |log b_j| + (|f_i| + |g_j| + |C_ij|)/ε``, and enters one row sum and one
  column sum; the sums and differences add a few ulps of their magnitudes (``Σa + Σb + 2ΣP``).
  """
  f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
  C, a, b = (np.asarray(v, np.float64) for v in (C, a, b))
  with np.errstate(divide="ignore"):
    log_a, log_b = np.where(a > 0, np.log(a), 0.0), np.where(b > 0, np.log(b), 0.0)
  P = plan(C, a, b, f, g, epsilon)
  terms = (np.abs(log_a)[:, None] + np.abs(log_b)[None]
           + (np.abs(f)[:, None] + np.abs(g)[None] + np.abs(C)) / np.float64(epsilon))
  return 4 * EPS64 * (2 * float((P * (1.0 + terms)).sum()) + a.sum() + b.sum() + 2 * P.sum())


# ----------------------------------------------------------------------------- derivatives


def central_difference(fn, point, direction, h: float = 1e-5):
  """``(fn(point + h·direction) − fn(point − h·direction)) / 2h`` (use float64)."""
  return (fn(point + h * direction) - fn(point - h * direction)) / (2 * h)


def assert_directional_derivative(fn, point, direction, *, h: float = 1e-5, rtol: float = 1e-5,
                                  atol: float = 1e-9):
  """``⟨∇fn(point), direction⟩`` equals the central difference of ``fn`` along ``direction``.

  In float64 with ``h = 1e-5`` the difference is accurate to ``O(h²) ≈ 1e-10`` relative plus
  the solver's own accuracy divided by ``h``: ``rtol = 1e-5`` needs a tolerance ``≲ 1e-11`` in
  the function.
  """
  point = jnp.asarray(point)
  exact = jnp.vdot(jax.grad(fn)(point), direction)
  fd = central_difference(fn, point, jnp.asarray(direction, point.dtype), h)
  np.testing.assert_allclose(exact, fd, rtol=rtol, atol=atol)
  return exact


def assert_gradient_along(grad, fn, point, direction, *, h: float = 1e-5, rtol: float = 1e-5,
                          atol: float = 1e-9):
  """``⟨grad, direction⟩`` equals the central difference of ``fn`` along ``direction``.

  As :func:`assert_directional_derivative`, for a gradient the caller computed already (one
  jitted ``jax.grad`` over several arguments serves several checks); pass a jitted ``fn`` too.
  """
  point = jnp.asarray(point)
  exact = jnp.vdot(jnp.asarray(grad), jnp.asarray(direction, point.dtype))
  fd = central_difference(fn, point, jnp.asarray(direction, point.dtype), h)
  np.testing.assert_allclose(exact, fd, rtol=rtol, atol=atol)
  return exact


def assert_trees_close(actual, expected, *, rtol: float, atol: float = 0.0):
  """Leaf-by-leaf closeness of two pytrees of the same structure (``chex``)."""
  chex.assert_trees_all_close(actual, expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- compilation


def traced_once(fn):
  """``jax.jit(fn)`` that raises if it is traced twice (``chex.assert_max_traces``).

  Calling it again with new arrays of the same shapes and dtypes (and solver objects whose
  numbers changed) must not retrace.
  """
  chex.clear_trace_counter()
  return jax.jit(chex.assert_max_traces(fn, n=1))


def assert_no_recompile(fn, *calls):
  """Calls a :func:`traced_once` ``fn`` with each argument tuple in ``calls``; returns outputs."""
  jitted = traced_once(fn)
  return [jax.block_until_ready(jitted(*args)) for args in calls]


class _Compilations(logging.Handler):

  def __init__(self):
    super().__init__(level=logging.DEBUG)
    self.names = []

  def emit(self, record):
    message = record.getMessage()
    if message.startswith("Compiling "):
      self.names.append(message.split(" ")[1])


@contextlib.contextmanager
def compilations():
  """Collects the names of the XLA computations compiled inside the block.

  For public functions called eagerly: a second call with new data of the same shapes must
  compile nothing (``assert not names``).
  """
  handler = _Compilations()
  logger = logging.getLogger("jax")
  level = logger.level
  logger.addHandler(handler)
  logger.setLevel(min(level or logging.WARNING, logging.WARNING))
  try:
    with jax.log_compiles(True):
      yield handler.names
  finally:
    logger.removeHandler(handler)
    logger.setLevel(level)


# ----------------------------------------------------------------------------- shared compilations


def sinkhorn_objective(mode, x, a, epsilon, tau_a, y, b, weights, tol=1e-12, *, max_iters=3000):
  """``c · value + ⟨w_f, f⟩ + ⟨w_g, g⟩`` of ``otkit.sinkhorn`` on ``PointCloud(x, y)``.

  ``weights = (c, w_f (n,), w_g (m,))``; ``mode`` is the ``grad_mode`` (static). A scalar that
  depends on the potentials (``w_f, w_g ≠ 0``) or only on the value (``w_f = w_g = 0``).
  """
  c, w_f, w_g = weights
  out = otkit.sinkhorn(otkit.PointCloud(x, y), a, b, epsilon=epsilon, tau_a=tau_a, tol=tol,
                       max_iters=max_iters, grad_mode=mode)
  return c * out.value + jnp.dot(w_f, out.f) + jnp.dot(w_g, out.g)


_objective_jit = jax.jit(sinkhorn_objective, static_argnums=0, static_argnames="max_iters")
_objective_grad = jax.jit(jax.grad(sinkhorn_objective, argnums=(1, 2, 3, 4)), static_argnums=0,
                          static_argnames="max_iters")


def _objective_args(x, a, epsilon, tau_a, y, b, weights, tol):
  dtype = np.asarray(x).dtype  # every number in x's dtype: one compilation per dtype
  return jax.tree.map(lambda v: jnp.asarray(v, dtype), (x, a, epsilon, tau_a, y, b, weights, tol))


def sinkhorn_objective_value(mode, x, a, epsilon, tau_a, y, b, weights, tol=1e-12, *,
                             max_iters=3000):
  """:func:`sinkhorn_objective`, jitted once per ``mode``, shapes and dtype for all tests."""
  args = _objective_args(x, a, epsilon, tau_a, y, b, weights, tol)
  return _objective_jit(mode, *args, max_iters=max_iters)


def sinkhorn_objective_grad(mode, x, a, epsilon, tau_a, y, b, weights, tol=1e-12, *,
                            max_iters=3000):
  """The gradient of :func:`sinkhorn_objective` in ``(x, a, epsilon, tau_a)`` together: one
  jitted compilation per ``mode``, shapes and dtype serves every test that needs one of them."""
  args = _objective_args(x, a, epsilon, tau_a, y, b, weights, tol)
  return _objective_grad(mode, *args, max_iters=max_iters)
