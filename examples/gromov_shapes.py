"""Gromov–Wasserstein matchings across spaces: a 2-D shape and its 3-D embedding, and two
co-activation graphs of different sizes.

Top: a 2-D spiral of 400 points, and the same points embedded in 3-D, rotated, mirrored,
scaled by 3 and shuffled. GW compares the two through their intra-distances only (each cloud
scaled to unit diameter), so it recovers the correspondence that no cost between the clouds
could give; the 3-D points are coloured by the colour transported from the 2-D ones, and the
lower bound (:func:`otkit.gw_lower_bound`), zero for isometric pairs, is printed beside.

Bottom: two co-activation graphs of scikit-learn's bundled 8×8 digits (no download), built by
two feature maps as graph-on-logits distillation does with the top-k logits of two models:
the 64 pixels, and the 16 averages of 2×2 pixel blocks. Each graph sums, over the images, the
outer products of the top-k entries of the (centred) features. GW matches the 64 pixel nodes to
the 16 block nodes; the panel colours each pixel by the block it is sent to, next to the truth
(the digits are nearly symmetric, which GW cannot tell apart: a match to a neighbouring block
is common).

  python examples/gromov_shapes.py [--out examples/gromov_shapes.png]

References:
  Mémoli, "Gromov–Wasserstein distances and the metric approach to object matching", 2011.
  Peyré, Cuturi, Solomon, "Gromov–Wasserstein averaging of kernel and distance matrices", 2016.
  Wang et al., "InfiGFusion: graph-on-logits distillation via efficient Gromov–Wasserstein",
  NeurIPS 2025.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import otkit  # noqa: E402


def unit_diameter(z: np.ndarray) -> np.ndarray:
  z = z - z.mean(0)
  return (z / (2.0 * np.sqrt(np.max(np.sum(z * z, 1))))).astype(np.float32)


def shape_matching(n: int = 400, seed: int = 0):
  """A spiral, its rotated, mirrored, scaled 3-D copy (shuffled), and GW's plan between them."""
  rng = np.random.default_rng(seed)
  t = np.sort(rng.uniform(0.5, 3.0 * np.pi, n))
  spiral = np.stack([t * np.cos(t), t * np.sin(t)], 1) + 0.05 * rng.normal(size=(n, 2))
  rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
  embedded = 3.0 * np.concatenate([spiral, np.zeros((n, 1))], 1) @ rotation
  embedded[:, 0] *= -1.0  # a mirror image
  perm = rng.permutation(n)
  x, y = unit_diameter(spiral), unit_diameter(embedded[perm])
  start = time.perf_counter()
  out = otkit.check(otkit.gromov_wasserstein(otkit.PointCloud(x), otkit.PointCloud(y),
                                             epsilon=2e-4, init="sort"))
  seconds = time.perf_counter() - start
  plan = np.asarray(otkit.transport_plan(out))
  matched = float(np.mean(np.argmax(plan, 0) == perm))  # y_j is spiral point perm[j]
  bound = float(otkit.gw_lower_bound(otkit.PointCloud(x), otkit.PointCloud(y)))
  print(f"shapes: GW {float(out.value):.2e} (lower bound {bound:.1e}), {int(out.n_outer)} outer "
        f"steps, {seconds:.1f} s; {100 * matched:.0f} % of the points matched to their own image")
  return spiral, embedded[perm], t, plan, perm, matched


def coactivation(features: np.ndarray, k: int) -> np.ndarray:
  """``Σ_t z̃_t z̃_tᵀ`` over the rows ``z_t`` of ``features``, each kept on its ``k`` largest
  entries (the others set to 0), normalised to maximum 1."""
  z = features - features.mean(0)
  keep = np.argsort(-z, axis=1)[:, :k]
  sparse = np.zeros_like(z)
  np.put_along_axis(sparse, keep, np.take_along_axis(z, keep, 1), 1)
  graph = sparse.T @ sparse
  return (graph / np.abs(graph).max()).astype(np.float32)


def graph_matching():
  images = load_digits().data  # (1797, 64)
  pooled = images.reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(-1, 16)
  G_pixels, G_blocks = coactivation(images, k=16), coactivation(pooled, k=4)
  block_of_pixel = ((np.arange(8)[:, None] // 2) * 4 + np.arange(8)[None, :] // 2).ravel()
  active = images.std(0) > 0  # pixels that are never on carry no mass
  a = active / active.sum()
  start = time.perf_counter()
  out = otkit.check(otkit.gromov_wasserstein(otkit.CostMatrix(G_pixels),
                                             otkit.CostMatrix(G_blocks), a.astype(np.float32),
                                             epsilon=3e-3))
  seconds = time.perf_counter() - start
  plan = np.asarray(otkit.transport_plan(out))
  sent = np.argmax(plan, 1)
  block_rows, block_cols = sent // 4, sent % 4
  pixel_rows, pixel_cols = np.arange(64) // 8 // 2, np.arange(64) % 8 // 2
  near = (np.abs(block_rows - pixel_rows) + np.abs(block_cols - pixel_cols) <= 1)[active]
  exact = (sent == block_of_pixel)[active]
  print(f"graphs: GW {float(out.value):.2e}, {int(out.n_outer)} outer steps, {seconds:.1f} s; of "
        f"the {active.sum()} active pixels {100 * exact.mean():.0f} % sent to their own block, "
        f"{100 * near.mean():.0f} % to it or a neighbour")
  return G_pixels, G_blocks, sent, block_of_pixel, active


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".png"))
  args = parser.parse_args()
  spiral, embedded, t, plan, perm, matched = shape_matching()
  G_pixels, G_blocks, sent, truth, active = graph_matching()

  fig = plt.figure(figsize=(16, 8))
  ax = fig.add_subplot(2, 4, 1)
  ax.scatter(*spiral.T, c=t, cmap="viridis", s=6)
  ax.set_title("2-D spiral (colour: position)")
  ax.set_aspect("equal")
  ax = fig.add_subplot(2, 4, 2, projection="3d")
  colour = plan.T @ t / plan.sum(0)  # the colour each 3-D point receives
  ax.scatter(*embedded.T, c=colour, cmap="viridis", s=6)
  ax.set_title(f"3-D embedding, colour sent by GW\n({100 * matched:.0f} % exact matches)")
  ax = fig.add_subplot(2, 4, 3)
  ax.imshow(np.log(plan[:, np.argsort(perm)] + 1e-12), cmap="magma", aspect="auto")
  ax.set_title("log of the GW plan (rows: spiral, columns:\nembedding, unshuffled for display)")
  fig.add_subplot(2, 4, 4).axis("off")
  for k, (graph, title) in enumerate(((G_pixels, "co-activation of 64 pixels"),
                                      (G_blocks, "co-activation of 16 pixel blocks"))):
    ax = fig.add_subplot(2, 4, 5 + k)
    ax.imshow(graph, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_title(title)
  panels = ((np.where(active, sent, np.nan), "block each pixel is sent to"),
            (np.where(active, truth, np.nan), "its own block"))
  for k, (image, title) in enumerate(panels):
    ax = fig.add_subplot(2, 4, 7 + k)
    ax.imshow(image.reshape(8, 8), cmap="tab20", vmin=0, vmax=15)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
