"""Wasserstein gradient flows of particle systems and of labelled datasets.

``otkit.flows.gradient_flow(energy, x0, step_size=…, n_steps=…)`` runs the whole flow as one
compiled ``lax.scan``. Energies are composable pytrees: :func:`potential_energy`,
:func:`interaction_energy`, :func:`kde_entropy`, and distances to a reference measure
(:func:`sinkhorn_divergence_to`, :func:`sliced_wasserstein_to`, :func:`otdd_to`), combined with
``+`` and scalar ``*``. :mod:`otkit.flows.dataset` optimises labelled datasets (the label modes
of Alvarez-Melis & Fusi). ``otkit.flows`` needs optax (a dependency of otkit).

References:
  Alvarez-Melis, Fusi, "Dataset Dynamics via Gradient Flows in Probability Space", ICML 2021.
"""

from otkit.flows._energies import (Energy, as_energy, interaction_energy, kde_entropy,
                                   potential_energy, sinkhorn_divergence_to,
                                   sliced_wasserstein_to, total)
from otkit.flows._flow import FlowOutput, gradient_flow
from otkit.flows._otdd_energy import otdd_to
from otkit.flows import dataset  # noqa: E402  (otkit.flows.dataset)

__all__ = [
    "Energy",
    "FlowOutput",
    "as_energy",
    "dataset",
    "gradient_flow",
    "interaction_energy",
    "kde_entropy",
    "otdd_to",
    "potential_energy",
    "sinkhorn_divergence_to",
    "sliced_wasserstein_to",
    "total",
]
