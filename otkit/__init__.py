"""otkit: JAX-native, differentiable optimal transport.

The public API is flat: geometries (:class:`PointCloud`, :class:`CostMatrix`) and costs,
solver objects (:class:`Sinkhorn`, :class:`SinkhornNewton`) run by :func:`solve` (or the
keyword wrappers :func:`sinkhorn`, :func:`sinkhorn_newton`), result codes (:class:`Result`,
:func:`check`), what derives from the potentials (:func:`transport_plan`, :func:`apply_plan`,
:func:`transport_cost`), and the estimators (:func:`sinkhorn_divergence`, …), which take
``solver=``.
Each subpackage lists its public names in ``__all__``; they are re-exported here.
"""

from otkit import closed_form as _closed_form
from otkit import datasets as _datasets
from otkit import estimators as _estimators
from otkit import geometry as _geometry
from otkit import solvers as _solvers
from otkit.closed_form import *  # noqa: F401,F403
from otkit.datasets import *  # noqa: F401,F403
from otkit.estimators import *  # noqa: F401,F403
from otkit.geometry import *  # noqa: F401,F403
from otkit.solvers import *  # noqa: F401,F403
from otkit import flows  # noqa: E402,F401  (a subpackage, reached as otkit.flows)

__version__ = "0.1.0"

__all__ = sorted([*_geometry.__all__, *_solvers.__all__, *_estimators.__all__,
                  *_closed_form.__all__, *_datasets.__all__])
