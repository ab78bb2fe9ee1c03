"""Entropic OT solvers, the solver contract, and what derives from their potentials."""

from otkit.solvers._assignment import AssignmentOutput, assignment
from otkit.solvers._barycenter import BarycenterOutput, barycenter
from otkit.solvers._free_barycenter import FreeBarycenterOutput, free_support_barycenter
from otkit.solvers._gromov import GWOutput, gromov_wasserstein
from otkit.solvers._gromov_bound import gw_lower_bound
from otkit.solvers._output import Result, SinkhornOutput, check, combine_results
from otkit.solvers._plan import apply_plan, transport_cost, transport_plan
from otkit.solvers._solve import sinkhorn, sinkhorn_newton, solve
from otkit.solvers._solver import Sinkhorn, SinkhornNewton

__all__ = ["AssignmentOutput", "BarycenterOutput", "FreeBarycenterOutput", "assignment",
           "barycenter", "free_support_barycenter", "GWOutput", "gromov_wasserstein",
           "gw_lower_bound",
           "Result", "Sinkhorn", "SinkhornNewton", "SinkhornOutput", "apply_plan", "check",
           "combine_results", "sinkhorn", "sinkhorn_newton", "solve", "transport_cost",
           "transport_plan"]
