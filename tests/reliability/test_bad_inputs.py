"""The bad-input matrix: every public entry point against every category of bad input.

Each bad input must raise a ``ValueError``/``TypeError`` naming the argument before anything is
computed; each legitimate one (a conversion, a documented edge case) must give finite output equal
to its reference, and random valid arrays of the same shapes (drawn by hypothesis) finite output
or a failure reported in the result code. The catalogue (``catalogue.py``) is shared with ``benchmarks/reliability.py``.
Legitimate inputs of the entry points whose calls compile long programs (``heavy``) run with
``-m slow``; their bad inputs, which raise before tracing, run by default.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import catalogue
import otkit
from otkit import flows
from otkit.flows import dataset

ENTRIES = {entry.name: entry for entry in catalogue.entries()}


def _run(entry, legitimate: bool):
  failures = []
  for cell in catalogue.cells(entry):
    if bool(cell.names) == legitimate:
      continue
    outcome, detail = catalogue.judge(entry, cell)
    if outcome not in catalogue.ACCEPTED:
      failures.append(f"{cell.category} / {cell.label}: {outcome} ({detail})")
  assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_bad_inputs_raise_errors_naming_the_argument(name):
  _run(ENTRIES[name], legitimate=False)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in catalogue.HEAVY else n
                                  for n in sorted(ENTRIES)])
def test_legitimate_and_random_valid_inputs_give_finite_right_answers(name):
  entry = ENTRIES[name]
  _run(entry, legitimate=True)

  # Random valid arrays of the same shapes (the compiled programs are shared): finite output,
  # or a failure its result code reports.
  @settings(max_examples=2, deadline=None, derandomize=True, database=None)
  @given(st.integers(0, 2**31 - 1), st.floats(-2.0, 2.0))
  def random_inputs(seed, scale_exp):
    cell = catalogue.random_valid(entry, np.random.default_rng(seed), 10.0 ** scale_exp)
    outcome, detail = catalogue.judge(entry, cell)
    assert outcome in ("right", "reported"), f"{cell.label}: {outcome} ({detail})"

  random_inputs()


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_every_entry_point_meets_at_least_eight_categories(name):
  categories = {cell.category for cell in catalogue.cells(ENTRIES[name])} - {"valid"}
  assert len(categories) >= 8, sorted(set(catalogue.CATEGORIES) - categories)


def _public_callables():
  """The public functions and classes that take user input (outputs and enums excluded)."""
  names = set()
  for prefix, module in (("", otkit), ("flows.", flows), ("flows.dataset.", dataset)):
    for name in module.__all__:
      obj = getattr(module, name)
      if inspect.ismodule(obj) or name.endswith("Output") or name in catalogue.NOT_ENTRY_POINTS:
        continue
      names.add(prefix + name)
  nn = pytest.importorskip("otkit.nn")
  names |= {f"nn.{name}" for name in nn.__all__}
  fm = pytest.importorskip("otkit.flow_matching")
  names |= {f"flow_matching.{name}" for name in fm.__all__
            if name not in catalogue.NOT_ENTRY_POINTS}
  return names | {"cli distance", "cli otdd"}


def test_the_catalogue_covers_every_public_entry_point():
  assert _public_callables() - set(ENTRIES) == set()
