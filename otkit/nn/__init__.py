"""Factorised (low-rank) flax layers, spectral initialisation and Frobenius decay.

``import otkit.nn`` needs flax (the ``nn`` extra: ``pip install "otkit[nn]"``). The layers are
flax NNX modules, the API flax recommends; their factors are parameters named ``u``, ``v`` (and
``m``), which is how :func:`frobenius_decay` finds them in a parameter tree.

References:
  Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
  Layers", ICLR 2021.
"""

try:
  import flax  # noqa: F401
except ImportError as err:  # pragma: no cover
  raise ImportError('otkit.nn needs flax: pip install "otkit[nn]"') from err

from otkit.nn._conv import FactorizedConv, conv_kernel_matrix, factorize_conv
from otkit.nn._dense import FactorizedDense, factorize_dense
from otkit.nn._frobenius import factor_mask, frobenius_decay, frobenius_penalty
from otkit.nn._spectral import spectral_init

__all__ = [
    "FactorizedConv",
    "FactorizedDense",
    "conv_kernel_matrix",
    "factor_mask",
    "factorize_conv",
    "factorize_dense",
    "frobenius_decay",
    "frobenius_penalty",
    "spectral_init",
]
