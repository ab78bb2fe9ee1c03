"""The ``otkit`` command line: OT distances between point clouds in files, and a demo.

  otkit distance X.npy Y.npy [--epsilon E] [--weights-x A.npy] [--weights-y B.npy] ...
  otkit demo [--out otkit_demo.png]
  otkit otdd A.npz B.npz [--epsilon E] [--label-distance gaussian|exact] ...   (arrays x, y)
  otkit otdd --demo [--out otkit_otdd.png]

Errors in the inputs (missing or unreadable files, bad shapes, NaN, negative weights, ε ≤ 0)
are reported on one line with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zipfile

import numpy as np

COSTS = ("sqeuclidean", "euclidean", "cosine")


class CommandError(Exception):
  """An error in what the user asked for, reported on one line."""


# What NumPy raises on an empty, truncated or corrupt .npy/.npz/.csv file.
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def _real(arr: np.ndarray, path: str, what: str) -> np.ndarray:
  """``arr`` if it holds real numbers (integers, booleans or floats)."""
  if arr.dtype.kind not in "biuf":
    raise CommandError(f"{what}: {path} holds {arr.dtype} values; expected real numbers.")
  return arr


def _load_array(path: str, what: str) -> np.ndarray:
  try:
    if path.endswith(".npz"):
      with np.load(path, allow_pickle=False) as data:
        if len(data.files) != 1:
          raise CommandError(f"{what}: {path} holds {len(data.files)} arrays; expected one.")
        return _real(np.asarray(data[data.files[0]]), path, what)
    if path.endswith((".csv", ".txt")):
      return np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=2)
    return _real(np.load(path, allow_pickle=False), path, what)
  except FileNotFoundError as err:
    raise CommandError(f"{what}: no such file: {path}") from err
  except _UNREADABLE as err:
    raise CommandError(f"{what}: cannot read {path} ({type(err).__name__}: {err})") from err


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
  solver = otkit.Sinkhorn(tol=args.tol, max_iters=args.max_iters)
  out = otkit.solve(geom, a, b, epsilon=args.epsilon, tau_a=args.tau, tau_b=args.tau,
                    solver=solver)
  jax.block_until_ready(out)
  rows = {"value (regularised OT)": float(out.value),
          "transport cost <C, P>": float(otkit.transport_cost(geom, out)),
          "iterations": int(out.n_iters),
          "marginal error (L1)": float(out.error),
          "converged": bool(out.converged)}
  if args.divergence:
    div = otkit.sinkhorn_divergence(x, y, a, b, epsilon=args.epsilon, cost_fn=_cost(args.cost),
                                    solver=otkit.Sinkhorn(tol=args.tol, max_iters=args.max_iters,
                                                          grad_mode="envelope"))
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
  solver = otkit.Sinkhorn(tol=1e-4, max_iters=10000)
  table = []
  for scale in tqdm(scales, desc="Sinkhorn and divergence over epsilon", unit="eps"):
    eps = scale * mean_cost
    start = time.perf_counter()
    out = otkit.solve(geom, epsilon=eps, solver=solver)
    div = otkit.sinkhorn_divergence(x, y, epsilon=eps, solver=solver)
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
  out = otkit.solve(geom, epsilon=eps, solver=solver)
  path = args.out if os.path.splitext(args.out)[1] else args.out + ".png"
  _plot_plan(x, y, np.asarray(otkit.transport_plan(geom, out)), path)
  print(f"(times include compilation)\nwrote {path}")
  return 0


def _load_dataset(path: str, what: str):
  """Features ``x (n, d)`` and integer labels ``y (n,)`` from an ``.npz`` file."""
  if not path.endswith(".npz"):
    raise CommandError(f"{what}: {path} must be an .npz file holding arrays `x` and `y`.")
  try:
    with np.load(path, allow_pickle=False) as data:
      if "x" not in data.files or "y" not in data.files:
        raise CommandError(f"{what}: {path} holds {data.files}; expected arrays `x` and `y`.")
      x = _real(np.asarray(data["x"]), path, what)
      y = np.asarray(data["y"])
  except FileNotFoundError as err:
    raise CommandError(f"{what}: no such file: {path}") from err
  except _UNREADABLE as err:
    raise CommandError(f"{what}: cannot read {path} ({type(err).__name__}: {err})") from err
  return (x[:, None] if x.ndim == 1 else x), y


def _otdd(xs, labels_s, xt, labels_t, args, names: dict):
  """OTDD with one-line errors naming the files and options; returns the output and seconds.

  ``--tol`` and ``--max-iters`` set both the outer solver (annealed, as otkit.otdd's default)
  and the solver of the ``exact`` label distances.
  """
  import jax

  import otkit

  names = {**names, "`epsilon`": "--epsilon", "`tol`": "--tol", "`max_iters`": "--max-iters",
           "`inner_epsilon`": "--epsilon"}
  start = time.perf_counter()
  try:
    options = dict(tol=args.tol, max_iters=args.max_iters, grad_mode="envelope")
    out = otkit.otdd(xs, labels_s, xt, labels_t, epsilon=args.epsilon,
                     label_distance=args.label_distance, debiased=not args.biased,
                     solver=otkit.Sinkhorn(anneal=True, **options),
                     inner_solver=otkit.Sinkhorn(**options))
  except ValueError as err:
    message = str(err)
    for name, option in names.items():
      message = message.replace(name, option)
    raise CommandError(message) from err
  jax.block_until_ready(out)
  return out, time.perf_counter() - start


def _print_label_distances(out, title: str) -> None:
  table = np.asarray(out.label_distances)
  print(title)
  print("  " + " " * 8 + "".join(f"{c:>10}" for c in out.classes_t))
  for c, row in zip(out.classes_s, table):
    print(f"  {c:>8}" + "".join(f"{v:>10.4g}" for v in row))


def _plot_label_distances(out, path: str, title: str, names=("source", "target")) -> None:
  import matplotlib.pyplot as plt

  table = np.asarray(out.label_distances)
  fig, ax = plt.subplots(figsize=(1.2 + 0.6 * table.shape[1], 1.0 + 0.6 * table.shape[0]))
  image = ax.imshow(table, cmap="viridis")
  ax.set_xticks(range(table.shape[1]), [str(c) for c in out.classes_t])
  ax.set_yticks(range(table.shape[0]), [str(c) for c in out.classes_s])
  ax.set_xlabel(f"{names[1]} class")
  ax.set_ylabel(f"{names[0]} class")
  ax.set_title(title, fontsize=9)
  fig.colorbar(image, ax=ax, label="W2² between classes")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# The digits' squared distances are about 10 (features in [0, 1]): ε = 0.3 is 3 % of them.
DEMO_OTDD_EPSILON = 0.3


def demo_datasets():
  """Labelled variants of the bundled digits (features scaled to [0, 1], d = 64)."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  x, y = (digits.data / 16.0).astype(np.float32), digits.target
  low, high = y < 5, y >= 5
  noisy = x[low] + np.random.default_rng(0).normal(scale=0.2, size=x[low].shape).astype(np.float32)
  return {"digits 0-4 vs 5-9": (x[low], y[low], x[high], y[high]),
          "digits 0-4 vs a noisy copy": (x[low], y[low], noisy, y[low]),
          "digits 0-4 vs themselves": (x[low], y[low], x[low], y[low])}


def otdd_demo(args) -> int:
  _demo_requirements()
  from tqdm import tqdm

  rows, first = [], None
  for name, data in tqdm(demo_datasets().items(), desc="OTDD between digit datasets", unit="pair"):
    out, seconds = _otdd(*data, args, {})
    rows.append((name, float(out.value), int(out.ot.n_iters), bool(out.converged), seconds))
    first = first or out
  print(f"\nOTDD² (label distance {args.label_distance}, epsilon {args.epsilon:g}, "
        f"{'biased' if args.biased else 'debiased'}), bundled digits scaled to [0, 1], d = 64")
  for name, value, iters, converged, seconds in rows:
    print(f"  {name:<28} {value:>10.4g}  {iters:>5} it  converged={converged}  {seconds:.2f} s")
  _print_label_distances(first, "\nW2² between the classes of digits 0-4 (rows) and 5-9 (columns):")
  path = args.out or "otkit_otdd.png"
  _plot_label_distances(first, path, "Label distances, digits 0-4 vs 5-9")
  print(f"(times include compilation)\nwrote {path}")
  return 0


def otdd_command(args) -> int:
  if args.epsilon is None:
    args.epsilon = DEMO_OTDD_EPSILON if args.demo else 0.1
  if args.demo:
    return otdd_demo(args)
  if args.a is None or args.b is None:
    raise CommandError("give two datasets, A.npz B.npz (arrays x and y), or --demo.")
  xs, labels_s = _load_dataset(args.a, "A")
  xt, labels_t = _load_dataset(args.b, "B")
  names = {"`x_s`": f"A ({args.a}): x", "`labels_s`": f"A ({args.a}): y",
           "`x_t`": f"B ({args.b}): x", "`labels_t`": f"B ({args.b}): y"}
  out, seconds = _otdd(xs, labels_s, xt, labels_t, args, names)
  rows = {"OTDD^2 (value)": float(out.value), "OTDD (distance)": float(out.distance),
          "iterations": int(out.ot.n_iters), "converged": bool(out.converged),
          "time (s, incl. compilation)": seconds}
  _print_table(rows, f"otkit otdd: {args.a} ({xs.shape[0]} points, {len(out.classes_s)} classes) vs "
                     f"{args.b} ({xt.shape[0]} points, {len(out.classes_t)} classes), "
                     f"label distance {args.label_distance}, epsilon = {args.epsilon:g}")
  _print_label_distances(out, "W2² between the classes of A (rows) and B (columns):")
  if args.out:
    _plot_label_distances(out, args.out, f"Label distances, {args.a} vs {args.b}", ("A", "B"))
    print(f"wrote {args.out}")
  return 0 if rows["converged"] else 1


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

  dd = commands.add_parser("otdd", help="OT distance between two labelled datasets (OTDD)")
  dd.add_argument("a", nargs="?", help="source dataset: .npz with features x (n, d), labels y (n,)")
  dd.add_argument("b", nargs="?", help="target dataset: .npz with arrays x and y")
  dd.add_argument("--demo", action="store_true", help="OTDD between variants of the bundled digits")
  dd.add_argument("--epsilon", type=float, help="entropic regularisation (default 0.1; demo 0.3)")
  dd.add_argument("--label-distance", choices=("gaussian", "exact"), default="gaussian",
                  help="W2 between class Gaussians (default) or entropic OT between class samples")
  dd.add_argument("--biased", action="store_true", help="OT_eps instead of the Sinkhorn divergence")
  dd.add_argument("--tol", type=float, default=1e-4, help="L1 marginal tolerance")
  dd.add_argument("--max-iters", type=int, default=10000, help="iteration cap")
  dd.add_argument("--out", help="PNG heat map of the label distances (demo: otkit_otdd.png)")
  dd.set_defaults(run=otdd_command)
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
