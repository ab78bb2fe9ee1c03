"""Entropic OT solvers and what derives from their potentials."""

from otkit.solvers._assignment import AssignmentOutput, assignment
from otkit.solvers._newton import sinkhorn_newton
from otkit.solvers._output import SinkhornOutput, check
from otkit.solvers._plan import apply_plan, transport_cost, transport_plan
from otkit.solvers._sinkhorn import sinkhorn

__all__ = ["AssignmentOutput", "assignment",
           "SinkhornOutput", "apply_plan", "check", "sinkhorn", "sinkhorn_newton", "transport_cost",
           "transport_plan"]
