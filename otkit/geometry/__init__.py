"""Ground costs and geometries (dense and online point clouds)."""

from otkit.geometry._budget import Storage, memory_budget, set_memory_budget
from otkit.geometry._costs import Cosine, CustomCost, Euclidean, PNorm, SqEuclidean
from otkit.geometry._geometry import CostMatrix, PointCloud
from otkit.geometry._labelled import LabelledPointCloud

__all__ = ["CostMatrix", "Cosine", "CustomCost", "Euclidean", "LabelledPointCloud", "PNorm",
           "PointCloud", "SqEuclidean", "Storage", "memory_budget", "set_memory_budget"]
