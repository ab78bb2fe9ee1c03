"""``otkit otdd``: datasets from files, the demo, one-line errors."""

import numpy as np
import pytest

from otkit import cli


@pytest.fixture
def datasets(tmp_path):
  rng = np.random.default_rng(0)
  centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
  y = np.repeat(np.arange(3), 20)
  x = centres[y] + 0.5 * rng.normal(size=(60, 2))
  np.savez(tmp_path / "a.npz", x=x, y=y)
  np.savez(tmp_path / "b.npz", x=x + np.array([0.3, -0.2]), y=y + 7)
  return tmp_path


def _value(text: str) -> float:
  return float(next(l for l in text.splitlines() if "OTDD^2" in l).split()[-1])


def test_files_give_the_translation_closed_form_and_a_heat_map(datasets, capsys):
  png = datasets / "labels.png"
  code = cli.main(["otdd", str(datasets / "a.npz"), str(datasets / "b.npz"), "--epsilon", "0.5",
                   "--tol", "1e-7", "--out", str(png)])
  text = capsys.readouterr().out
  assert code == 0
  assert _value(text) == pytest.approx(2 * (0.3 ** 2 + 0.2 ** 2), abs=1e-6)
  header = next(l for l in text.splitlines()[::-1] if l.split() == ["7", "8", "9"])
  assert header and "W2² between the classes" in text
  assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("make_bad, expected", [
    (lambda p: str(p / "missing.npz"), "no such file"),
    (lambda p: (np.savez(p / "nolabels.npz", x=np.zeros((4, 2))), str(p / "nolabels.npz"))[1],
     "expected arrays `x` and `y`"),
    (lambda p: (np.savez(p / "float.npz", x=np.zeros((4, 2)), y=np.zeros(4)), str(p / "float.npz"))[1],
     "B ("),
    (lambda p: (np.savez(p / "short.npz", x=np.zeros((4, 2)), y=np.zeros(3, int)),
                str(p / "short.npz"))[1], "B ("),
    (lambda p: (np.save(p / "x.npy", np.zeros((4, 2))), str(p / "x.npy"))[1], ".npz"),
])
def test_bad_files_give_one_line_and_exit_2(datasets, capsys, make_bad, expected):
  code = cli.main(["otdd", str(datasets / "a.npz"), make_bad(datasets)])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and expected in err


def test_bad_option_and_missing_datasets(datasets, capsys):
  assert cli.main(["otdd", str(datasets / "a.npz"), str(datasets / "b.npz"), "--epsilon", "-1"]) == 2
  assert "--epsilon" in capsys.readouterr().err
  assert cli.main(["otdd", str(datasets / "a.npz")]) == 2
  assert "--demo" in capsys.readouterr().err
  for flag, value in (("--tol", "0"), ("--max-iters", "-3")):  # the solvers' own checks
    assert cli.main(["otdd", str(datasets / "a.npz"), str(datasets / "b.npz"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


@pytest.mark.slow
def test_demo_prints_the_table_and_writes_a_png(tmp_path, capsys):
  out = tmp_path / "otdd.png"
  assert cli.main(["otdd", "--demo", "--out", str(out)]) == 0
  assert out.read_bytes()[:4] == b"\x89PNG"
  text = capsys.readouterr().out
  assert "digits 0-4 vs 5-9" in text and "W2² between the classes" in text
