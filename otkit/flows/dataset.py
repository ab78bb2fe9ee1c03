"""Dataset optimisation: gradient flows of labelled datasets under OTDD and user constraints.

A labelled dataset ``{(x_i, l_i)}`` is a measure on features × labels, and each label is
represented by the Gaussian ``N(μ_l, Σ_l)`` of its features. :func:`dataset_flow` moves a source
dataset to decrease ``λ · OTDD²(source, target) + constraint(x)``, with the four ways of
treating labels of the reference code:

========================  =============================  =====================================
mode                      what moves                     class statistics
========================  =============================  =====================================
``"xonly"``               features; labels fixed         recomputed from ``x``, not differentiated
``"xonly-attached"``      features; labels fixed         recomputed and differentiated through
``"xytied"``              features and ``(μ_l, Σ_l)``    variables of the flow (``Σ = L Lᵀ``);
                                                         assignments fixed
``"xyaugm"``              particles ``[x, μ_l, σ_l]``    diagonal ``Σ``; labels recovered at the
                                                         end by k-means on ``(μ, σ)``
========================  =============================  =====================================

In ``"xytied"`` the statistics of class ``l`` move with the mean velocity of its ``n_l``
particles, ``−τ (n / n_l) ∂F/∂μ_l``. In ``"xyaugm"`` OTDD is the plain Sinkhorn divergence
between the augmented particles, exact for diagonal covariances
(``W₂²(N(μ, diag σ²), N(μ', diag σ'²)) = ‖μ − μ'‖² + ‖σ − σ'‖²``).

Constraints are :class:`otkit.flows.Energy` objects of the features, e.g.
:func:`margin_potential` (linear separability) or :func:`class_collapse`.

References:
  Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from otkit import _validation as V
from otkit.closed_form._spectral import psd_sqrt
from otkit.datasets import _statistics as ST
from otkit.flows import _flow
from otkit.flows._energies import (Energy, SinkhornTo, _single, _static_field, as_energy,
                                   sinkhorn_divergence_to)
from otkit.flows._otdd_energy import _codes, otdd_term
from otkit.solvers import Result

Array = jax.Array
MODES = ("xonly", "xonly-attached", "xytied", "xyaugm")

__all__ = ["DatasetFlowOutput", "augment", "class_collapse", "dataset_flow", "kmeans_labels",
           "margin_potential"]


# ---------------------------------------------------------------------------------------------
# Constraints (energies of the features that know the labels)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Margin:
  """``(1/n) Σ_i max(0, margin − s_i (⟨w, x_i⟩ − b))``: the hinge loss of a fixed hyperplane."""

  signs: Array
  w: Array
  b: Array
  margin: Array

  def value(self, x: Array) -> Array:
    dtype = x.dtype
    scores = x @ self.w.astype(dtype) - self.b.astype(dtype)
    return jnp.mean(jax.nn.relu(self.margin.astype(dtype) - self.signs.astype(dtype) * scores))

  def check(self, x: Array) -> None:
    if self.signs.shape != x.shape[:1] or self.w.shape != x.shape[1:]:
      raise ValueError(f"`signs` {self.signs.shape} and `w` {self.w.shape} must have shapes "
                       f"({x.shape[0]},) and ({x.shape[1]},) for particles of shape {x.shape}.")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WithinClass:
  """``(1/2n) Σ_i ‖x_i − μ_{l_i}(x)‖²``, the within-class variance (its flow collapses classes)."""

  codes: Array
  k: int = _static_field()

  def value(self, x: Array) -> Array:
    _, means, _ = ST.segment_statistics(x, self.codes, self.k)
    return 0.5 * jnp.mean(jnp.sum((x - means[self.codes]) ** 2, axis=1))

  def check(self, x: Array) -> None:
    if self.codes.shape != x.shape[:1]:
      raise ValueError(f"`labels` has {self.codes.shape[0]} entries but there are {x.shape[0]} "
                       "particles; give one label per particle.")


def margin_potential(signs, w, b=0.0, *, margin=1.0) -> Energy:
  """Linear separability: the hinge loss of the particles against a fixed hyperplane.

  ``(1/n) Σ_i max(0, margin − s_i (⟨w, x_i⟩ − b))``; its flow pushes each particle to the side
  ``s_i`` of the hyperplane ``⟨w, x⟩ = b`` until it is ``margin / ‖w‖`` away.

  Args:
    signs: the side of each particle, ``±1``, shape ``(n,)`` (e.g. ``2 * (labels == c) − 1``).
    w: the normal of the hyperplane ``(d,)``; b: its offset (traced).
    margin: the hinge margin (traced).

  Returns:
    An :class:`otkit.flows.Energy` of the features.

  References:
    Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> F = otkit.flows.dataset.margin_potential(jnp.array([1.0, -1.0]), jnp.array([1.0, 0.0]))
    >>> float(F(jnp.array([[2.0, 0.0], [0.5, 0.0]])))  # (0 + 1.5) / 2
    0.75
  """
  w = V.as_float_array("w", w)
  if w.ndim != 1 or not w.size:
    raise ValueError(f"`w` must be a non-empty vector (d,); got shape {w.shape}.")
  signs = V.as_float_array("signs", signs, w.dtype)
  if signs.ndim != 1 or not signs.size:
    raise ValueError(f"`signs` must have shape (n,) with n >= 1; got {signs.shape}.")
  b, margin = V.as_float_array("b", b, w.dtype), V.as_float_array("margin", margin, w.dtype)
  for name, v in (("b", b), ("margin", margin)):
    if v.ndim:
      raise ValueError(f"`{name}` must be a scalar; got shape {v.shape}.")
  for name, v in (("w", w), ("signs", signs), ("b", b), ("margin", margin)):
    V.check_finite(name, v)
  return _single(Margin(signs, w, b, margin))


def class_collapse(labels, *, num_classes=None) -> Energy:
  """The within-class variance ``(1/2n) Σ_i ‖x_i − μ_{l_i}‖²`` (means recomputed from ``x``).

  Its flow contracts every class towards its mean (class collapse); with a negative weight it
  penalises collapse instead.

  Args:
    labels: integer labels of the particles ``(n,)``.
    num_classes: static ``k`` for labels already in ``[0, k)``.

  Returns:
    An :class:`otkit.flows.Energy` of the features.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> F = otkit.flows.dataset.class_collapse(jnp.array([0, 0, 1]))
    >>> round(float(F(jnp.array([[0.0], [2.0], [5.0]]))), 6)  # (1 + 1 + 0) / 6
    0.333333
  """
  shape = jnp.shape(labels) if not isinstance(labels, str) else ()
  if len(shape) != 1:
    raise ValueError(f"`labels` must be integer labels of shape (n,); got {labels!r:.60}.")
  codes, k = _codes("labels", labels, shape[0], num_classes)
  return _single(WithinClass(codes, k=k))


# ---------------------------------------------------------------------------------------------
# Tied statistics and augmented particles


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TiedEnergy:
  """``λ · OTDD²`` with the source class statistics as variables, plus a feature constraint.

  The particles are a dict ``{"x": (n, d), "means": (k, d), "factors": (k, d, d)}`` with
  ``Σ_l = L_l L_lᵀ``.
  """

  otdd: object
  weight: Array
  constraint: Energy

  def init(self, p):
    return self.constraint.init(p["x"])

  def evaluate(self, p, state):
    covs = jnp.einsum("kij,klj->kil", p["factors"], p["factors"])
    value = self.otdd.value_with_statistics(p["x"], p["means"], covs)
    extra, state = self.constraint.evaluate(p["x"], state)
    return self.weight.astype(value.dtype) * value + extra, state


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AugmentedEnergy:
  """``λ · S_ε`` between augmented particles ``[x, μ, σ]`` (coordinates weighted by
  ``√λ_x, √λ_y``) plus a constraint on the feature block ``x``."""

  divergence: SinkhornTo
  coordinate_weights: Array
  weight: Array
  constraint: Energy
  d: int = _static_field()

  def init(self, z):
    return self.divergence.init(z), self.constraint.init(z[:, :self.d])

  def evaluate(self, z, state):
    value, s_div = self.divergence.evaluate(z * self.coordinate_weights.astype(z.dtype), state[0])
    extra, s_con = self.constraint.evaluate(z[:, :self.d], state[1])
    return self.weight.astype(value.dtype) * value + extra, (s_div, s_con)


def augment(x, labels, *, num_classes: int | None = None) -> Array:
  """Augmented particles ``[x_i, μ_{l_i}, σ_{l_i}]`` of shape ``(n, 3d)`` (``σ = √diag Σ``).

  Args:
    x: features ``(n, d)``; labels: integer labels ``(n,)``.
    num_classes: static ``k`` for labels already in ``[0, k)``.

  Returns:
    The augmented representation of OTDD with diagonal covariances, ``(n, 3d)``.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> z = otkit.flows.dataset.augment(jnp.array([[0.0], [2.0], [5.0]]), jnp.array([0, 0, 1]))
    >>> z.tolist()
    [[0.0, 1.0, 1.0], [2.0, 1.0, 1.0], [5.0, 5.0, 0.0]]
  """
  x = V.check_points("x", x)
  codes, k = _codes("labels", labels, x.shape[0], num_classes)
  return _augment(x, codes, k)


@functools.partial(jax.jit, static_argnames=("k",))
def _augment(x, codes, k):
  _, means, covs = ST.segment_statistics(x, codes, k)
  sigma = jnp.sqrt(jnp.maximum(jnp.diagonal(covs, axis1=1, axis2=2), 0.0))
  return jnp.concatenate([x, means[codes], sigma[codes]], axis=1)


@functools.partial(jax.jit, static_argnames=("k", "n_iters"))
def _kmeans(points, k, n_iters):
  """Lloyd's iterations from a farthest-first start; returns the assignment ``(n,)``."""
  def farthest(centres, i):
    dist = jnp.min(jnp.sum((points[:, None] - centres[None]) ** 2, -1)
                   + jnp.where(jnp.arange(k) < i, 0.0, jnp.inf)[None], axis=1)
    return centres.at[i].set(points[jnp.argmax(dist)]), None

  start = jnp.zeros((k, points.shape[1]), points.dtype).at[0].set(jnp.mean(points, 0))
  start = start.at[0].set(points[jnp.argmin(jnp.sum((points - start[0]) ** 2, 1))])
  centres, _ = jax.lax.scan(farthest, start, jnp.arange(1, k))

  def assign(centres):
    return jnp.argmin(jnp.sum((points[:, None] - centres[None]) ** 2, -1), axis=1)

  def lloyd(centres, _):
    labels = assign(centres)
    sums = jax.ops.segment_sum(points, labels, k)
    counts = jax.ops.segment_sum(jnp.ones(points.shape[0], points.dtype), labels, k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres), None

  centres, _ = jax.lax.scan(lloyd, centres, None, length=n_iters)
  return assign(centres)


def kmeans_labels(points, k: int, *, n_iters: int = 50) -> Array:
  """Cluster labels ``(n,)`` in ``[0, k)`` by k-means (deterministic farthest-first start).

  Args:
    points: ``(n, p)``, e.g. the ``(μ, σ)`` block of augmented particles.
    k: number of clusters (static).
    n_iters: Lloyd iterations (static).

  Returns:
    Integer labels ``(n,)``.

  Example:
    >>> import jax.numpy as jnp, otkit
    >>> otkit.flows.dataset.kmeans_labels(jnp.array([[0.0], [0.1], [5.0]]), 2).tolist()
    [0, 0, 1]
  """
  points = V.check_points("points", points)
  k = V.check_static_int("k", k)
  if k > points.shape[0]:
    raise ValueError(f"`k` = {k} is larger than the number of points {points.shape[0]}.")
  return _kmeans(points, k, V.check_static_int("n_iters", n_iters))


# ---------------------------------------------------------------------------------------------
# The flow


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DatasetFlowOutput:
  """Result of :func:`dataset_flow` (a pytree).

  Attributes:
    frames: the features along the flow ``(k, n, d)`` (frame 0 is the source).
    labels: the labels at the end ``(n,)`` (class indices; recovered by k-means in ``"xyaugm"``).
    means, covs: the class statistics at the end, ``(c, d)`` and ``(c, d, d)`` (the flow's
      variables in ``"xytied"``; diagonal in ``"xyaugm"``; those of the final features otherwise).
    steps, values, n_steps, stopped, failed, result: as in :class:`otkit.flows.FlowOutput`.
  """

  frames: Array
  labels: Array
  means: Array
  covs: Array
  steps: Array
  values: Array
  n_steps: Array
  stopped: Array
  failed: Array
  result: Array

  @property
  def converged(self) -> Array:
    """``result == Result.CONVERGED``."""
    return self.result == Result.CONVERGED


def _tied_scale(counts):
  def scale(p, grad):
    n = p["x"].shape[0]
    per_class = (n / counts).astype(p["x"].dtype)
    return {"x": n * grad["x"], "means": per_class[:, None] * grad["means"],
            "factors": per_class[:, None, None] * grad["factors"]}
  return scale


@functools.partial(jax.jit, static_argnames=("mode", "n_steps", "save_every", "optimizer",
                                             "progress", "k_out", "n_iters"))
def _dataset_flow(energy, p0, codes, step_size, tol, *, mode, n_steps, save_every, optimizer,
                  progress, k_out, n_iters):
  if mode == "xytied":
    counts = jax.ops.segment_sum(jnp.ones_like(codes, p0["x"].dtype), codes, k_out)
    scale = _tied_scale(counts)
  else:
    scale = _flow.particle_scale
  zero = jnp.zeros((), step_size.dtype)
  frames, steps, values, taken, stopped, failed = _flow.run_flow(
      energy, p0, scale, optimizer, step_size, zero, tol, None, n_steps=n_steps,
      save_every=save_every, noise=False, progress=progress)
  if mode == "xytied":
    last = jax.tree.map(lambda f: f[-1], frames)
    frames, labels = frames["x"], codes
    means = last["means"]
    covs = jnp.einsum("kij,klj->kil", last["factors"], last["factors"])
  elif mode == "xyaugm":
    d = p0.shape[1] // 3
    z = frames[-1]
    labels = _kmeans(z[:, d:], k_out, n_iters)
    _, means, _ = ST.segment_statistics(z[:, d:2 * d], labels, k_out)
    _, sigma, _ = ST.segment_statistics(z[:, 2 * d:], labels, k_out)
    covs = jax.vmap(jnp.diag)(sigma ** 2)
    frames = frames[:, :, :d]
  else:
    labels = codes
    _, means, covs = ST.segment_statistics(frames[-1], codes, k_out)
  return DatasetFlowOutput(frames=frames, labels=labels, means=means, covs=covs, steps=steps,
                           values=values, n_steps=taken, stopped=stopped, failed=failed,
                           result=_flow.flow_result(stopped, failed, tol))


def dataset_flow(x, labels, x_t, labels_t, *, mode="xonly", epsilon=0.1, step_size=0.1,
                 n_steps=20, constraint=None, otdd_weight=1.0, feature_weight=1.0,
                 label_weight=1.0, optimizer=None, save_every=1, tol=None, num_classes=None,
                 solver=None, n_clusters=None, progress=False) -> DatasetFlowOutput:
  """Flows a labelled dataset to decrease ``otdd_weight · OTDD²(·, target) + constraint``.

  OTDD uses the Gaussian label distance (as :func:`otkit.otdd`, sum convention
  ``λ_x ‖x − x'‖² + λ_y W₂²``; the reference code's ½ convention is
  ``feature_weight=label_weight=0.5``) and the debiased entropic outer problem. Each step is
  the particle scheme of :func:`otkit.flows.gradient_flow` (forward Euler, or ``optimizer``),
  and the whole flow is one compiled scan.

  Args:
    x: source features ``(n, d)``; labels: source integer labels ``(n,)``.
    x_t: target features ``(m, d)``; labels_t: target integer labels ``(m,)``.
    mode: ``"xonly"`` (default), ``"xonly-attached"``, ``"xytied"`` or ``"xyaugm"`` (module
      notes).
    epsilon: entropic regularisation of OTDD (traced; the reference default 0.1).
    step_size: the time step ``τ`` (traced; reference default 0.1).
    n_steps: number of steps (static; reference default 20).
    constraint: an :class:`otkit.flows.Energy` (or function) of the features ``(n, d)`` added to
      the objective, e.g. :func:`margin_potential`; ``None`` for OTDD alone.
    otdd_weight: ``λ`` in front of OTDD (traced; 0 flows under the constraint alone).
    feature_weight, label_weight: ``λ_x, λ_y`` of the OTDD cost.
    optimizer, save_every, tol, progress: as in :func:`otkit.flows.gradient_flow` (the
      reference code stops at ``tol=1e-3``).
    num_classes: static ``k`` or ``(k_s, k_t)`` for labels already in ``[0, k)``.
    solver: the solver object of the OTDD problems (default as :func:`otkit.otdd`; for
      ``"xyaugm"`` as :func:`otkit.flows.sinkhorn_divergence_to`).
    n_clusters: classes recovered by k-means in ``"xyaugm"`` (default: the target's).

  Returns:
    :class:`DatasetFlowOutput` with the feature ``frames``, final ``labels``, class ``means`` and
    ``covs``, and the objective ``values`` along the flow.

  References:
    Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.

  Example:
    >>> import numpy as np, otkit
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 2)); y = np.repeat([0, 1, 2], 20)
    >>> out = otkit.flows.dataset.dataset_flow(x, y, x + [2.0, 0.0], y, step_size=0.2,
    ...                                         n_steps=10)
    >>> bool(out.values[-1] < 0.05 * out.values[0]), out.frames.shape
    (True, (11, 60, 2))
  """
  V.check_choice("mode", mode, MODES)
  x = V.check_points("x", x)
  dtype = x.dtype
  constraint = as_energy(constraint) if constraint is not None else Energy((), ())
  constraint.check(x)
  otdd_weight = V.as_float_array("otdd_weight", otdd_weight, dtype)
  options = dict(n_steps=V.check_static_int("n_steps", n_steps),
                 save_every=V.check_static_int("save_every", save_every),
                 optimizer=_flow.check_optimizer(optimizer), progress=bool(progress))
  options["save_every"] = min(options["save_every"], options["n_steps"])
  step_size = _flow.check_step_size(step_size, dtype)
  tol = _flow.check_tol(tol, dtype)
  statistics = "attached" if mode == "xonly-attached" else "detached"
  term = otdd_term(x_t, labels_t, labels, epsilon=epsilon, statistics=statistics,
                   feature_weight=feature_weight, label_weight=label_weight,
                   num_classes=num_classes, solver=solver)
  term.check(x)
  codes = term.codes_s
  if mode in ("xonly", "xonly-attached"):
    without_otdd = V.concrete_values(otdd_weight) is not None and float(otdd_weight) == 0.0
    energy = constraint if without_otdd else otdd_weight * _single(term) + constraint
    return _dataset_flow(energy, x, codes, step_size, tol, mode=mode, k_out=term.k_s,
                         n_iters=0, **options)
  if mode == "xytied":
    _, means, covs = ST.segment_statistics(x, codes, term.k_s)
    p0 = {"x": x, "means": means, "factors": jax.vmap(psd_sqrt)(covs)}
    energy = TiedEnergy(term, otdd_weight, constraint)
    return _dataset_flow(energy, p0, codes, step_size, tol, mode=mode, k_out=term.k_s,
                         n_iters=0, **options)
  return _augmented_flow(x, codes, term, constraint, otdd_weight, step_size, tol, epsilon,
                         n_clusters, solver, **options)


def _augmented_flow(x, codes, term, constraint, otdd_weight, step_size, tol, epsilon,
                    n_clusters, solver, **options):
  d = x.shape[1]
  z0 = _augment(x, codes, term.k_s)
  z_t = _augment(term.x_t, term.codes_t, term.k_t)
  root = lambda w: jnp.sqrt(w)  # noqa: E731
  weights = jnp.concatenate([jnp.full(d, root(term.feature_weight)),
                             jnp.full(2 * d, root(term.label_weight))]).astype(x.dtype)
  divergence = sinkhorn_divergence_to(z_t * weights, epsilon=epsilon, solver=solver).terms[0]
  energy = AugmentedEnergy(divergence, weights, otdd_weight, constraint, d=d)
  k_out = term.k_t if n_clusters is None else V.check_static_int("n_clusters", n_clusters)
  if k_out > x.shape[0]:
    raise ValueError(f"`n_clusters` = {k_out} is larger than the number of points {x.shape[0]}.")
  return _dataset_flow(energy, z0, codes, step_size, tol, mode="xyaugm", k_out=k_out,
                       n_iters=50, **options)
