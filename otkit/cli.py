"""The ``otkit`` command line: OT distances between point clouds in files, and a demo.

  otkit distance X.npy Y.npy [--epsilon E] [--weights-x A.npy] [--weights-y B.npy] ...
  otkit demo [--out otkit_demo.png]

Errors in the inputs (missing or unreadable files, bad shapes, NaN, negative weights, ε ≤ 0)
are reported on one line with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

COSTS = ("sqeuclidean", "euclidean", "cosine")


class CommandError(Exception):
  """An error in what the user asked for, reported on one line."""


def _load_array(path: str, what: str) -> np.ndarray:
  try:
    if path.endswith(".npz"):
      with np.load(path) as data:
        if len(data.files) != 1:
          raise CommandError(f"{what}: {path} holds {len(data.files)} arrays; expected one.")
        return np.asarray(data[data.files[0]])
    if path.endswith((".csv", ".txt")):
      return np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=2)
    return np.load(path, allow_pickle=False)
  except FileNotFoundError as err:
    raise CommandError(f"{what}: no such file: {path}") from err
  except (OSError, ValueError) as err:
    raise CommandError(f"{what}: cannot read {path} ({err})") from err


def _cost(name: str):
  import otkit

  return {"sqeuclidean": otkit.SqEuclidean(), "euclidean": otkit.Euclidean(),
          "cosine": otkit.Cosine()}[name]


def _solve(x, y, a, b, args):
  """Sinkhorn (and optionally the divergence) with timings; compile time is included once."""
  import jax

  import otkit

  geom = otkit.PointCloud(x, y, cost_fn=_cost(args.cost))
  start = time.perf_counter()
  out = otkit.sinkhorn(geom, a, b, epsilon=args.epsilon, tau_a=args.tau, tau_b=args.tau,
                       tol=args.tol, max_iters=args.max_iters)
  jax.block_until_ready(out)
  rows = {"value (regularised OT)": float(out.value),
          "transport cost <C, P>": float(otkit.transport_cost(geom, out)),
          "iterations": int(out.n_iters),
          "marginal error (L1)": float(out.error),
          "converged": bool(out.converged)}
  if args.divergence:
    div = otkit.sinkhorn_divergence(x, y, a, b, epsilon=args.epsilon, cost_fn=_cost(args.cost),
                                    tol=args.tol, max_iters=args.max_iters)
    rows["Sinkhorn divergence"] = float(div.value)
  rows["time (s, incl. compilation)"] = time.perf_counter() - start
  return rows


def _print_table(rows: dict, title: str) -> None:
  width = max(len(k) for k in rows)
  print(title)
  for key, value in rows.items():
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    print(f"  {key:<{width}}  {text}")


def distance(args) -> int:
  x = _load_array(args.x, "X")
  y = _load_array(args.y, "Y")
  a = None if args.weights_x is None else _load_array(args.weights_x, "--weights-x")
  b = None if args.weights_y is None else _load_array(args.weights_y, "--weights-y")
  if x.ndim == 1:
    x = x[:, None]
  if y.ndim == 1:
    y = y[:, None]
  try:
    rows = _solve(x, y, a, b, args)
  except ValueError as err:
    names = {"`x`": f"X ({args.x})", "`y`": f"Y ({args.y})", "`a`": f"--weights-x ({args.weights_x})",
             "`b`": f"--weights-y ({args.weights_y})", "`epsilon`": "--epsilon", "`tau_a`": "--tau",
             "`tol`": "--tol", "`max_iters`": "--max-iters"}
    message = str(err)
    for name, option in names.items():
      message = message.replace(name, option)
    raise CommandError(message) from err
  _print_table(rows, f"otkit distance: {args.x} ({x.shape[0]} points) vs {args.y} "
                     f"({y.shape[0]} points), d = {x.shape[1]}, epsilon = {args.epsilon:g}")
  return 0 if rows["converged"] else 1


def _demo_requirements():
  try:
    import matplotlib
    import sklearn  # noqa: F401
    import tqdm  # noqa: F401
  except ImportError as err:
    raise CommandError(f"the demo needs the examples extra ({err.name} is missing): "
                       "pip install -e '.[examples]'") from err
  matplotlib.use("Agg")


def demo_clouds(n_per_side: int = 400):
  """Digits 0–4 and digits 5–9 of scikit-learn's bundled digits, embedded in 2-D by PCA."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  features = digits.data - digits.data.mean(0)
  _, _, vt = np.linalg.svd(features, full_matrices=False)
  embedded = features @ vt[:2].T
  embedded /= embedded.std()
  low = embedded[digits.target < 5][:n_per_side]
  high = embedded[digits.target >= 5][:n_per_side]
  return low.astype(np.float32), high.astype(np.float32)


def _plot_plan(x, y, plan, path: str) -> None:
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 6))
  strongest = np.argsort(plan, axis=None)[::-1][: 2 * len(x)]
  rows, cols = np.unravel_index(strongest, plan.shape)
  alpha = plan[rows, cols] / plan[rows, cols].max()
  for i, j, w in zip(rows, cols, alpha):
    ax.plot([x[i, 0], y[j, 0]], [x[i, 1], y[j, 1]], color="0.3", lw=0.6, alpha=float(w))
  ax.scatter(*x.T, s=8, label="digits 0-4", zorder=3)
  ax.scatter(*y.T, s=8, label="digits 5-9", zorder=3)
  ax.set_title("Entropic transport plan between two halves of the digits (PCA, 2-D)")
  ax.legend(loc="upper right")
  ax.set_aspect("equal")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def demo(args) -> int:
  _demo_requirements()
  from tqdm import tqdm

  import jax

  import otkit

  x, y = demo_clouds()
  geom = otkit.PointCloud(x, y)
  mean_cost = float(np.mean(((x[:, None] - y[None]) ** 2).sum(-1)))
  scales = (0.1, 0.03, 0.01, 0.003)
  table = []
  for scale in tqdm(scales, desc="Sinkhorn and divergence over epsilon", unit="eps"):
    eps = scale * mean_cost
    start = time.perf_counter()
    out = otkit.sinkhorn(geom, epsilon=eps, tol=1e-4, max_iters=10000)
    div = otkit.sinkhorn_divergence(x, y, epsilon=eps, tol=1e-4, max_iters=10000)
    jax.block_until_ready((out, div))
    table.append((scale, eps, float(out.value), float(otkit.transport_cost(geom, out)),
                  float(div.value), int(out.n_iters), float(out.error), bool(out.converged),
                  time.perf_counter() - start))
  print(f"\nDigits 0-4 vs 5-9 ({len(x)} + {len(y)} points, 2-D PCA), cost |x - y|^2, "
        f"mean cost {mean_cost:.3f}")
  header = ("eps/mean", "epsilon", "OT_eps", "<C,P>", "S_eps", "iters", "L1 err", "conv", "s")
  print("  ".join(f"{h:>9}" for h in header))
  for row in table:
    cells = [f"{v:>9.4g}" if isinstance(v, float) else f"{v!s:>9}" for v in row]
    print("  ".join(cells))
  eps = table[-1][1]
  out = otkit.sinkhorn(geom, epsilon=eps, tol=1e-4, max_iters=10000)
  path = args.out if os.path.splitext(args.out)[1] else args.out + ".png"
  _plot_plan(x, y, np.asarray(otkit.transport_plan(geom, out)), path)
  print(f"(times include compilation)\nwrote {path}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="otkit", description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest="command", required=True)

  dist = commands.add_parser("distance", help="entropic OT between two point clouds in files")
  dist.add_argument("x", help="source points, (n, d) array in .npy, .npz, .csv or .txt")
  dist.add_argument("y", help="target points, (m, d) array")
  dist.add_argument("--epsilon", type=float, default=0.1, help="entropic regularisation (default 0.1)")
  dist.add_argument("--weights-x", help="source weights, (n,) array (default uniform)")
  dist.add_argument("--weights-y", help="target weights, (m,) array (default uniform)")
  dist.add_argument("--cost", choices=COSTS, default="sqeuclidean", help="ground cost")
  dist.add_argument("--tau", type=float, default=1.0, help="marginal relaxation in (0, 1]; 1 = balanced")
  dist.add_argument("--tol", type=float, default=1e-4, help="L1 marginal tolerance")
  dist.add_argument("--max-iters", type=int, default=10000, help="iteration cap")
  dist.add_argument("--divergence", action="store_true", help="also the debiased Sinkhorn divergence")
  dist.set_defaults(run=distance)

  dem = commands.add_parser("demo", help="Sinkhorn between two halves of the bundled digits")
  dem.add_argument("--out", default="otkit_demo.png", help="PNG of the transport plan")
  dem.set_defaults(run=demo)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except (CommandError, ValueError) as err:
    print(f"otkit {args.command}: error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
