"""Costs and geometries against NumPy formulas; online reductions against dense ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import otkit
from otkit.geometry import _reductions as R

COSTS = {
    "sqeuclidean": (otkit.SqEuclidean(), lambda x, y: ((x[:, None] - y[None]) ** 2).sum(-1)),
    "euclidean": (otkit.Euclidean(), lambda x, y: np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1))),
    "cosine": (otkit.Cosine(), lambda x, y: 1.0 - (x / np.linalg.norm(x, axis=1, keepdims=True))
               @ (y / np.linalg.norm(y, axis=1, keepdims=True)).T),
    "pnorm": (otkit.PNorm(1.5, 3.0), lambda x, y: (np.abs(x[:, None] - y[None]) ** 1.5).sum(-1) ** 2.0),
    "custom": (lambda u, v: jnp.sum(jnp.abs(u - v)), lambda x, y: np.abs(x[:, None] - y[None]).sum(-1)),
}


@pytest.mark.parametrize("name", sorted(COSTS))
def test_cost_matrix_matches_numpy(name, rng, dtype):
  cost_fn, reference = COSTS[name]
  x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
  geom = otkit.PointCloud(x.astype(dtype), y.astype(dtype), cost_fn=cost_fn)
  assert geom.cost_matrix.dtype == dtype
  tol = 1e-5 if dtype == np.float32 else 1e-12
  np.testing.assert_allclose(geom.cost_matrix, reference(x, y), rtol=tol, atol=tol)


def test_sqeuclidean_convention_has_no_half():
  geom = otkit.PointCloud(jnp.zeros((1, 2)), jnp.array([[3.0, 4.0]]))
  assert float(geom.cost_matrix[0, 0]) == pytest.approx(25.0)


# One block per row, blocks with a remainder, one block for all rows.
@pytest.mark.parametrize("chunk_size", [1, 3, 50])
def test_online_reductions_match_dense(chunk_size, rng):
  x, y = rng.normal(size=(23, 4)), rng.normal(size=(17, 4))
  h = rng.normal(size=17)
  eps = 0.3
  geom = otkit.PointCloud(x, y, chunk_size=chunk_size)
  C = ((x[:, None] - y[None]) ** 2).sum(-1)
  np.testing.assert_allclose(R.lse_rows(geom, h, eps), logsumexp(h[None] - C / eps, axis=1), rtol=1e-12)
  ht = rng.normal(size=23)
  np.testing.assert_allclose(R.lse_rows(geom.transpose(), ht, eps),
                             logsumexp(ht[:, None] - C / eps, axis=0), rtol=1e-12)
  dense = otkit.CostMatrix(C, chunk_size=chunk_size)
  np.testing.assert_allclose(R.lse_rows(dense, h, eps), logsumexp(h[None] - C / eps, axis=1), rtol=1e-12)


def test_cost_gradient_in_points_is_finite_at_coincident_points():
  x = jnp.array([[0.0, 1.0], [2.0, 2.0]])

  def total(x):
    return jnp.sum(otkit.PointCloud(x, x, cost_fn=otkit.Euclidean()).cost_matrix)

  g = jax.grad(total)(x)
  assert np.all(np.isfinite(g))
  # Away from the diagonal the Euclidean cost is smooth: d/dx0 Σ_ij ‖x_i − x_j‖ = 2 (x0 − x1)/‖x0 − x1‖.
  u = (x[0] - x[1]) / jnp.linalg.norm(x[0] - x[1])
  np.testing.assert_allclose(g[0], 2 * u, rtol=1e-12)


def test_geometry_is_a_pytree_that_jits_and_vmaps(rng):
  xs = jnp.asarray(rng.normal(size=(3, 6, 2)))

  @jax.jit
  def row_lse(x):
    return R.lse_rows(otkit.PointCloud(x, x + 1.0), jnp.zeros(6), 1.0)

  batched = jax.vmap(row_lse)(xs)
  for i in range(3):
    np.testing.assert_allclose(batched[i], row_lse(xs[i]), rtol=1e-12)


@pytest.mark.parametrize("bad, match", [
    (dict(x=np.zeros((0, 2))), "`x`"),
    (dict(x=np.zeros(4)), "`x`"),
    (dict(x=np.array([[np.nan, 0.0]])), "`x`"),
    (dict(y=np.zeros((3, 5))), "`y`"),
    (dict(y=np.array([[np.inf, 0.0]])), "`y`"),
])
def test_bad_points_raise(bad, match):
  kwargs = dict(x=np.zeros((3, 2)), y=np.ones((4, 2)))
  kwargs.update(bad)
  with pytest.raises(ValueError, match=match):
    otkit.sinkhorn(otkit.PointCloud(kwargs["x"], kwargs["y"]), epsilon=0.1)


def test_bad_cost_matrix_raises():
  with pytest.raises(ValueError, match="cost_matrix"):
    otkit.sinkhorn(otkit.CostMatrix(np.array([[0.0, np.nan]])), epsilon=0.1)
  with pytest.raises(ValueError, match="cost_matrix"):
    otkit.sinkhorn(otkit.CostMatrix(np.zeros(3)), epsilon=0.1)


def test_validation_under_vmap_records_the_batch_and_shrinks_the_automatic_block():
  from otkit.geometry._geometry import auto_block_rows
  n, m = 1500, 1500
  single = auto_block_rows(n, m, None)
  assert single < n  # the problem is blocked at all
  seen = {}

  def record(key):
    def fn(x, y):
      geom = otkit.PointCloud(x, y).validate()
      seen[key] = (geom.vmap_size, geom.block_rows, geom.transpose().block_rows,
                   otkit.PointCloud(x, y, chunk_size=7).validate().block_rows)
      return x
    return fn

  x = jnp.zeros((4, 2, n, 2), jnp.float32)
  record("one")(x[0, 0], x[0, 0])
  jax.vmap(record("vmap"))(x[0], x[0])
  jax.vmap(jax.vmap(record("nested"), in_axes=(0, None)), in_axes=(0, None))(x, x[0, 0])
  jax.grad(lambda x: jax.vmap(record("grad"))(x, x).sum())(x[0])
  assert seen["one"] == (1, single, single, 7)
  assert seen["vmap"] == (2, single, single, 7)  # two problems still fit one block's budget
  assert seen["nested"] == (8, single // 4, single // 4, 7)
  assert seen["grad"] == (2, single, single, 7)
  with pytest.raises(ValueError, match="`vmap_size`"):
    otkit.PointCloud(x[0, 0], x[0, 0], vmap_size=0).validate()
  with pytest.raises(ValueError, match="`vmap_size`"):
    otkit.CostMatrix(np.zeros((2, 2)), vmap_size=1.5).validate()


def test_vmap_with_batch_blocks_equals_a_loop(rng):
  # 1500 × 1500 entries are blocked; under a vmap of 4 the blocks are half as tall.
  xs = rng.normal(size=(4, 1500, 2))
  ys = rng.normal(size=(4, 1500, 2)) + 1.0
  solver = otkit.Sinkhorn(fixed_iters=3, anneal=False)

  def f(x, y):
    return otkit.solve(otkit.PointCloud(x, y), epsilon=0.5, solver=solver).f

  batched = jax.jit(jax.vmap(f))(xs, ys)
  for i in (0, 3):
    np.testing.assert_allclose(batched[i], jax.jit(f)(xs[i], ys[i]), rtol=0, atol=1e-12)


def test_memory_budget_decides_what_is_stored():
  x64 = jnp.zeros((100, 64), jnp.float32)
  matrix_and_transpose = 2 * 100 * 100 * 4
  fits = otkit.PointCloud(x64, memory_budget=matrix_and_transpose).storage()
  assert fits == otkit.Storage(True, matrix_and_transpose, matrix_and_transpose)
  assert not otkit.PointCloud(x64, memory_budget=matrix_and_transpose - 1).storage().stored
  assert not otkit.PointCloud(x64, chunk_size=10, memory_budget=1 << 30).storage().stored
  # Two coordinates: evaluating an entry is cheaper than reading it back.
  assert not otkit.PointCloud(jnp.zeros((100, 2)), memory_budget=1 << 30).storage().stored
  assert otkit.PointCloud(jnp.zeros((100, 2)), cost_fn=otkit.PNorm(1.5),
                          memory_budget=1 << 30).storage().stored
  previous = otkit.set_memory_budget(matrix_and_transpose)
  try:
    assert otkit.memory_budget() == matrix_and_transpose
    assert otkit.PointCloud(x64).storage().stored
    assert not otkit.PointCloud(jnp.zeros((101, 64))).storage().stored
  finally:
    otkit.set_memory_budget(previous)
  assert otkit.memory_budget() > 0

  # Under vmap a batch of 4 needs 4 matrices.
  seen = []

  def record(x):
    geom = otkit.PointCloud(x, memory_budget=2 * matrix_and_transpose).validate()
    seen.append(geom.storage())
    return x

  jax.vmap(record)(jnp.zeros((4, 100, 64), jnp.float32))
  assert seen[0].nbytes == 4 * matrix_and_transpose and not seen[0].stored


def test_budget_bounds_the_compiled_memory_of_a_solve():
  # From the compiled program (nothing runs): at a budget of 1 GiB, 10 000 points in 64
  # dimensions are stored (the matrix and its transpose, 800 MB), 30 000 stay online.
  def compiled_bytes(n):
    def run(x):
      geom = otkit.PointCloud(x, memory_budget=1 << 30)
      return otkit.solve(geom, epsilon=1.0, solver=otkit.Sinkhorn(max_iters=5)).f
    shape = jax.ShapeDtypeStruct((n, 64), jnp.float32)
    stats = jax.jit(run).lower(shape).compile().memory_analysis()
    return stats.temp_size_in_bytes
  assert 8e8 <= compiled_bytes(10_000) < 1 << 30
  assert compiled_bytes(30_000) < 2e8


@pytest.mark.parametrize("options, match", [
    (dict(memory_budget=-1), "`memory_budget` must be an integer >= 0"),
    (dict(memory_budget=1.5), "`memory_budget`"),
    (dict(mesh="devices"), "`mesh` must be a jax.sharding.Mesh"),
])
def test_bad_storage_and_mesh_options_raise(options, match):
  with pytest.raises(ValueError, match=match):
    otkit.solve(otkit.PointCloud(jnp.zeros((4, 2)), **options), epsilon=1.0)
  with pytest.raises(ValueError, match="`nbytes`"):
    otkit.set_memory_budget(-5)
