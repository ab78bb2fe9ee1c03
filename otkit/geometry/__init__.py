"""Ground costs and geometries (dense and online point clouds)."""

from otkit.geometry._costs import Cosine, CustomCost, Euclidean, PNorm, SqEuclidean
from otkit.geometry._geometry import CostMatrix, PointCloud

__all__ = ["CostMatrix", "Cosine", "CustomCost", "Euclidean", "PNorm", "PointCloud", "SqEuclidean"]
