"""Host callbacks: NumPy and SciPy work inside a traced program, and the thread pool they share.

Three kernels of otkit run faster on the host than in XLA on a CPU: sorting (NumPy's SIMD sort,
:mod:`otkit.closed_form._sorting`), random permutations (a NumPy argsort of random keys,
:mod:`otkit.estimators._minibatch`) and exact assignment (otkit's auction compiled by Numba, or
SciPy's ``linear_sum_assignment``, :mod:`otkit.solvers._assignment`). Each is a
``jax.pure_callback`` (:func:`callback`), chosen when the program is lowered for a CPU
(:func:`on_cpu`), and splits large batches of independent rows between the threads of one small pool
(:func:`for_row_blocks`): NumPy, SciPy and the compiled solver release the GIL while they work.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Callable

import jax
import numpy as np

Array = jax.Array
MAX_THREADS = 8


@functools.cache
def pool() -> tuple[concurrent.futures.ThreadPoolExecutor | None, int]:
  """The shared thread pool and its size (``None`` on a single core), created on first use.

  At most ``MAX_THREADS`` threads, no more than the cores this process may run on.
  """
  workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                (os.cpu_count() or 1), MAX_THREADS)
  return (concurrent.futures.ThreadPoolExecutor(workers) if workers > 1 else None), workers


if hasattr(os, "register_at_fork"):  # a forked child must not reuse the parent's dead threads
  os.register_at_fork(after_in_child=pool.cache_clear)


def for_row_blocks(work: Callable[[slice], None], count: int, *, parallel: bool = True,
                   rows_per_thread: int = 1) -> None:
  """Calls ``work(rows)`` on consecutive blocks of ``0..count−1`` that together cover them all.

  With ``parallel`` (the caller's judgement that the batch is worth splitting), a pool of more
  than one thread and at least ``rows_per_thread`` rows for each of two threads or more, the
  rows are split into one block per thread and the blocks run in the pool; otherwise
  ``work(slice(0, count))`` runs in the calling thread. ``work`` must only touch its own rows.
  Exceptions raised by ``work`` propagate.

  Example:
    >>> import numpy as np
    >>> from otkit import _host
    >>> rows = np.random.default_rng(0).normal(size=(6, 5))
    >>> _host.for_row_blocks(lambda s: rows[s].sort(axis=-1), rows.shape[0])
    >>> bool(np.all(np.diff(rows, axis=-1) >= 0))
    True
  """
  executor, workers = pool()
  threads = min(workers, count // max(rows_per_thread, 1))
  if not parallel or executor is None or threads < 2:
    work(slice(0, count))
    return
  bounds = np.linspace(0, count, threads + 1).astype(int)
  list(executor.map(lambda i: work(slice(bounds[i], bounds[i + 1])), range(threads)))


def callback(fn: Callable, result, *args: Array, vmap_method: str = "broadcast_all"):
  """``fn(*args)`` computed on the host, as a JAX operation (``jax.pure_callback``).

  The arguments cross to the host without their derivatives (``stop_gradient``): a rule for
  them, where there is one, belongs to the caller (a ``custom_jvp`` or the envelope theorem).

  Args:
    fn: a function of NumPy arrays returning arrays of the shapes and dtypes of ``result``.
    result: a ``jax.ShapeDtypeStruct`` or a pytree of them.
    *args: the arrays passed to ``fn``.
    vmap_method: how ``vmap`` batches the call (``"broadcast_all"``: one callback receives
      the whole batch as leading axes; ``"expand_dims"``: the same, unbatched arguments keep a
      leading axis of size 1).

  Example:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from otkit import _host
    >>> x = jnp.array([3.0, 1.0, 2.0])
    >>> _host.callback(np.sort, jax.ShapeDtypeStruct(x.shape, x.dtype), x).tolist()
    [1.0, 2.0, 3.0]
  """
  args = tuple(jax.lax.stop_gradient(a) for a in args)
  return jax.pure_callback(fn, result, *args, vmap_method=vmap_method)


def on_cpu(host: Callable, default: Callable, *args: Array):
  """``host(*args)`` in a program lowered for a CPU, ``default(*args)`` elsewhere.

  The choice is made when the program is lowered (``lax.platform_dependent``), so one traced
  function serves every backend; both branches must return the same shapes and dtypes.
  """
  return jax.lax.platform_dependent(*args, cpu=host, default=default)
