"""Optimal transport between Gaussians: the Bures–Wasserstein distance, map and barycentre.

For ``μ_k = N(m_k, C_k)`` and the cost ``‖x − y‖²`` (no ½):

- ``W₂²(μ₀, μ₁) = ‖m₀ − m₁‖² + tr C₀ + tr C₁ − 2 tr (C₀^{1/2} C₁ C₀^{1/2})^{1/2}``;
- the optimal map is affine, ``x ↦ m₁ + A (x − m₀)`` with
  ``A = C₀^{−1/2} (C₀^{1/2} C₁ C₀^{1/2})^{1/2} C₀^{−1/2}`` (symmetric PSD);
- the barycentre ``N(Σ w_k m_k, S)`` solves ``S = Σ_k w_k (S^{1/2} C_k S^{1/2})^{1/2}``, found by
  the fixed-point iteration of Álvarez-Esteban et al.

The covariances may be singular: inverse roots are pseudo-inverse roots, and every derivative is
finite (see :mod:`otkit.closed_form._spectral`). The derivative of ``W₂²`` in ``C₀`` is ``I − A``
(and ``I − A'`` in ``C₁``, ``A'`` the map from ``μ₁`` to ``μ₀``); where a covariance is singular
the derivative is infinite along its kernel, and otkit returns the one of the map restricted to
its range.

References:
  Dowson, Landau, "The Fréchet distance between multivariate normal distributions", J. Multivar.
  Anal. 1982; Olkin, Pukelsheim, "The distance between two random vectors with given dispersion
  matrices", Linear Algebra Appl. 1982.
  Bhatia, Jain, Lim, "On the Bures–Wasserstein distance between positive definite matrices",
  Expo. Math. 2019 (the gradient ``I − A``).
  Álvarez-Esteban, del Barrio, Cuesta-Albertos, Matrán, "A fixed-point approach to barycenters in
  Wasserstein space", J. Math. Anal. Appl. 2016.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from otkit import _validation as V
from otkit.closed_form._spectral import psd_sqrt, psd_sqrt_pair, symmetrize, trace_sqrt
from otkit.solvers._output import Result, result_code

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# Validation


def _check_mean(name: str, m, dtype, d: int | None = None, batch: bool = False) -> Array:
  arr = V.as_float_array(name, m, dtype)
  want = 2 if batch else 1
  shape = "(k, d)" if batch else "(d,)"
  if arr.ndim != want or arr.shape[-1] == 0 or (batch and arr.shape[0] == 0):
    raise ValueError(f"`{name}` must have shape {shape}; got shape {arr.shape}.")
  if d is not None and arr.shape[-1] != d:
    raise ValueError(f"`{name}` has dimension {arr.shape[-1]}; expected {d} to match the other "
                     "arguments.")
  V.check_finite(name, arr)
  return arr


def _check_cov(name: str, c, d: int, dtype, batch: int | None = None) -> Array:
  arr = V.as_float_array(name, c, dtype)
  want = (d, d) if batch is None else (batch, d, d)
  if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
    raise ValueError(f"`{name}` must be a square covariance matrix of shape {want}; got shape "
                     f"{arr.shape}.")
  if arr.shape != want:
    raise ValueError(f"`{name}` must have shape {want} to match the means; got {arr.shape}.")
  V.check_finite(name, arr)
  if V.is_concrete(arr):
    values = np.asarray(arr, dtype=np.float64)
    scale = max(float(np.max(np.abs(values))), np.finfo(np.float64).tiny)
    tol = float(np.sqrt(np.finfo(np.dtype(arr.dtype)).eps)) * scale
    if np.max(np.abs(values - np.swapaxes(values, -1, -2))) > tol:
      raise ValueError(f"`{name}` is not symmetric (max |C − Cᵀ| above {tol:.3g}); pass a "
                       "covariance matrix, e.g. `(C + C.T) / 2`.")
    min_eig = float(np.min(np.linalg.eigvalsh(0.5 * (values + np.swapaxes(values, -1, -2)))))
    if min_eig < -tol * d:
      raise ValueError(f"`{name}` is not positive semi-definite (smallest eigenvalue "
                       f"{min_eig:.3g}); a covariance matrix must have eigenvalues >= 0.")
  return arr


def _check_pair(m0, C0, m1, C1):
  dtype = V.common_dtype(m0, C0, m1, C1)
  m0 = _check_mean("m0", m0, dtype)
  d = m0.shape[0]
  m1 = _check_mean("m1", m1, dtype, d)
  return m0, _check_cov("C0", C0, d, dtype), m1, _check_cov("C1", C1, d, dtype)


# ---------------------------------------------------------------------------------------------
# Kernels (one problem each; batch with vmap)


def transport_matrix(c0: Array, c1: Array) -> Array:
  """``A = C₀^{−1/2} (C₀^{1/2} C₁ C₀^{1/2})^{1/2} C₀^{−1/2}`` (pseudo-inverse roots), ``(d, d)``."""
  root, inv_root = psd_sqrt_pair(c0)
  return symmetrize(inv_root @ psd_sqrt(root @ c1 @ root) @ inv_root)


def _w2_value(m0: Array, c0: Array, m1: Array, c1: Array) -> Array:
  root = psd_sqrt(c0)
  value = (jnp.sum((m0 - m1) ** 2) + jnp.trace(c0) + jnp.trace(c1)
           - 2.0 * trace_sqrt(root @ c1 @ root))
  return jnp.maximum(value, 0.0)


def _is_zero(t) -> bool:
  return isinstance(t, jax.custom_derivatives.SymbolicZero)


_w2 = jax.custom_jvp(_w2_value)


def _w2_jvp(primals, tangents):
  m0, c0, m1, c1 = primals
  dm0, dc0, dm1, dc1 = tangents
  value = _w2_value(m0, c0, m1, c1)
  eye = jnp.eye(m0.shape[0], dtype=m0.dtype)
  out = jnp.zeros_like(value)
  if not _is_zero(dm0):
    out = out + 2.0 * jnp.vdot(m0 - m1, dm0)
  if not _is_zero(dm1):
    out = out - 2.0 * jnp.vdot(m0 - m1, dm1)
  if not _is_zero(dc0):
    out = out + jnp.vdot(eye - transport_matrix(c0, c1), dc0)
  if not _is_zero(dc1):
    out = out + jnp.vdot(eye - transport_matrix(c1, c0), dc1)
  return value, out


_w2.defjvp(_w2_jvp, symbolic_zeros=True)


# ---------------------------------------------------------------------------------------------
# Public functions


@jax.jit
def _gaussian_w2(m0, c0, m1, c1):
  return _w2(m0, c0, m1, c1)


def gaussian_w2(m0, C0, m1, C1) -> Array:
  """Squared 2-Wasserstein (Bures–Wasserstein) distance between two Gaussians.

  ``W₂²(N(m₀, C₀), N(m₁, C₁)) = ‖m₀ − m₁‖² + tr C₀ + tr C₁ − 2 tr (C₀^{1/2} C₁ C₀^{1/2})^{1/2}``
  for the cost ``‖x − y‖²`` (no ½). Two symmetric eigendecompositions. Covariances may be
  singular; the gradient in ``C₀`` is ``I − A`` with ``A`` the map of :func:`gaussian_map`, finite
  everywhere (see the module notes). Batch pairs with ``jax.vmap``.

  Args:
    m0: mean of the first Gaussian, shape ``(d,)``.
    C0: its covariance, symmetric positive semi-definite, shape ``(d, d)``.
    m1, C1: the second Gaussian, shapes ``(d,)`` and ``(d, d)``.

  Returns:
    ``W₂²``, a scalar ``>= 0``.

  Example:
    >>> import jax, jax.numpy as jnp, otkit
    >>> m0, m1 = jnp.zeros(2), jnp.array([3.0, 0.0])
    >>> C0, C1 = jnp.eye(2), jnp.diag(jnp.array([4.0, 0.0]))
    >>> float(otkit.gaussian_w2(m0, C0, m1, C1))  # 9 + (1 - 2)² + (1 - 0)²
    11.0
    >>> batched = jax.vmap(otkit.gaussian_w2)(jnp.stack([m0, m1]), jnp.stack([C0, C1]),
    ...                                       jnp.stack([m1, m0]), jnp.stack([C1, C0]))
  """
  return _gaussian_w2(*_check_pair(m0, C0, m1, C1))


@jax.jit
def _gaussian_map(m0, c0, m1, c1):
  a = transport_matrix(c0, c1)
  return a, m1 - a @ m0


def gaussian_map(m0, C0, m1, C1) -> tuple[Array, Array]:
  """The optimal (Monge) map from ``N(m₀, C₀)`` to ``N(m₁, C₁)``: ``T(x) = A x + b``.

  ``A = C₀^{−1/2} (C₀^{1/2} C₁ C₀^{1/2})^{1/2} C₀^{−1/2}`` is symmetric PSD and ``b = m₁ − A m₀``,
  for the cost ``‖x − y‖²``. When ``C₀`` is singular the inverse roots are pseudo-inverse roots
  (the map on the support of the source). Differentiable, batched with ``jax.vmap``.

  Args:
    m0, C0: the source mean ``(d,)`` and covariance ``(d, d)``.
    m1, C1: the target mean ``(d,)`` and covariance ``(d, d)``.

  Returns:
    ``(A, b)`` with shapes ``(d, d)`` and ``(d,)``; map points ``x (n, d)`` by ``x @ A.T + b``.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> A, b = otkit.gaussian_map(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 4.0 * jnp.eye(2))
    >>> A.tolist(), b.tolist()
    ([[2.0, 0.0], [0.0, 2.0]], [1.0, 1.0])
  """
  return _gaussian_map(*_check_pair(m0, C0, m1, C1))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianBarycenter:
  """Result of :func:`gaussian_barycenter` (a pytree).

  Attributes:
    mean: the barycentre's mean ``Σ w_k m_k``, shape ``(d,)``.
    cov: its covariance ``(d, d)``.
    result: an ``int32`` :class:`otkit.Result` code: ``CONVERGED`` when the relative change of
      ``cov`` fell below ``tol``, ``MAX_ITERS`` when ``max_iters`` came first, ``NON_FINITE``
      when the iteration produced NaN or infinite values.
    n_iters: fixed-point iterations performed.
    error: the last relative change ``‖S_{t+1} − S_t‖_F / ‖S_t‖_F``.
  """

  mean: Array
  cov: Array
  result: Array
  n_iters: Array
  error: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


def _fixed_point_map(s: Array, covs: Array, weights: Array) -> Array:
  """``S ↦ S^{−1/2} (Σ_k w_k (S^{1/2} C_k S^{1/2})^{1/2})² S^{−1/2}``."""
  root, inv_root = psd_sqrt_pair(s)
  inner = jnp.einsum("k,kij->ij", weights, jax.vmap(lambda c: psd_sqrt(root @ c @ root))(covs))
  return symmetrize(inv_root @ inner @ inner @ inv_root)


def _relative_change(new: Array, old: Array) -> Array:
  scale = jnp.maximum(jnp.linalg.norm(old), jnp.finfo(old.dtype).tiny)
  return jnp.linalg.norm(new - old) / scale


def _iterate(fn, x0, max_iters: int, tol):
  """``x ← fn(x)`` until the relative change is ``<= tol`` or ``max_iters`` (a while loop)."""

  def body(state):
    x, _, it = state
    new = fn(x)
    return new, _relative_change(new, x), it + 1

  def cond(state):
    _, err, it = state
    return (it < max_iters) & (err > tol)

  inf = jnp.asarray(jnp.inf, x0.dtype)
  return jax.lax.while_loop(cond, body, (x0, inf, jnp.asarray(0, jnp.int32)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _implicit(s, covs, weights, tol, max_iters):
  """Returns the fixed point ``s`` of ``_fixed_point_map``; its VJP is the implicit one."""
  return s


def _implicit_fwd(s, covs, weights, tol, max_iters):
  return s, (s, covs, weights, tol)


def _implicit_bwd(max_iters, res, g):
  s, covs, weights, tol = res
  _, vjp_s = jax.vjp(lambda s_: _fixed_point_map(s_, covs, weights), s)
  u, _, _ = _iterate(lambda u: g + vjp_s(u)[0], g, max_iters, tol)
  _, vjp_theta = jax.vjp(lambda c, w: _fixed_point_map(s, c, w), covs, weights)
  d_covs, d_weights = vjp_theta(u)
  return jnp.zeros_like(s), d_covs, d_weights, jnp.zeros_like(tol)


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _gaussian_barycenter(means, covs, weights, tol, max_iters):
  weights = weights / jnp.sum(weights)
  covs = jax.vmap(symmetrize)(covs)
  covs_0, weights_0 = jax.lax.stop_gradient((covs, weights))
  s0 = jnp.einsum("k,kij->ij", weights_0, covs_0)
  s, err, it = _iterate(lambda s: _fixed_point_map(s, covs_0, weights_0), s0, max_iters, tol)
  s = _implicit(s, covs, weights, tol, max_iters)
  mean = weights @ means
  failed = ~(jnp.all(jnp.isfinite(s)) & jnp.all(jnp.isfinite(mean))) | jnp.isnan(err)
  result = result_code(err <= tol, failed, stalled=jnp.asarray(False))
  return GaussianBarycenter(mean=mean, cov=s, result=result, n_iters=it, error=err)


def gaussian_barycenter(means, covs, weights=None, *, tol=None,
                        max_iters=100) -> GaussianBarycenter:
  """Wasserstein barycentre ``argmin_ν Σ_k w_k W₂²(ν, N(m_k, C_k))`` of Gaussians.

  The barycentre is ``N(Σ w_k m_k, S)``; ``S`` is the fixed point of
  ``S ↦ S^{−1/2} (Σ_k w_k (S^{1/2} C_k S^{1/2})^{1/2})² S^{−1/2}`` started at ``Σ w_k C_k``
  (Álvarez-Esteban et al. 2016; one step when the covariances commute). Gradients with respect
  to the means, covariances and weights are implicit (an adjoint fixed-point solve at ``S``), not
  unrolled.

  Args:
    means: ``(k, d)`` means of the Gaussians.
    covs: ``(k, d, d)`` covariances, symmetric PSD; the barycentre needs one of them definite
      enough to span the space it lives in.
    weights: ``(k,)`` non-negative weights, normalised to sum to 1; ``None`` means uniform.
    tol: tolerance on the relative change of ``S`` (default ``eps^{3/4}`` of the dtype).
    max_iters: static cap on the iterations (also for the adjoint solve).

  Returns:
    :class:`GaussianBarycenter` with ``mean (d,)``, ``cov (d, d)`` and the diagnostics
    (``result``, ``converged == (result == Result.CONVERGED)``, ``n_iters``, ``error``).

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> covs = jnp.stack([jnp.diag(jnp.array([1.0, 4.0])), jnp.diag(jnp.array([9.0, 0.0]))])
    >>> bar = otkit.gaussian_barycenter(jnp.zeros((2, 2)), covs)
    >>> jnp.round(jnp.diag(bar.cov), 6).tolist(), bool(bar.converged)
    ([4.0, 1.0], True)
  """
  dtype = V.common_dtype(means, covs, weights)
  means = _check_mean("means", means, dtype, batch=True)
  k, d = means.shape
  covs = _check_cov("covs", covs, d, dtype, batch=k)
  weights = V.check_weights("weights", weights, k, dtype)
  max_iters = V.check_static_int("max_iters", max_iters)
  tol = float(np.finfo(np.dtype(dtype)).eps ** 0.75) if tol is None else tol
  tol = V.check_positive("tol", tol, dtype)
  return _gaussian_barycenter(means, covs, weights, tol, max_iters)
