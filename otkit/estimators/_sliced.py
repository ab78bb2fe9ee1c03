"""Sliced Wasserstein: Monte-Carlo over random directions, control variates, max-sliced.

``SW_p^p(μ, ν) = E_{θ ~ U(S^{d−1})} W_p^p(θ♯μ, θ♯ν)``; each 1-D term is exact (sorting, see
:func:`otkit.wasserstein_1d`). Directions are drawn once from the key and evaluated in chunks
(one ``lax.map`` over chunks, vmapped within a chunk), so memory is ``O((n + m) · chunk)``.

Control variates (Nguyen & Ho): with ``Δm = m_μ − m_ν`` and the covariances ``Σ_μ, Σ_ν``,

- ``"lower"``: ``G(θ) = (θᵀΔm)²`` with ``E[G] = ‖Δm‖² / d``;
- ``"upper"``: ``G(θ) = (θᵀΔm)² + θᵀΣ_μθ + θᵀΣ_νθ`` with ``E[G] = (‖Δm‖² + tr Σ_μ + tr Σ_ν) / d``;

both bound ``W₂²`` between the Gaussian fits of the projections. The estimate is
``mean_l [W(θ_l) − γ_l (G(θ_l) − E[G])]`` where ``γ_l`` is the least-squares slope of ``W`` on
``G`` fitted on the *other* projections (leave-one-out): ``γ_l`` is independent of ``θ_l``, so the
estimator is exactly unbiased, while the plug-in slope of the paper carries an ``O(1/L)`` bias.
``θᵀΣθ`` is the weighted variance of the projected points (no ``d × d`` matrix).

Weights policy (as everywhere in otkit): ``a`` and ``b`` must have the same total mass ``M``
(a ``ValueError`` naming them otherwise; ``None`` is uniform of mass 1). They are used as given:
the value is the OT cost between the measures of mass ``M``, ``M`` times that between the
normalised measures (the convention of :func:`otkit.sinkhorn`'s transport cost).

References:
  Bonneel, Rabin, Peyré, Pfister, "Sliced and Radon Wasserstein Barycenters of Measures",
  J. Math. Imaging Vis. 2015.
  Nguyen, Ho, "Sliced Wasserstein Estimation with Control Variates", ICLR 2024.
  Deshpande et al., "Max-Sliced Wasserstein Distance and its use for GANs", CVPR 2019.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from otkit import _sharding, _validation as V
from otkit.closed_form import _one_d
from otkit.closed_form import _sorting
from otkit.solvers._output import Result, finite_result

Array = jax.Array
CONTROL_VARIATES = (None, "lower", "upper")
# Budget for the projected points of one chunk, which sets the default chunk size. Each chunk
# also streams the clouds once through the projection, so for large d up to 4× more is allowed.
CHUNK_BYTES = 16 * 2**20
MAX_CHUNK = 128


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SlicedOutput:
  """Result of :func:`sliced_wasserstein` (a pytree).

  Attributes:
    value: the Monte-Carlo estimate of ``SW_p^p`` (unbiased); ``value ** (1 / p)`` is the
      sliced distance.
    std_error: its standard error, ``std(terms) / √L`` (``inf`` for ``L = 1``).
    coef: the control-variate coefficient fitted on all projections (``0`` without one).
    result: an ``int32`` :class:`otkit.Result` code: ``CONVERGED`` when ``value`` is finite,
      else ``NON_FINITE`` (the estimate is not iterative: there is nothing else to report).
  """

  value: Array
  std_error: Array
  coef: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MaxSlicedOutput:
  """Result of :func:`max_sliced_wasserstein` (a pytree).

  Attributes:
    value: ``W_p^p`` of the projections on ``direction`` (a lower bound of max-sliced ``W_p^p``).
    direction: the best unit direction found, shape ``(d,)``.
    result: an ``int32`` :class:`otkit.Result` code: ``CONVERGED`` when ``value`` and
      ``direction`` are finite, else ``NON_FINITE``. The ascent runs a fixed budget of steps
      with no stopping test (its value is a lower bound whatever the budget), so it has no
      iteration cap to report.
  """

  value: Array
  direction: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def directions(key: Array, n: int, d: int, dtype) -> Array:
  """``n`` independent directions uniform on the unit sphere of ``R^d``, shape ``(n, d)``.

  Jitted on its own so that its (slow to compile) random-bit generator is compiled once per
  ``(n, d, dtype)``, not once per configuration of the estimators; inside a caller's ``jit`` it is
  inlined as usual.
  """
  theta = jax.random.normal(key, (n, d), dtype)
  norm = jnp.linalg.norm(theta, axis=-1, keepdims=True)
  return theta / jnp.maximum(norm, jnp.finfo(dtype).tiny)


def _project(points: Array, theta: Array) -> Array:
  return jnp.dot(points, theta, precision=jax.lax.Precision.HIGHEST)


def _terms(xp, yp, a, b, uniform, p, impl, grid, control_variate):
  """``W(θ)`` and, with a control variate, ``G(θ)`` from the projections ``xp (n,)``, ``yp (m,)``
  of the two clouds on one direction ``θ``."""
  if uniform:
    w = _one_d.w1d_uniform(xp, yp, p, impl, grid)
  else:
    w = _one_d.w1d_weighted(xp, yp, a, b, p, impl)
  if control_variate is None:
    return w, jnp.zeros((), w.dtype)
  mx, my = jnp.dot(a, xp), jnp.dot(b, yp)
  g = (mx - my) ** 2
  if control_variate == "upper":
    g = g + jnp.dot(a, (xp - mx) ** 2) + jnp.dot(b, (yp - my) ** 2)
  return w, g


def _chunked_terms(thetas, x, y, a, b, grid, chunk_size, **options):
  """``_terms`` for every direction in ``thetas (L, d)``, ``chunk_size`` directions at a time.

  A chunk projects with one matrix product ``(n, d) @ (d, c)`` (no transposed copy of the
  clouds) and sorts the ``c`` projections as rows. The last chunk is padded with repeated
  directions whose terms are dropped.
  """
  n_proj, d = thetas.shape
  n_chunks = -(-n_proj // chunk_size)
  pad = jnp.broadcast_to(thetas[:1], (n_chunks * chunk_size - n_proj, d))
  chunks = jnp.concatenate([thetas, pad]).reshape(n_chunks, chunk_size, d)
  per_direction = jax.vmap(functools.partial(_terms, grid=grid, **options),
                           in_axes=(0, 0, None, None))

  def chunk(theta_c):
    return per_direction(_project(x, theta_c.T).T, _project(y, theta_c.T).T, a, b)

  w, g = jax.lax.map(chunk, chunks)
  return w.reshape(-1)[:n_proj], g.reshape(-1)[:n_proj]


def _expectations(x, y, a, b) -> tuple[Array, Array]:
  """``E[G_low]`` and ``E[G_up]`` over uniform directions (closed forms)."""
  mx, my = a @ x, b @ y
  shift = jnp.sum((mx - my) ** 2)
  tr_x = a @ jnp.sum((x - mx) ** 2, axis=-1)
  tr_y = b @ jnp.sum((y - my) ** 2, axis=-1)
  d = x.shape[-1]
  return shift / d, (shift + tr_x + tr_y) / d


def combine(w: Array, g: Array | None, expectation: Array | None) -> tuple[Array, Array, Array]:
  """Estimate, standard error and coefficient from per-direction terms ``w, g (L,)``.

  With ``g = None`` this is the plain mean. Otherwise each term is corrected by the
  leave-one-out least-squares slope ``γ_l = Ĉov_{−l}(W, G) / V̂ar_{−l}(G)``.
  """
  n = w.shape[0]
  if g is None or n < 3:
    residuals, coef = w, jnp.zeros((), w.dtype)
  else:
    gc = g - expectation
    wt, gt = w - jnp.mean(w), gc - jnp.mean(gc)
    cov, var = jnp.sum(wt * gt), jnp.sum(gt * gt)
    scale = n / (n - 1.0)
    cov_l, var_l = cov - scale * wt * gt, var - scale * gt * gt
    # G constant up to rounding (e.g. d = 1) must not be fitted: its rounding noise would be.
    noise = n * (16 * jnp.finfo(w.dtype).eps * jnp.max(jnp.abs(g))) ** 2
    ok = var_l > jax.lax.stop_gradient(noise)
    gamma_l = jnp.where(ok, cov_l / jnp.where(ok, var_l, 1.0), 0.0)
    residuals = w - gamma_l * gc
    fit = var > jax.lax.stop_gradient(noise)
    coef = jnp.where(fit, cov / jnp.where(fit, var, 1.0), 0.0)
  value = jnp.mean(residuals)
  if n == 1:
    return value, jnp.full((), jnp.inf, w.dtype), coef
  std_error = jnp.std(jax.lax.stop_gradient(residuals), ddof=1) / np.sqrt(n)
  return value, std_error, jax.lax.stop_gradient(coef)


def _normalised(a: Array, b: Array) -> tuple[Array, Array, Array]:
  """``a / Σa``, ``b / Σb`` and the common mass ``(Σa + Σb) / 2`` of equal-mass weights."""
  sa, sb = jnp.sum(a), jnp.sum(b)
  return a / sa, b / sb, 0.5 * (sa + sb)


@functools.partial(jax.jit, static_argnames=("uniform", "p", "control_variate", "chunk_size",
                                             "impl", "mesh"))
def _sliced(thetas, x, y, a, b, uniform, p, control_variate, chunk_size, impl, mesh):
  a, b, mass = _normalised(a, b)
  grid = _one_d.uniform_grid(x.shape[0], y.shape[0], x.dtype) if uniform else None
  # With a mesh each device projects and sorts its share of the directions, with XLA's sort
  # (host callbacks inside a split computation can stall its devices).
  sort_impl = impl if mesh is None else "xla"

  def terms(thetas, clouds):
    return _chunked_terms(thetas, *clouds, chunk_size, uniform=uniform, p=p, impl=sort_impl,
                          control_variate=control_variate)

  w, g = _sharding.map_split(terms, mesh, thetas, (x, y, a, b, grid))
  if not uniform:
    w = mass * w  # the measures as given, of mass M
  if control_variate is None:
    value, std_error, coef = combine(w, None, None)
  else:
    e_low, e_up = _expectations(x, y, a, b)
    value, std_error, coef = combine(w, g, e_low if control_variate == "lower" else e_up)
  return SlicedOutput(value=value, std_error=std_error, coef=coef, result=finite_result(value))


def sliced_value(thetas: Array, x: Array, y: Array, a: Array, b: Array, *, p: float = 2.0,
                 uniform: bool = False, control_variate: str | None = None,
                 chunk_size: int | None = None, sort_impl: str = "auto",
                 mesh=None) -> SlicedOutput:
  """The sliced estimate over given directions, on inputs already validated.

  The building block of :func:`sliced_wasserstein` for callers that fix the directions once
  (e.g. a flow energy, :func:`otkit.flows.sliced_wasserstein_to`): nothing is checked.

  Args:
    thetas: ``(L, d)`` unit directions (e.g. from :func:`directions`).
    x: ``(n, d)``, y: ``(m, d)`` points; a: ``(n,)``, b: ``(m,)`` weights of equal mass.
    p: exponent of the ground cost (static).
    uniform: static; ``True`` declares ``a`` and ``b`` uniform of mass 1 (a faster kernel
      that ignores their values).
    control_variate: ``None``, ``"lower"`` or ``"upper"`` (static).
    chunk_size: directions per chunk (static; ``None``: :func:`default_chunk_size`).
    sort_impl: ``"auto"``, ``"numpy"`` or ``"xla"`` (static).
    mesh: a ``jax.sharding.Mesh`` over whose devices the directions are divided, or ``None``.

  Returns:
    :class:`SlicedOutput`.
  """
  n_proj = thetas.shape[0]
  if chunk_size is None:
    chunk_size = default_chunk_size(x.shape[0], y.shape[0], x.shape[1], x.dtype.itemsize, n_proj)
  return _sliced(thetas, x, y, a, b, uniform, p, control_variate, min(chunk_size, n_proj),
                 sort_impl, mesh)


def _check_clouds(x, y, a, b):
  dtype = V.common_dtype(x, y, a, b)
  x, y = V.check_points("x", x, dtype), V.check_points("y", y, dtype)
  if x.shape[1] != y.shape[1]:
    raise ValueError(f"`x` and `y` must have the same dimension d; got {x.shape[1]} and "
                     f"{y.shape[1]}.")
  uniform = a is None and b is None
  a = V.check_weights("a", a, x.shape[0], dtype)
  b = V.check_weights("b", b, y.shape[0], dtype)
  V.check_equal_mass(a, b)
  return x, y, a, b, uniform


def default_chunk_size(n: int, m: int, d: int, itemsize: int, n_projections: int) -> int:
  by_memory = CHUNK_BYTES // ((n + m) * itemsize)
  chunk = max(by_memory, min(d // 8, 4 * by_memory))
  return max(1, min(MAX_CHUNK, chunk, n_projections))


def sliced_wasserstein(key, x, y, a=None, b=None, *, n_projections=128, p=2,
                       control_variate=None, chunk_size=None, sort_impl="auto",
                       mesh=None) -> SlicedOutput:
  """Monte-Carlo estimate of the sliced Wasserstein ``SW_p^p`` between two point clouds.

  Draws ``L = n_projections`` directions ``θ_l`` uniformly on the sphere from ``key`` and
  averages the exact 1-D ``W_p^p(θ_l♯μ, θ_l♯ν)`` (cost ``|s − t|^p``, no ½). Optionally corrects
  the average with a Gaussian control variate (module notes), which cuts the variance several
  times when the measures differ by a shift (``"lower"``) or in spread (``"upper"``). Memory is
  ``O((n + m) · chunk_size)``; differentiable in ``x``, ``y``, ``a``, ``b``; batch with ``jax.vmap``
  (e.g. over keys).

  Args:
    key: a PRNG key (``jax.random.key``); required, split it for independent estimates.
    x: source points ``(n, d)``; y: target points ``(m, d)``.
    a: source weights ``(n,)``, b: target weights ``(m,)``; non-negative, of the same total mass
      ``M`` (a ``ValueError`` otherwise), used as given: the value is that of measures of mass
      ``M``. Default uniform ``1/n`` (mass 1).
    n_projections: number ``L >= 1`` of random directions (static).
    p: exponent ``>= 1`` of the ground cost (static).
    control_variate: ``None``, ``"lower"`` or ``"upper"`` (static); any ``p`` is allowed, the
      variates are designed for ``p = 2``.
    chunk_size: directions evaluated together (static); default: as many as fit in 16 MiB of
      projected points (up to 4× more for large ``d``), at most 128. The result does not depend
      on it.
    sort_impl: ``"auto"`` (NumPy's sort on CPU, XLA's elsewhere), ``"numpy"`` or ``"xla"``.
    mesh: a ``jax.sharding.Mesh`` (static) to divide the directions among its devices, each
      projecting and sorting its share of them with XLA's sort (points arriving split along
      ``n`` are gathered once); ``None`` (default): one device. The estimate is the same.

  Returns:
    :class:`SlicedOutput` with the estimate of ``SW_p^p``, its standard error and ``result``
    (``NON_FINITE`` if the estimate is not finite).

  Example:
    >>> import jax, otkit
    >>> kx, ky, key = jax.random.split(jax.random.key(0), 3)
    >>> x = jax.random.normal(kx, (500, 10))
    >>> y = 1.5 * jax.random.normal(ky, (500, 10)) + 1.0
    >>> out = otkit.sliced_wasserstein(key, x, y, n_projections=100, control_variate="upper")
    >>> bool(out.std_error < 0.1 * out.value)
    True
  """
  key = V.check_key(key)
  x, y, a, b, uniform = _check_clouds(x, y, a, b)
  n_projections = V.check_static_int("n_projections", n_projections)
  p = _one_d.check_order(p)
  control_variate = V.check_choice("control_variate", control_variate, CONTROL_VARIATES)
  impl = V.check_choice("sort_impl", sort_impl, _sorting.IMPLS)
  if chunk_size is not None:
    chunk_size = V.check_static_int("chunk_size", chunk_size)
  thetas = directions(key, n_projections, x.shape[1], x.dtype)
  return sliced_value(thetas, x, y, a, b, p=p, uniform=uniform, control_variate=control_variate,
                      chunk_size=chunk_size, sort_impl=impl, mesh=_sharding.check_mesh(mesh))


@functools.partial(jax.jit, static_argnames=("uniform", "p", "n_steps", "impl"))
def _max_sliced(theta0, x, y, a, b, learning_rate, uniform, p, n_steps, impl):
  a, b, mass = _normalised(a, b)
  xs, ys, as_, bs = jax.lax.stop_gradient((x, y, a, b))

  def objective(theta, x, y, a, b):
    xp, yp = _project(x, theta), _project(y, theta)
    if uniform:
      return _one_d.w1d(xp, yp, None, None, p, impl)
    return _one_d.w1d_weighted(xp, yp, a, b, p, impl)

  value_and_grad = jax.vmap(jax.value_and_grad(objective), in_axes=(0, None, None, None, None))
  optimizer = optax.adam(learning_rate)

  def step(carry, _):
    theta, state, best_value, best_theta = carry
    values, grads = value_and_grad(theta, xs, ys, as_, bs)
    better = values > best_value
    best_value = jnp.where(better, values, best_value)
    best_theta = jnp.where(better[:, None], theta, best_theta)
    grads = grads - jnp.sum(grads * theta, axis=-1, keepdims=True) * theta  # on the sphere
    updates, state = optimizer.update(-grads, state, theta)
    theta = optax.apply_updates(theta, updates)
    theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
    return (theta, state, best_value, best_theta), None

  init = (theta0, optimizer.init(theta0), jnp.full(theta0.shape[:1], -jnp.inf, x.dtype), theta0)
  (theta, _, best_value, best_theta), _ = jax.lax.scan(step, init, None, length=n_steps)
  last = jax.vmap(objective, in_axes=(0, None, None, None, None))(theta, xs, ys, as_, bs)
  best_theta = jnp.where((last > best_value)[:, None], theta, best_theta)
  best_value = jnp.maximum(last, best_value)
  direction = jax.lax.stop_gradient(best_theta[jnp.argmax(best_value)])
  value = objective(direction, x, y, a, b)
  if not uniform:
    value = mass * value  # the measures as given, of mass M
  return MaxSlicedOutput(value=value, direction=direction,
                         result=finite_result(value, direction))


def max_sliced_wasserstein(key, x, y, a=None, b=None, *, p=2, n_starts=8, n_steps=100,
                           learning_rate=0.05, sort_impl="auto") -> MaxSlicedOutput:
  """Max-sliced Wasserstein ``max_θ W_p^p(θ♯μ, θ♯ν)`` by projected gradient ascent on the sphere.

  Runs Adam on ``n_starts`` random unit directions for ``n_steps`` steps, each step followed by
  a projection back onto the sphere (the gradient is taken along the sphere), and keeps the best
  direction seen. The problem is not concave, so the value is a lower bound that more starts or
  steps can only raise. Its gradient in ``x``, ``y``, ``a``, ``b`` is the one of ``W_p^p`` along the
  returned direction (envelope theorem), so it can be used as a loss.

  Args:
    key: a PRNG key for the starting directions (required).
    x: source points ``(n, d)``; y: target points ``(m, d)``.
    a, b: weights ``(n,)`` and ``(m,)`` of the same total mass, used as given (as in
      :func:`sliced_wasserstein`); default uniform ``1/n``.
    p: exponent ``>= 1`` of the ground cost (static).
    n_starts: number of random starting directions (static).
    n_steps: Adam steps per start (static).
    learning_rate: Adam step size in radians (traced).
    sort_impl: as in :func:`sliced_wasserstein`.

  Returns:
    :class:`MaxSlicedOutput` with ``value``, ``direction (d,)`` and ``result`` (``NON_FINITE``
    if either is not finite).

  Example:
    >>> import jax, jax.numpy as jnp, otkit
    >>> x = jax.random.normal(jax.random.key(0), (200, 5))
    >>> out = otkit.max_sliced_wasserstein(jax.random.key(1), x, x.at[:, 2].add(3.0))
    >>> round(float(out.value), 3), round(abs(float(out.direction[2])), 3)
    (9.0, 1.0)
  """
  key = V.check_key(key)
  x, y, a, b, uniform = _check_clouds(x, y, a, b)
  p = _one_d.check_order(p)
  n_starts = V.check_static_int("n_starts", n_starts)
  n_steps = V.check_static_int("n_steps", n_steps, minimum=0)
  learning_rate = V.check_positive("learning_rate", learning_rate, x.dtype)
  impl = V.check_choice("sort_impl", sort_impl, _sorting.IMPLS)
  theta0 = directions(key, n_starts, x.shape[1], x.dtype)
  return _max_sliced(theta0, x, y, a, b, learning_rate, uniform, p, n_steps, impl)
