"""A point cloud flowing onto a heart under the Sinkhorn divergence (a Wasserstein gradient flow).

The particles start as a Gaussian blob; the flow of ``F(ρ) = S_ε(ρ, ν)``, with ``ν`` points on
a heart-shaped curve, moves each particle with velocity ``−n ∇_{x_i} S_ε`` (forward Euler). The
whole flow is one compiled ``lax.scan`` (:func:`otkit.flows.gradient_flow`), and the Sinkhorn
potentials of one step warm-start the next. Draws snapshots, the particle trajectories and the
objective per step, and writes an animated GIF of the frames.

  python examples/gradient_flow_2d.py [--n 400] [--steps 80] [--out examples/gradient_flow_2d.png]

References:
  Feydy, Séjourné, Vialard, Amari, Trouvé, Peyré, "Interpolating between Optimal Transport and
  MMD using Sinkhorn Divergences", AISTATS 2019 (the flow of the Sinkhorn divergence).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.animation import FuncAnimation, PillowWriter  # noqa: E402

import otkit.flows as fl  # noqa: E402


def heart(m: int, seed: int = 1) -> np.ndarray:
  """``m`` points on a heart-shaped curve (scaled to about [−1, 1]²), with a little noise."""
  t = np.random.default_rng(seed).uniform(0, 2 * np.pi, m)
  x = 16 * np.sin(t) ** 3
  y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
  return (np.stack([x, y], 1) / 17.0).astype(np.float32)


def run(n: int, steps: int, epsilon: float, step_size: float):
  rng = np.random.default_rng(0)
  x0 = (0.25 * rng.standard_normal((n, 2)) + [0.0, -1.6]).astype(np.float32)
  target = heart(n)
  energy = fl.sinkhorn_divergence_to(target, epsilon=epsilon)
  start = time.perf_counter()
  out = fl.gradient_flow(energy, x0, step_size=step_size, n_steps=steps,
                         save_every=max(1, steps // 16))
  out.frames.block_until_ready()
  print(f"{steps} steps of {n} particles in {time.perf_counter() - start:.1f} s (compilation "
        f"included); S_ε from {float(out.values[0]):.4f} to {float(out.values[-1]):.5f}")
  return x0, target, out


def draw(target, out, path: Path) -> None:
  frames, steps = np.asarray(out.frames), np.asarray(out.steps)
  picks = [0, len(frames) // 4, len(frames) // 2, len(frames) - 1]
  fig, axes = plt.subplots(1, 5, figsize=(17, 3.6))
  for ax, k in zip(axes, picks):
    ax.scatter(*target.T, s=3, c="tab:red", alpha=0.4, label="target ν")
    ax.scatter(*frames[k].T, s=3, c="tab:blue", label="particles")
    ax.set_title(f"step {steps[k]}")
  ax = axes[3]
  for i in range(0, frames.shape[1], max(1, frames.shape[1] // 60)):  # 60 trajectories
    ax.plot(frames[:, i, 0], frames[:, i, 1], lw=0.6, c="0.4")
  for ax in axes[:4]:
    ax.set_aspect("equal")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-2.4, 1.2)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0].legend(loc="upper left", fontsize=7, markerscale=3)
  axes[4].semilogy(np.asarray(out.values))
  axes[4].set_xlabel("step")
  axes[4].set_title("S_ε(ρ_t, ν)")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  print(f"wrote {path}")


def animate(target, out, path: Path) -> None:
  frames, steps = np.asarray(out.frames), np.asarray(out.steps)
  fig, ax = plt.subplots(figsize=(3.2, 3.2))
  ax.scatter(*target.T, s=2, c="tab:red", alpha=0.4)
  dots = ax.scatter(*frames[0].T, s=2, c="tab:blue")
  title = ax.set_title("step 0")
  ax.set_aspect("equal")
  ax.set_xlim(-1.5, 1.5)
  ax.set_ylim(-2.4, 1.2)
  ax.axis("off")

  def update(k):
    dots.set_offsets(frames[k])
    title.set_text(f"step {steps[k]}")
    return dots, title

  FuncAnimation(fig, update, frames=len(frames)).save(path, writer=PillowWriter(fps=4), dpi=60)
  plt.close(fig)
  print(f"wrote {path}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=400, help="particles (and target points)")
  parser.add_argument("--steps", type=int, default=80)
  parser.add_argument("--epsilon", type=float, default=0.01)
  parser.add_argument("--step-size", type=float, default=0.05)
  parser.add_argument("--out", default="examples/gradient_flow_2d.png")
  args = parser.parse_args()
  _, target, out = run(args.n, args.steps, args.epsilon, args.step_size)
  path = Path(args.out)
  draw(target, out, path)
  animate(target, out, path.with_suffix(".gif"))


if __name__ == "__main__":
  main()
