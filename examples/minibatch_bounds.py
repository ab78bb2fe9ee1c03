"""Budget-constrained mini-batch bounds on OT between two halves of real datasets.

For two datasets shipped with scikit-learn (handwritten digits, 64-d; breast-cancer
measurements, 30-d, standardised), the source measure is one group of samples and the target
another (digits 0–4 against 5–9; malignant against benign tumours), with the same number of
points. ``otkit.minibatch_bounds`` splits both into batches and, for a growing budget of solved
batch pairs, returns an upper bound (the best coupling of batches among the solved pairs) and a
dual lower bound; the plot shows both against the budget, with the exact OT value (POT's
``ot.emd2``) and the plain mini-batch average as reference lines. Runs in a minute or two on a
laptop CPU and writes ``minibatch_bounds.png`` next to this script.

Usage: ``python examples/minibatch_bounds.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import matplotlib
import numpy as np
import ot
from sklearn.datasets import load_breast_cancer, load_digits

import otkit

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def digits(n=600):
  data = load_digits()
  x, labels = data.data / 16.0, data.target
  return x[labels < 5][:n], x[labels >= 5][:n], "digits 0–4 vs 5–9 (n = 600, d = 64)"


def breast_cancer(n=200):
  data = load_breast_cancer()
  x = (data.data - data.data.mean(0)) / data.data.std(0)
  return (x[data.target == 0][:n], x[data.target == 1][:n],
          "breast cancer: malignant vs benign (n = 200, d = 30)")


def sweep(x, y, batch_size, budgets, key):
  """Upper and lower bounds for each budget (the same random partition for all budgets)."""
  rows = []
  for budget in budgets:
    out = otkit.minibatch_bounds(key, x, y, batch_size=batch_size, budget=budget)
    if not bool(out.converged):
      raise RuntimeError(f"an inner solve failed at budget {budget}")
    rows.append((budget, float(out.upper), float(out.lower), float(out.average)))
    print(f"  budget {budget:4d}: lower {rows[-1][2]:.4f}  upper {rows[-1][1]:.4f}  "
          f"average {rows[-1][3]:.4f}")
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", type=Path, default=Path(__file__).with_name("minibatch_bounds.png"))
  args = parser.parse_args()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, (make, batch_size) in zip(axes, ((digits, 50), (breast_cancer, 25))):
    x, y, title = make()
    x, y = x.astype(np.float32), y.astype(np.float32)
    k = x.shape[0] // batch_size
    exact = ot.emd2([], [], ot.dist(x.astype(np.float64), y.astype(np.float64)))
    budgets = sorted({k, 2 * k, k * k // 4, k * k // 2, k * k})
    print(f"{title}: k = {k} batches of {batch_size}, exact OT {exact:.4f}")
    rows = np.array(sweep(x, y, batch_size, budgets, jax.random.key(0)))
    ax.plot(rows[:, 0], rows[:, 1], "o-", color="tab:red", label="upper bound (best batch coupling)")
    ax.plot(rows[:, 0], rows[:, 2], "s-", color="tab:blue", label="lower bound (dual)")
    ax.axhline(exact, color="black", lw=1.5, label="exact OT (POT emd2)")
    ax.axhline(rows[-1, 3], color="tab:gray", ls="--", label="plain mini-batch average")
    ax.set_xlabel("budget: batch pairs solved")
    ax.set_ylabel("squared-Euclidean OT cost")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc="center right")
  fig.suptitle("Mini-batch bounds on OT against the budget of batch solves (otkit.minibatch_bounds)",
               fontsize=11)
  fig.tight_layout()
  fig.savefig(args.out, dpi=90)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
