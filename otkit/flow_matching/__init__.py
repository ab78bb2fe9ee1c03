"""Flow matching with optimal transport couplings, jitted end to end.

A velocity field ``v_θ(t, x)`` learns to transport a source distribution to a target by
regression on conditional paths between paired samples (:func:`cfm_loss`). Pairing each
mini-batch by its optimal transport plan (:func:`couple`) gives OT-CFM, whose flows are straighter
than those of independent pairing (I-CFM) and need fewer integration steps (:func:`sample`);
:func:`fit` trains a flax ``nnx`` model with the coupling, the loss, the gradient and the optax
update of many steps in one compiled call. Meta Flow Matching (:func:`fit_meta`,
:class:`MetaVelocity`) conditions the field on the initial population. ``otkit.flow_matching``
needs flax (``pip install otkit[nn]``).

References:
  Lipman et al., "Flow Matching for Generative Modeling", ICLR 2023.
  Tong et al., "Improving and generalizing flow-based generative models with minibatch optimal
  transport", TMLR 2024.
  Atanackovic et al., "Meta Flow Matching: Integrating Vector Fields on the Wasserstein
  Manifold", ICLR 2025.
"""

from otkit.flow_matching._couplings import COUPLINGS, couple
from otkit.flow_matching._fit import fit, fit_meta
from otkit.flow_matching._loss import cfm_loss
from otkit.flow_matching._metrics import PathEnergy, path_energy, wasserstein2
from otkit.flow_matching._models import MetaVelocity, PopulationEmbedding, VelocityMLP
from otkit.flow_matching._paths import PATHS, conditional_path, sample_path
from otkit.flow_matching._sample import METHODS, sample

__all__ = ["COUPLINGS", "METHODS", "MetaVelocity", "PATHS", "PathEnergy", "PopulationEmbedding",
           "VelocityMLP", "cfm_loss", "conditional_path", "couple", "fit", "fit_meta",
           "path_energy", "sample", "sample_path", "wasserstein2"]
