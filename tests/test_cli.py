"""The ``otkit`` command: distances from files, the demo, one-line errors."""

import numpy as np
import ot
import pytest

from otkit import cli


@pytest.fixture
def clouds(tmp_path):
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) + 1.0
  np.save(tmp_path / "x.npy", x)
  np.savetxt(tmp_path / "y.csv", y, delimiter=",")
  return tmp_path, x, y


def test_distance_prints_the_value(clouds, capsys):
  path, x, y = clouds
  code = cli.main(["distance", str(path / "x.npy"), str(path / "y.csv"), "--epsilon", "0.05",
                   "--tol", "1e-9"])
  assert code == 0
  text = capsys.readouterr().out
  value = float(next(l for l in text.splitlines() if "transport cost" in l).split()[-1])
  C = ((x[:, None] - y[None]) ** 2).sum(-1)
  P = ot.sinkhorn(np.full(30, 1 / 30), np.full(20, 1 / 20), C, 0.05, method="sinkhorn_log",
                  stopThr=1e-12, numItermax=50000)
  assert value == pytest.approx(np.sum(P * C), rel=1e-5)


@pytest.mark.parametrize("make_bad, option", [
    (lambda p: str(p / "missing.npy"), "no such file"),
    (lambda p: (np.save(p / "nan.npy", np.full((3, 2), np.nan)), str(p / "nan.npy"))[1], "NaN"),
    (lambda p: (np.save(p / "w.npy", np.zeros((4, 2))), str(p / "w.npy"))[1], None),
])
def test_bad_files_give_one_line_and_exit_2(clouds, capsys, make_bad, option):
  path, _, _ = clouds
  bad = make_bad(path)
  code = cli.main(["distance", str(path / "x.npy"), bad])
  err = capsys.readouterr().err.strip()
  if option is None:  # a well-formed file of another size is a fine problem, not an error
    assert code == 0
    return
  assert code == 2 and len(err.splitlines()) == 1 and option in err


def test_negative_weights_name_the_option(clouds, capsys):
  path, _, _ = clouds
  np.save(path / "a.npy", -np.ones(30))
  code = cli.main(["distance", str(path / "x.npy"), str(path / "y.csv"), "--weights-x",
                   str(path / "a.npy")])
  err = capsys.readouterr().err
  assert code == 2 and "--weights-x" in err


def test_demo_writes_a_png(tmp_path, capsys):
  out = tmp_path / "plan.png"
  assert cli.main(["demo", "--out", str(out)]) == 0
  assert out.read_bytes()[:4] == b"\x89PNG"
  assert "Digits" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--tol", "-1"), ("--max-iters", "0"), ("--tau", "2")])
def test_bad_solver_options_name_the_flag(clouds, capsys, flag, value):
  path, _, _ = clouds
  code = cli.main(["distance", str(path / "x.npy"), str(path / "y.csv"), flag, value])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and flag in err


def test_unequal_mass_names_both_weight_files(clouds, capsys):
  path, _, _ = clouds
  np.save(path / "a.npy", np.full(30, 2.0 / 30))
  code = cli.main(["distance", str(path / "x.npy"), str(path / "y.csv"), "--weights-x",
                   str(path / "a.npy")])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1
  assert "--weights-x" in err and "--weights-y" in err and "total mass" in err


def test_divergence_uses_the_solver_flags(clouds, capsys):
  import otkit

  path, x, y = clouds
  code = cli.main(["distance", str(path / "x.npy"), str(path / "y.csv"), "--epsilon", "0.05",
                   "--tol", "1e-9", "--divergence"])
  assert code == 0
  text = capsys.readouterr().out
  value = float(next(l for l in text.splitlines() if "Sinkhorn divergence" in l).split()[-1])
  # The solver options the flags give (the default --max-iters, envelope gradients): the
  # reference shares the compiled solves of the command.
  expected = otkit.sinkhorn_divergence(x, y, epsilon=0.05, solver=otkit.Sinkhorn(
      tol=1e-9, max_iters=10000, grad_mode="envelope"))
  assert value == pytest.approx(float(expected.value), rel=1e-5)  # printed with 6 digits
