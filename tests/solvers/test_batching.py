"""Batches under ``vmap``: large problems run one after another, small ones sweep together.

On CPU, problems of at least 2²¹ cost entries (``fills_blocks``) are solved one at a time inside
the batched program (a ``lax.map`` of the solve); the values, potentials, iteration counts and
gradients must be those of the problems solved one call each, in every layout of the batch. The
default run checks that on small problems with the threshold lowered (compilation is what costs
here), and with ``-m slow`` on problems above the real threshold.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import otkit
from otkit.geometry import _geometry as G

K, N = 2, 1536  # N² = 2 359 296 ≥ 2²¹: one problem fills the CPU's blocks
SMALL = 64
# The lowered threshold is read when a solve is traced, and otkit's jitted solves keep their
# traces: the small problems of that check have a size no other test uses, so that neither sees
# the other's trace.
PATCHED = 61


def _data(dtype, n=N, k=K):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(k, n, 2))
  y = rng.normal(size=(k, n, 2)) * 0.8 + 1.0
  return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _solve(x, y, grad_mode="envelope"):
  solver = otkit.Sinkhorn(tol=1e-6, grad_mode=grad_mode)
  out = otkit.solve(otkit.PointCloud(x, y), epsilon=1.0, solver=solver)
  return out.value, (out.f, out.n_iters)


@functools.cache
def _functions(grad_mode, n):  # n: one compilation for each size of problem (and threshold)
  """One problem (value, potentials, sweeps and the gradient in the points), and problems
  ``(K, 2)``: an outer vmap over both point sets around an inner one over x alone (y shared)."""
  one = jax.value_and_grad(functools.partial(_solve, grad_mode=grad_mode), argnums=(0, 1),
                           has_aux=True)
  return jax.jit(one), jax.jit(jax.vmap(jax.vmap(one, in_axes=(0, None))))


def test_large_problems_fill_the_blocks_and_small_ones_do_not():
  x, y = _data(jnp.float32, k=1)
  assert G.fills_blocks(otkit.PointCloud(x[0], y[0]))
  assert not G.fills_blocks(otkit.PointCloud(x[0, :SMALL], y[0, :SMALL]))


def test_a_batch_of_large_problems_is_a_loop_over_them():
  x, y = _data(jnp.float32)
  values = lambda x, y: _solve(x, y)[0]  # noqa: E731
  jaxpr = str(jax.make_jaxpr(jax.vmap(values))(x, y))
  assert f"length={K}" in jaxpr  # the lax.map over the problems
  small = str(jax.make_jaxpr(jax.vmap(values))(x[:, :SMALL], y[:, :SMALL]))
  assert f"length={K}" not in small  # swept together


@pytest.mark.parametrize("grad_mode, n", [("envelope", PATCHED),
                                          pytest.param("implicit", N, marks=pytest.mark.slow)])
def test_vmap_nested_and_partly_batched_equals_one_call_per_problem(grad_mode, n, monkeypatch):
  if n < N:  # small problems take the path of large ones
    monkeypatch.setattr(G, "_ALONE_MIN_ELEMENTS", 1)
  _one, _batched = _functions(grad_mode, n)
  x, y = _data(jnp.float64, n=n)
  values = lambda x, y: _solve(x, y, grad_mode)[0]  # noqa: E731
  assert f"length={K}" in str(jax.make_jaxpr(jax.vmap(values))(x, y))  # one after another
  xs = jnp.stack([x, x[::-1]], axis=1)  # (K, 2, n, 2): problem (i, j) is (xs[i, j], y[i])
  (value, (f, n_iters)), (gx, gy) = _batched(xs, y)
  for i in range(K):
    for j in range(2):
      (v_ij, (f_ij, it_ij)), (gx_ij, gy_ij) = _one(xs[i, j], y[i])
      np.testing.assert_allclose(value[i, j], v_ij, rtol=1e-12)
      np.testing.assert_allclose(f[i, j], f_ij, rtol=1e-10, atol=1e-12)
      assert int(n_iters[i, j]) == int(it_ij)
      np.testing.assert_allclose(gx[i, j], gx_ij, rtol=1e-9, atol=1e-14)
      np.testing.assert_allclose(gy[i, j], gy_ij, rtol=1e-9, atol=1e-14)
