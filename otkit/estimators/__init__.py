"""Estimators built on the solvers: divergences, sliced and mini-batch estimators."""

from otkit.estimators._divergence import DivergenceOutput, sinkhorn_divergence

__all__ = ["DivergenceOutput", "sinkhorn_divergence"]
