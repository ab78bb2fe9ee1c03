"""The rank of a factorisation: validated ``rank`` or ``round(rank_scale · min(p, q))``.

References:
  Khodak, Tenenholtz, Mackey, Fusi, "Initialization and Regularization of Factorized Neural
  Layers", ICLR 2021 (``rank_scale``: the rank as a fraction of the full rank).
"""

from __future__ import annotations

import numbers


def check_rank(rank, p: int, q: int, name: str = "rank") -> int:
  """Validates an integer rank ``1 ≤ rank ≤ min(p, q)`` for a ``(p, q)`` matrix.

  Args:
    rank: the requested rank.
    p, q: the shape of the matrix being factorised.
    name: the argument name used in the error message.

  Returns:
    ``rank`` as a Python ``int``.

  Raises:
    ValueError: ``rank`` is not an integer in ``[1, min(p, q)]``.

  Examples:
    >>> check_rank(8, 64, 32)
    8
  """
  full = min(p, q)
  if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
    raise ValueError(f"`{name}` must be an integer in [1, {full}]; got {rank!r}.")
  if not 1 <= rank <= full:
    raise ValueError(f"`{name}` must lie in [1, min{(p, q)} = {full}] for a {p}×{q} matrix; "
                     f"got {int(rank)}.")
  return int(rank)


def resolve_rank(rank, rank_scale, p: int, q: int) -> int:
  """The rank of a ``(p, q)`` factorisation from exactly one of ``rank`` and ``rank_scale``.

  ``rank_scale`` gives ``r = max(1, round(rank_scale · min(p, q)))``, the convention of
  Khodak et al. for linear layers (rounding half to even, as Python's ``round``).

  Args:
    rank: integer rank in ``[1, min(p, q)]``, or ``None``.
    rank_scale: fraction of the full rank in ``(0, 1]``, or ``None``.
    p, q: the shape of the matrix being factorised.

  Returns:
    The rank as a Python ``int``.

  Raises:
    ValueError: both or neither of ``rank`` and ``rank_scale`` are given, or either is out of range.

  Examples:
    >>> resolve_rank(None, 0.25, 64, 256)
    16
  """
  if (rank is None) == (rank_scale is None):
    raise ValueError("Pass exactly one of `rank` (an integer) and `rank_scale` (a fraction of "
                     f"min(p, q)); got rank={rank!r}, rank_scale={rank_scale!r}.")
  if rank is not None:
    return check_rank(rank, p, q)
  if isinstance(rank_scale, bool) or not isinstance(rank_scale, numbers.Real):
    raise ValueError(f"`rank_scale` must be a number in (0, 1]; got {rank_scale!r}.")
  if not 0.0 < float(rank_scale) <= 1.0:
    raise ValueError(f"`rank_scale` must lie in (0, 1] (a fraction of min(p, q) = {min(p, q)}); "
                     f"got {rank_scale!r}.")
  return check_rank(max(1, round(float(rank_scale) * min(p, q))), p, q, name="rank_scale")
