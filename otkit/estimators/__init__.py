"""Estimators built on the solvers: divergences, sliced and mini-batch estimators."""

from otkit.estimators._bounds import BoundsOutput, minibatch_bounds
from otkit.estimators._divergence import DivergenceOutput, sinkhorn_divergence
from otkit.estimators._minibatch import MinibatchOutput, minibatch_ot
from otkit.estimators._sliced import (MaxSlicedOutput, SlicedOutput, max_sliced_wasserstein,
                                      sliced_wasserstein)

__all__ = ["DivergenceOutput", "sinkhorn_divergence",
           "MaxSlicedOutput", "SlicedOutput", "max_sliced_wasserstein", "sliced_wasserstein",
           "BoundsOutput", "MinibatchOutput", "minibatch_bounds", "minibatch_ot"]
