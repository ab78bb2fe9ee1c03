"""Training: OT-CFM against I-CFM on torchcfm's 8 Gaussians → moons (PAPERS §H.3 item 2), one
compilation across calls, and the checks of the training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import helpers
from data import eight_gaussians, moons
from otkit import flow_matching as fm

KEY = jax.random.key(0)
TARGET = moons(20000)
X0_TEST = eight_gaussians(jax.random.key(99), 500)
X1_TEST = moons(500, seed=5)


def _train(coupling, n_steps):
  source = lambda k: eight_gaussians(k, 256)
  model = fm.VelocityMLP(2, rngs=nnx.Rngs(0))  # torchcfm's MLP: 3 × 64, SELU, t appended
  return fm.fit(model, source, TARGET, key=KEY, n_steps=n_steps, batch_size=256,
                coupling=coupling, sigma=0.01)


def _compare_ot_cfm_with_i_cfm(n_steps, ot_loss, i_loss):
  results = {}
  for coupling in ("exact", "independent"):
    model, losses = _train(coupling, n_steps)
    w2 = [float(fm.wasserstein2(fm.sample(model, X0_TEST, n_steps=k), X1_TEST)) for k in (2, 5, 10)]
    npe = float(fm.path_energy(model, X0_TEST, n_steps=20).normalized)
    results[coupling] = float(jnp.mean(losses[-100:])), w2, npe
  (ot_last, ot_w2, ot_npe), (i_last, i_w2, i_npe) = results["exact"], results["independent"]
  assert ot_last < ot_loss and i_last > i_loss, results
  # OT-CFM's flow is straighter and closer to the target at 2, 5 and 10 Euler steps.
  assert all(o <= i for o, i in zip(ot_w2, i_w2)), results
  assert ot_npe < i_npe, results


def test_ot_cfm_learns_a_straighter_flow_than_i_cfm():
  # 300 steps (the budget of the default run; the notebook's 5 000 with -m slow below), where
  # OT-CFM's loss is still falling: measured 0.40 against I-CFM's 10.7; W₂ at 2, 5 and 10 Euler
  # steps 0.62, 0.60, 0.60 against 2.0, 1.15, 0.90; normalised path energy 0.006 against 0.61.
  _compare_ot_cfm_with_i_cfm(300, ot_loss=0.6, i_loss=5.0)


@pytest.mark.slow
def test_ot_cfm_against_i_cfm_at_the_notebooks_5000_steps():
  _compare_ot_cfm_with_i_cfm(5000, ot_loss=0.5, i_loss=5.0)


@pytest.mark.slow
def test_sb_cfm_trains_with_entropic_pairs():
  # SB-CFM: pairs from the entropic plan at ε = 2σ², the Brownian-bridge path.
  model = fm.VelocityMLP(2, rngs=nnx.Rngs(0))
  model, losses = fm.fit(model, lambda k: eight_gaussians(k, 256), TARGET, key=KEY, n_steps=1000,
                         coupling="sinkhorn", path="schrodinger_bridge", sigma=0.5)
  assert np.all(np.isfinite(losses))
  w2 = float(fm.wasserstein2(fm.sample(model, X0_TEST, n_steps=20), X1_TEST))
  i_model, _ = _train("independent", 1000)
  assert w2 < float(fm.wasserstein2(fm.sample(i_model, X0_TEST, n_steps=20), X1_TEST))


def test_fit_compiles_once_for_new_data_of_the_same_shapes():
  # The configuration of fit's docstring example: the program it compiled is reused.
  rng = np.random.default_rng(0)
  data = [rng.normal(size=(512, 2)) for _ in range(2)]
  run = lambda x0: fm.fit(fm.VelocityMLP(2, hidden=16, depth=2, rngs=nnx.Rngs(0)), x0, x0 + 3.0,
                          key=KEY, n_steps=100, batch_size=32)
  _, first = run(data[0])
  with helpers.compilations() as names:
    _, second = run(data[1])
  assert not names, names
  assert first.shape == second.shape == (100,)
  assert not np.allclose(first, second)


@pytest.mark.parametrize("changes, name", [
    (dict(model=lambda t, x: x), "model"),
    (dict(target=np.ones((64, 3))), "target"),
    (dict(source=np.full((64, 2), np.nan)), "source"),
    (dict(source=lambda k: jnp.ones((7, 2))), "source"),
    (dict(coupling="paired", target=np.ones((65, 2))), "source"),
    (dict(sigma=-0.5), "sigma"),
    (dict(path="diffusion"), "path"),
    (dict(coupling="emd"), "coupling"),
    (dict(n_steps=0), "n_steps"),
    (dict(optimizer="adam"), "optimizer"),
    (dict(key=None), "key"),
])
def test_bad_input_is_named(changes, name):
  args = dict(model=fm.VelocityMLP(2, hidden=4, depth=1, rngs=nnx.Rngs(0)), source=np.ones((64, 2)),
              target=np.zeros((64, 2)), key=KEY, n_steps=2, batch_size=8) | changes
  with pytest.raises(ValueError, match=f"`{name}`"):
    fm.fit(args.pop("model"), args.pop("source"), args.pop("target"), **args)
