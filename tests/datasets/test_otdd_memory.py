"""OTDD between two 10 000-point, 64-dimensional, 10-class datasets stays under 1 GB (a fresh
process's peak resident memory) when the memory budget keeps the augmented cost online (by
default, with enough memory, it is stored: 800 MB for each problem, and faster)."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    import otkit
    otkit.set_memory_budget(256 << 20)  # below the 800 MB of a stored problem: online
    n, d, k, iters = 10000, 64, 10, int(sys.argv[1])
    rng = np.random.default_rng(0)
    def dataset(shift):
      centres = 2.0 * rng.standard_normal((k, d), dtype=np.float32)
      y = rng.integers(0, k, n)
      return centres[y] + rng.standard_normal((n, d), dtype=np.float32) + shift, y
    (xs, ys), (xt, yt) = dataset(0.0), dataset(0.5)
    out = otkit.otdd(xs, ys, xt, yt, epsilon=5.0, solver=otkit.Sinkhorn(anneal=True, max_iters=iters))
    jax.block_until_ready(out)
    status = open("/proc/self/status").read()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(peak_mb, int(out.ot.n_iters), bool(out.converged), float(out.value))
""")


def _run(iters: int):
  result = subprocess.run([sys.executable, "-c", SCRIPT, str(iters)], capture_output=True,
                          text=True, check=True, timeout=1800)
  peak, n_iters, converged, value = result.stdout.split()
  return float(peak), int(n_iters), converged == "True", float(value)


# A long check (a fresh process on 10 000 points): run with -m slow. The default run covers the
# same online path (the augmented cost computed block by block, never stored) on small data in
# tests/datasets/test_otdd.py::test_matches_exact_ot_on_the_dense_augmented_cost.
@pytest.mark.slow
def test_otdd_10000_points_d64_under_1gb():
  # A dense 10 000 × 10 000 float32 cost would take 400 MB per problem, three problems debiased.
  peak, n_iters, _, _ = _run(2)
  assert n_iters == 2
  assert peak < 1024, f"peak resident memory {peak:.0f} MB"


@pytest.mark.slow
def test_otdd_10000_points_d64_converges_under_1gb():
  peak, _, converged, value = _run(2000)
  assert converged and value > 0
  assert peak < 1024, f"peak resident memory {peak:.0f} MB"
