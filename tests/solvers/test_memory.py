"""The online geometry keeps Sinkhorn's memory O(n + m): peak resident memory of a fresh process."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    import otkit
    n, iters = int(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 3)).astype(np.float32)
    y = rng.uniform(size=(n, 3)).astype(np.float32)
    out = otkit.sinkhorn(otkit.PointCloud(x, y), epsilon=0.05, max_iters=iters, tol=1e-3)
    jax.block_until_ready(out)
    assert np.all(np.isfinite(out.f)) and np.all(np.isfinite(out.g))
    # VmHWM is this process's own high-water mark; ru_maxrss would also count the parent's
    # resident set inherited through fork before exec.
    status = open("/proc/self/status").read()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(peak_mb, int(out.n_iters), bool(out.converged))
""")


def _peak_memory_mb(n: int, iters: int) -> tuple[float, int, bool]:
  result = subprocess.run([sys.executable, "-c", SCRIPT, str(n), str(iters)], capture_output=True,
                          text=True, check=True, timeout=1200)
  peak, n_iters, converged = result.stdout.split()
  return float(peak), int(n_iters), converged == "True"


@pytest.mark.slow  # a memory goal: benchmarks/sinkhorn.py reports peak memory by default
def test_online_sinkhorn_16384_points_under_1gb():
  # A dense 16384 × 16384 float32 cost matrix alone would take 1 GiB (the long checks below
  # take 30000 points).
  peak, n_iters, _ = _peak_memory_mb(16384, 3)
  assert n_iters == 3
  assert peak < 1024, f"peak resident memory {peak:.0f} MB"


@pytest.mark.slow
def test_online_sinkhorn_30000_points_under_1gb():
  # A dense 30000 × 30000 float32 cost matrix alone would take 3.6 GB.
  peak, n_iters, _ = _peak_memory_mb(30000, 3)
  assert n_iters == 3
  assert peak < 1024, f"peak resident memory {peak:.0f} MB"


@pytest.mark.slow
def test_online_sinkhorn_30000_points_converges_under_1gb():
  peak, _, converged = _peak_memory_mb(30000, 2000)
  assert converged
  assert peak < 1024, f"peak resident memory {peak:.0f} MB"


GW_SCRIPT = textwrap.dedent("""
    import sys, time
    import jax, numpy as np
    import otkit
    n = int(sys.argv[1])
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(n, 3)).astype(np.float32)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0].astype(np.float32)
    y = (rng.uniform(size=(n, 3)) * np.array([1.0, 1.5, 0.5])).astype(np.float32) @ rotation
    start = time.perf_counter()
    out = otkit.gromov_wasserstein(otkit.PointCloud(x), otkit.PointCloud(y), epsilon=0.01)
    jax.block_until_ready(out)
    seconds = time.perf_counter() - start
    assert np.isfinite(float(out.value))
    status = open("/proc/self/status").read()
    peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(peak_mb, int(out.n_outer), bool(out.converged), seconds)
""")


@pytest.mark.slow
def test_gromov_wasserstein_20000_points_under_1gb():
  # Factored intra-costs and an online linearised cost: a dense 20000 × 20000 float32 matrix
  # alone would take 1.6 GB (and GW needs three of them).
  result = subprocess.run([sys.executable, "-c", GW_SCRIPT, "20000"], capture_output=True,
                          text=True, check=True, timeout=3600)
  peak, _, converged, _ = result.stdout.split()
  assert converged == "True"
  assert float(peak) < 1024, f"peak resident memory {float(peak):.0f} MB"
