"""Closed forms: exact 1-D optimal transport and the Gaussian (Bures–Wasserstein) formulas."""

from otkit.closed_form._gaussian import (GaussianBarycenter, gaussian_barycenter, gaussian_map,
                                         gaussian_w2)
from otkit.closed_form._one_d import OT1DOutput, ot_1d, wasserstein_1d

__all__ = ["GaussianBarycenter", "OT1DOutput", "gaussian_barycenter", "gaussian_map", "gaussian_w2",
           "ot_1d", "wasserstein_1d"]
