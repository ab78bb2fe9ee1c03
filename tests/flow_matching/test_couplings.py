"""Couplings of mini-batches against POT's exact and entropic plans (PAPERS §H.3 item 1)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

import helpers
import otkit
from otkit import flow_matching as fm

KEY = jax.random.key(0)


def _batches(seed, n=24, m=None, dtype=np.float64):
  rng = np.random.default_rng(seed)
  x0 = rng.normal(size=(n, 2))
  x1 = rng.normal(size=(m or n, 2)) * 0.5 + np.array([3.0, 0.0])
  return x0.astype(dtype), x1.astype(dtype)


@pytest.mark.parametrize("seed, dtype", [(0, np.float32), (1, np.float64)])
def test_exact_pairing_costs_the_emd_value_and_less_than_independent(seed, dtype):
  x0, x1 = _batches(seed, dtype=dtype)
  p0, p1 = fm.couple(KEY, x0, x1)
  chex.assert_shape((p0, p1), x0.shape)
  chex.assert_type((p0, p1), dtype)
  paired = float(np.mean(np.sum((np.float64(p0) - np.float64(p1)) ** 2, axis=1)))
  n = x0.shape[0]
  emd = ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), helpers.sq_cost(x0, x1))
  rounding = 8 * np.finfo(dtype).eps * float(helpers.sq_cost(x0, x1).max())
  np.testing.assert_allclose(paired, emd, rtol=0, atol=rounding)
  np.testing.assert_array_equal(np.sort(np.asarray(p1), axis=0), np.sort(x1, axis=0))
  q0, q1 = fm.couple(KEY, x0, x1, method="independent")
  np.testing.assert_array_equal(np.sort(np.asarray(q1), axis=0), np.sort(x1, axis=0))
  assert paired <= float(np.mean(np.sum((np.float64(q0) - np.float64(q1)) ** 2, axis=1)))


def test_exact_coupling_under_jit_and_vmap_equals_a_loop_without_recompiling():
  xs, ys = zip(*(_batches(seed, n=16) for seed in range(3)))
  xs, ys = jnp.asarray(np.stack(xs)), jnp.asarray(np.stack(ys))
  batched = jax.vmap(lambda x, y: fm.couple(KEY, x, y))(xs, ys)
  loop = [fm.couple(KEY, x, y) for x, y in zip(xs, ys)]
  helpers.assert_trees_close(batched, jax.tree.map(lambda *v: jnp.stack(v), *loop), rtol=0)
  helpers.assert_no_recompile(lambda x, y: fm.couple(KEY, x, y), (xs[0], ys[0]), (xs[1], ys[1]))


def _pair_frequencies(method, x0, x1, count, **options):
  keys = jax.random.split(KEY, count)
  draw = jax.jit(jax.vmap(lambda k: fm.couple(k, x0, x1, method=method, return_result=True,
                                              **options)))
  p0, p1, result = draw(keys)
  assert np.all(np.asarray(result) == 0)
  i = np.argmin(np.abs(np.asarray(p0)[..., None, 0] - x0[None, None, :, 0]), axis=-1)
  j = np.argmin(np.abs(np.asarray(p1)[..., None, 0] - x1[None, None, :, 0]), axis=-1)
  freq = np.zeros((x0.shape[0], x1.shape[0]))
  np.add.at(freq, (i.ravel(), j.ravel()), 1.0)
  return freq / freq.sum()


@pytest.mark.parametrize("method", ["sinkhorn", "unbalanced"])
def test_entropic_pairs_are_drawn_from_pots_plan(method):
  # Batches of different sizes; pairs drawn with replacement from the plan (torchcfm's rule).
  x0, x1 = _batches(2, n=4, m=3)
  epsilon, tau = 2.0, 0.8
  C = helpers.sq_cost(x0, x1)
  a, b = np.full(4, 0.25), np.full(3, 1 / 3)
  if method == "sinkhorn":
    P = ot.sinkhorn(a, b, C, epsilon, method="sinkhorn_log", stopThr=1e-12, numItermax=10000)
  else:
    rho = epsilon * tau / (1 - tau)
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, C, epsilon, rho, method="sinkhorn",
                                          reg_type="kl", stopThr=1e-12, numItermax=10000)
  P = P / P.sum()
  count = 4000  # 16 000 pairs: a multinomial standard deviation below 0.004 per cell
  freq = _pair_frequencies(method, x0, x1, count, epsilon=epsilon, tau=tau,
                           solver=otkit.Sinkhorn(tol=1e-9, max_iters=5000))
  np.testing.assert_allclose(freq, P, atol=5 * np.sqrt(P.max() / (4 * count)))


def test_paired_keeps_rows_and_independent_permutes_them():
  x0, x1 = _batches(3, n=8)
  p0, p1 = fm.couple(KEY, x0, x1, method="paired")
  np.testing.assert_array_equal(p1, x1)
  _, q1 = fm.couple(KEY, x0, x1, method="independent")
  assert not np.array_equal(np.asarray(q1), x1)


@pytest.mark.parametrize("changes, name", [
    (dict(x1=np.ones((5, 2))), "x1"),                     # batch sizes differ (exact)
    (dict(x1=np.ones((8, 3))), "x1"),                     # dimensions differ
    (dict(x0=np.full((8, 2), np.nan)), "x0"),
    (dict(x0=np.ones(8)), "x0"),
    (dict(method="emd"), "method"),
    (dict(method="sinkhorn", epsilon=0.0), "epsilon"),
    (dict(method="unbalanced", tau=1.5), "tau"),
    (dict(key=None), "key"),
])
def test_bad_input_is_named(changes, name):
  x0, x1 = _batches(4, n=8)
  args = dict(key=KEY, x0=x0, x1=x1) | changes
  key, x0, x1 = args.pop("key"), args.pop("x0"), args.pop("x1")
  with pytest.raises(ValueError, match=f"`{name}`"):
    fm.couple(key, x0, x1, **args)
