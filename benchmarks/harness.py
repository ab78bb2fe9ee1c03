"""Timing and memory measurement shared by the benchmark scripts.

One convention everywhere:

* :func:`timed` calls a function once (tracing, compilation and one run: ``first_s``), then times
  later calls, each ended by ``jax.block_until_ready``, and reports their median; the compile
  time is reported apart, as ``compile_s = first_s − median_s``.
* :func:`compile_ahead` lowers and compiles a jitted function ahead of time and reports the
  compile time alone.
* Memory is either the peak growth of the resident set size during a call (:class:`PeakMemory`,
  sampled in a thread) or the high-water mark of a fresh process (:func:`peak_rss_mb`, with
  :func:`spawn` running each measurement in its own process).
* Results are written as JSON (the data) and Markdown (the table) side by side
  (:func:`write_results`); :func:`markdown_table` formats a table.

Imported by the scripts of this folder as ``import harness``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

# ----------------------------------------------------------------------------- time


def block(result):
  """``jax.block_until_ready(result)`` when JAX is loaded (a no-op for other libraries)."""
  jax = sys.modules.get("jax")
  return jax.block_until_ready(result) if jax is not None else result


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
  """``(seconds, result)`` of one call of ``fn``, its result ready."""
  start = time.perf_counter()
  result = block(fn())
  return time.perf_counter() - start, result


@dataclasses.dataclass
class Timing:
  """What :func:`timed` measured.

  Attributes:
    result: the result of the last call.
    first_s: the first call (tracing and compilation included); ``nan`` without a warm-up call.
    median_s: median of the timed calls (``first_s`` if none fitted in the budget).
    times: every timed call, in seconds.
    peak_mb: peak growth of the resident set size during the first timed call (the warm-up call
      if there was none), in MB; ``nan`` unless memory was measured.
  """

  result: Any
  first_s: float
  median_s: float
  times: list[float]
  peak_mb: float = math.nan

  @property
  def compile_s(self) -> float:
    """The first call's extra time: tracing and compilation (0 without a warm-up call)."""
    return 0.0 if math.isnan(self.first_s) else max(self.first_s - self.median_s, 0.0)

  def as_dict(self, prefix: str = "") -> dict:
    return {f"{prefix}time": self.median_s, f"{prefix}compile": self.compile_s,
            f"{prefix}runs": self.times}


def timed(fn: Callable[[], Any], *, repeats: int = 3, budget_s: float = math.inf,
          min_repeats: int = 1, warmup: bool = True, memory: bool = False) -> Timing:
  """Times ``fn`` (a call without arguments) after a warm-up call.

  Args:
    fn: the computation; its result is blocked on (``jax.block_until_ready``).
    repeats: at most this many timed calls after the warm-up.
    budget_s: stop before a call would end past this many seconds of timed calls (predicted by
      the previous call, or by the warm-up call for the first one).
    min_repeats: at least this many timed calls, whatever the budget (0 reports the warm-up
      call itself when even one call would exceed the budget).
    warmup: whether the first call is a warm-up (compilation) call, timed apart.
    memory: also measure the peak growth of the resident set size (:class:`PeakMemory`).

  Returns:
    :class:`Timing`.
  """
  first, peak, result = math.nan, math.nan, None
  if warmup:
    with PeakMemory(enabled=memory) as mem:
      first, result = clock(fn)
    peak = mem.growth
  times = []
  while len(times) < repeats:
    last = times[-1] if times else (0.0 if math.isnan(first) else first)
    if len(times) >= min_repeats and sum(times) + last >= budget_s:
      break
    with PeakMemory(enabled=memory) as mem:
      seconds, result = clock(fn)
    times.append(seconds)
    if len(times) == 1:
      peak = mem.growth
  median = statistics.median(times) if times else first
  return Timing(result=result, first_s=first, median_s=median, times=times, peak_mb=peak)


def compile_ahead(jitted, *args, **kwargs) -> tuple[Any, float]:
  """``(compiled, seconds)``: ``jitted.lower(*args, **kwargs).compile()`` and its time."""
  start = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile()
  return compiled, time.perf_counter() - start


def time_loop(fn: Callable[[Any], Any], items: Sequence, cap_s: float):
  """Runs ``fn`` over ``items`` once (a Python loop of a peer library); past ``cap_s`` seconds it
  stops and scales the time to all items.

  Returns:
    ``(seconds for all items, whether it was scaled, list of results)``.
  """
  start = time.perf_counter()
  values = []
  for item in items:
    values.append(fn(item))
    if time.perf_counter() - start > cap_s:
      break
  elapsed = time.perf_counter() - start
  return elapsed * len(items) / len(values), len(values) < len(items), values


# ----------------------------------------------------------------------------- memory


def rss_mb() -> float:
  """The current resident set size of this process, in MB (Linux)."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
  """The peak resident set size of this process in MB: ``VmHWM`` on Linux, else ``ru_maxrss``.

  ``ru_maxrss`` of an exec'd child starts at its parent's resident size on Linux (the forked
  address space's high-water mark), so a large parent (a test runner) would inflate it;
  ``VmHWM`` belongs to the exec'd address space alone.
  """
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


class PeakMemory:
  """Peak growth of the resident set size (MB) while the block runs, sampled every 2 ms in a
  thread: ``with PeakMemory() as m: ...; m.growth``. ``enabled=False`` measures nothing
  (``growth`` is ``nan``)."""

  def __init__(self, enabled: bool = True, interval_s: float = 0.002):
    self.enabled, self.interval_s = enabled, interval_s
    self.growth = math.nan

  def __enter__(self):
    if self.enabled:
      self.base = self.peak = rss_mb()
      self._stop = threading.Event()
      self._thread = threading.Thread(target=self._sample, daemon=True)
      self._thread.start()
    return self

  def _sample(self):
    while not self._stop.wait(self.interval_s):
      self.peak = max(self.peak, rss_mb())

  def __exit__(self, *exc):
    if self.enabled:
      self._stop.set()
      self._thread.join()
      self.peak = max(self.peak, rss_mb())
      self.growth = self.peak - self.base


# ----------------------------------------------------------------------------- fresh processes


def spawn(script: str, worker_args: Sequence, *, timeout_s: float, describe: dict) -> dict:
  """Runs ``python script --worker *worker_args`` in a fresh process; returns the last JSON line
  it printed, or ``describe`` with an ``error`` (a timeout, a non-zero exit, no output)."""
  cmd = [sys.executable, str(script), "--worker", *map(str, worker_args)]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
  except subprocess.TimeoutExpired:
    return dict(describe, error=f"timeout ({timeout_s:g} s)")
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return dict(describe, error=f"exit {proc.returncode}: {tail[0][:200]}")
  return json.loads(lines[-1])


# ----------------------------------------------------------------------------- reports


def machine() -> str:
  """``"<processor>, <cores> cores, jax <version> on <backend>"`` (without jax if not loaded)."""
  text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
  jax = sys.modules.get("jax")
  if jax is not None:
    text += f", jax {jax.__version__} on {jax.default_backend()}"
  return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  """The lines of a Markdown table (cells converted with ``str``)."""
  lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  return lines


def grid_arguments(description: str, rows_of: str, cap_s: float = 300.0) -> argparse.ArgumentParser:
  """The command line of a grid benchmark: ``--quick`` (its small grid), ``--cap`` (seconds a
  peer may run), ``--rows`` (indices of the grid's rows, ``rows_of`` names what a row is) and
  ``--out`` (the results folder); a script adds its own options to the parser."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--cap", type=float, default=cap_s)
  parser.add_argument("--rows", type=str, default=None,
                      help=f"comma-separated indices of the {rows_of} rows to run (default: all)")
  parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
  return parser


def grid_rows(args: argparse.Namespace, quick: Sequence, full: Sequence) -> list:
  """The rows that :func:`grid_arguments`' options select from a script's two grids."""
  grid = list(quick if args.quick else full)
  return [grid[int(i)] for i in args.rows.split(",")] if args.rows else grid


def write_results(out: Path | str, stem: str, data: Any, table: str) -> str:
  """Writes ``{stem}.json`` (``data``) and ``{stem}.md`` (``table``) in ``out``; returns ``table``.

  Scripts call it after every measurement, so that a stopped run keeps what it measured.
  """
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  (out / f"{stem}.json").write_text(json.dumps(data, indent=1))
  (out / f"{stem}.md").write_text(table)
  return table


def geometric_mean(values) -> float:
  """Geometric mean of the positive finite values (``nan`` if none)."""
  values = [v for v in values if v and v > 0 and math.isfinite(v)]
  return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")
