"""Wasserstein barycenters: digit images on their pixel grid, and 2-D shapes as point clouds.

Top rows: for each digit 0–9, the fixed-support entropic barycenter (:func:`otkit.barycenter`)
of 20 of scikit-learn's bundled 8×8 images of it (no download), on the 64 pixel centres with
the squared Euclidean cost, then the debiased barycenter of the same images, which removes
the entropic blur. Bottom row: free-support barycenters (:func:`otkit.free_support_barycenter`,
exact assignment plans) between a circle and a square outline, 200 points each, for weights
``λ`` from 0 to 1: displacement interpolation between the two shapes, and, in the last panel,
the barycenter of a circle, a square and a triangle with equal weights.

  python examples/barycenters.py [--epsilon 0.5] [--out examples/barycenters.png]

References:
  Benamou, Carlier, Cuturi, Nenna, Peyré, "Iterative Bregman projections for regularized
  transportation problems", SIAM J. Sci. Comput. 2015.
  Janati, Cuturi, Gramfort, "Debiased Sinkhorn barycenters", ICML 2020.
  Cuturi, Doucet, "Fast computation of Wasserstein barycenters", ICML 2014.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import otkit  # noqa: E402


def digit_barycenters(epsilon: float, per_digit: int = 20, seed: int = 0):
  """Plain and debiased barycenters ``(10, 8, 8)`` of ``per_digit`` images of each digit."""
  digits = load_digits()
  grid = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij"), -1).reshape(64, 2)
  rng = np.random.default_rng(seed)
  plain, debiased = [], []
  solver = otkit.Sinkhorn(tol=1e-5, max_iters=3000)
  for d in range(10):
    index = rng.choice(np.flatnonzero(digits.target == d), per_digit, replace=False)
    hists = digits.data[index] + 1e-3  # a floor: every pixel has some mass
    hists = (hists / hists.sum(1, keepdims=True)).astype(np.float32)
    for debias, out_list in ((False, plain), (True, debiased)):
      out = otkit.barycenter(grid.astype(np.float32), hists, epsilon=epsilon, debiased=debias,
                             solver=solver)
      out_list.append(np.asarray(out.weights).reshape(8, 8))
  return np.stack(plain), np.stack(debiased)


def outline(shape: str, n: int) -> np.ndarray:
  """``n`` points evenly spread along the outline of a circle, a square or a triangle."""
  t = (np.arange(n) + 0.5) / n
  if shape == "circle":
    return np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], 1)
  corners = {"square": [(-1, -1), (1, -1), (1, 1), (-1, 1)],
             "triangle": [(-1, -0.8), (1, -0.8), (0, 1.0)]}[shape]
  corners = np.array(corners + corners[:1], float)
  sides = len(corners) - 1
  side, s = np.minimum((t * sides).astype(int), sides - 1), (t * sides) % 1.0
  return corners[side] + s[:, None] * (corners[side + 1] - corners[side])


def shape_barycenters(n: int = 200):
  circle, square, triangle = (outline(s, n) for s in ("circle", "square", "triangle"))
  clouds = jnp.asarray(np.stack([circle, square]), jnp.float32)
  key = jax.random.key(0)
  rows = []
  for lam in np.linspace(0.0, 1.0, 5):
    out = otkit.free_support_barycenter(key, clouds, n_points=n,
                                        lambdas=jnp.array([1.0 - lam, lam], jnp.float32))
    rows.append((f"λ = {lam:.2f}", np.asarray(out.points)))
  three = otkit.free_support_barycenter(key, jnp.asarray(np.stack([circle, square, triangle]),
                                                          jnp.float32), n_points=n)
  rows.append(("circle, square, triangle", np.asarray(three.points)))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epsilon", type=float, default=0.5)
  parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".png"))
  args = parser.parse_args()

  start = time.perf_counter()
  plain, debiased = digit_barycenters(args.epsilon)
  print(f"20 digit barycenters (plain and debiased, ε = {args.epsilon}): "
        f"{time.perf_counter() - start:.1f} s")
  start = time.perf_counter()
  shapes = shape_barycenters()
  print(f"6 free-support barycenters of 200 points: {time.perf_counter() - start:.1f} s")

  fig, axes = plt.subplots(3, 10, figsize=(15, 5.2))
  for d in range(10):
    for row, (name, images) in enumerate((("plain", plain), ("debiased", debiased))):
      axes[row, d].imshow(images[d], cmap="gray_r")
      axes[row, d].set_xticks([])
      axes[row, d].set_yticks([])
      if d == 0:
        axes[row, d].set_ylabel(name)
  for ax in axes[2]:
    ax.axis("off")
  for i, (title, points) in enumerate(shapes):
    ax = fig.add_subplot(3, 6, 13 + i)
    ax.scatter(points[:, 0], points[:, 1], s=3)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.axis("off")
  fig.suptitle(f"Fixed-support digit barycenters (ε = {args.epsilon}) and free-support shape "
               "barycenters")
  fig.subplots_adjust(left=0.03, right=0.99, top=0.9, bottom=0.02, hspace=0.3)
  fig.savefig(args.out, dpi=120)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
