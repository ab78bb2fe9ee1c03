"""otkit: JAX-native, differentiable optimal transport.

The public API is flat: geometries (:class:`PointCloud`, :class:`CostMatrix`), costs, solvers
(:func:`sinkhorn`), derived quantities (:func:`transport_plan`, :func:`apply_plan`,
:func:`transport_cost`) and estimators (:func:`sinkhorn_divergence`).
"""

from otkit.geometry import CostMatrix, Cosine, CustomCost, Euclidean, PNorm, PointCloud, SqEuclidean
from otkit.solvers import SinkhornOutput, apply_plan, check, sinkhorn, transport_cost, transport_plan

__version__ = "0.1.0"

__all__ = [
    "CostMatrix", "Cosine", "CustomCost", "Euclidean", "PNorm", "PointCloud", "SinkhornOutput",
    "SqEuclidean", "apply_plan", "check", "sinkhorn", "transport_cost", "transport_plan",
]
