"""Every public entry point with a valid call and its bad inputs, and how an outcome is judged.

An entry point is a function of keyword arguments (``fn(**args)``) around one public callable,
a valid set of arguments, and the kind of each argument. Bad inputs are made from the valid
arguments by the mutations of each kind (:data:`MUTATIONS`) and by each entry point's wrong static
options. Every mutation belongs to a category (:data:`CATEGORIES`); a cell is one entry point and
one mutation.

A cell's outcome (:func:`judge`) is

* ``"named"``: a ``ValueError``/``TypeError`` (or the entry point's own error) whose message
  names the argument (in backticks, or the file/option for the command line);
* ``"right"``: a legitimate input (a conversion, or the valid call) gave finite output equal to
  its reference;
* ``"reported"``: the output reports the failure (a ``result`` other than converged) where that
  is the stated behaviour (a user's cost function returning NaN);
* ``"silent"``: output returned for a bad input, or wrong or non-finite output for a valid one;
* ``"crash"``: any other exception, or an error that does not name the argument.

:func:`random_valid` draws random valid arrays of the same shapes for an entry point (its
output must be finite, or report its failure).

Shared by ``tests/reliability/test_bad_inputs.py`` and ``benchmarks/reliability.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import otkit
from otkit import flows as fl
from otkit.flows import dataset as ds

CATEGORIES = ("rank", "dims", "nan", "inf", "weights", "empty", "dtype", "type", "option")
ACCEPTED = ("named", "right", "reported")

N, M, D = 5, 4, 2

# Entry points whose valid calls compile long programs, or whose valid calls their own test
# modules already run under jit, vmap and grad: their legitimate and random inputs run with
# -m slow (their bad inputs, which raise before anything compiles, run by default).
HEAVY = frozenset({*(f"flow_matching.{n}" for n in (
                       "couple", "conditional_path", "sample_path", "cfm_loss", "sample",
                       "path_energy", "wasserstein2", "VelocityMLP", "PopulationEmbedding",
                       "MetaVelocity", "fit", "fit_meta")),
                   "SinkhornNewton", "sinkhorn_newton", "otdd", "flows.otdd_to",
                   "flows.dataset.dataset_flow", "sinkhorn_divergence", "max_sliced_wasserstein",
                   "minibatch_ot", "minibatch_bounds", "cli distance", "cli otdd",
                   "nn.FactorizedConv", "nn.FactorizedDense", "flows.sinkhorn_divergence_to",
                   "Euclidean", "PNorm", "CostMatrix", "LabelledPointCloud",
                   "flows.gradient_flow", "sliced_wasserstein", "gaussian_barycenter",
                   "gromov_wasserstein", "gw_lower_bound",
                   *(f"flows.{n}" for n in ("potential_energy", "interaction_energy", "kde_entropy",
                                             "sliced_wasserstein_to", "total", "as_energy")),
                   *(f"flows.dataset.{n}" for n in ("augment", "class_collapse", "margin_potential",
                                                     "kmeans_labels")),
                   *(f"nn.{n}" for n in ("spectral_init", "conv_kernel_matrix", "frobenius_penalty",
                                         "frobenius_decay", "factorize_dense", "factorize_conv",
                                         "factor_mask"))})
# Public names that take no user input of their own: outputs and enums, the class behind every
# energy (built by the energy functions), SqEuclidean (no arguments; every PointCloud's default)
# and the getter of the memory budget.
NOT_ENTRY_POINTS = frozenset({"Result", "ClassStatistics", "GaussianBarycenter", "Energy",
                              "SqEuclidean", "PathEnergy", "COUPLINGS", "METHODS", "PATHS",
                              "Storage", "memory_budget"})


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D))
  y = rng.normal(size=(M, D)) + 0.5
  a = rng.uniform(0.5, 1.0, N)
  b = rng.uniform(0.5, 1.0, M)
  return x, y, a / a.sum(), b / b.sum()


X, Y, A, B = _data()
LABELS_X = np.array([0, 1, 0, 1, 1])
LABELS_Y = np.array([0, 1, 1, 0])
COV = np.array([[1.0, 0.3], [0.3, 0.5]])


@dataclasses.dataclass(frozen=True)
class Cell:
  entry: str
  category: str
  label: str
  args: dict
  names: tuple  # the argument an error must name; () for a legitimate input
  reference: dict | None = None  # arguments giving the same answer, for a legitimate input
  reported_ok: bool = False


@dataclasses.dataclass(frozen=True)
class Lazy:
  """An argument built when a cell is called (flax layers: their initialisation compiles)."""

  make: Callable[[], Any]


def _resolve(args: dict) -> dict:
  return {k: v.make() if isinstance(v, Lazy) else v for k, v in args.items()}


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str
  fn: Callable[..., Any]
  args: dict
  kinds: dict  # argument -> kind (a key of MUTATIONS)
  options: tuple = ()  # (argument, bad value), wrong static options
  extra: tuple = ()  # (category, label, changes, names[, reported_ok]) written by hand
  legit: dict = dataclasses.field(default_factory=dict)  # generated label -> reference changes
  fixed: tuple = ()  # arguments that random valid inputs keep (e.g. weights that must be uniform)
  errors: tuple = (ValueError, TypeError)


# ----------------------------------------------------------------------------- mutations
# Each kind maps a valid value to (category, label, bad value, reference or None); a reference
# marks a legitimate input whose answer must equal the call with the reference value.


def _with(v, index, value):
  v = np.array(v, dtype=float)
  v[index] = value
  return v


def _objects(v):
  obj = v.astype(object)
  obj[0, 0] = None
  return obj


def _points(v):
  ints = np.round(2 * v).astype(int)
  return [("rank", "3-D", v[None], None), ("rank", "1-D", v[:, 0], None),
          ("nan", "NaN entry", _with(v, (0, 0), np.nan), None),
          ("inf", "inf entry", _with(v, (0, -1), np.inf), None),
          ("empty", "no points", v[:0], None), ("empty", "no features", v[:, :0], None),
          ("dtype", "complex", v + 1j, None), ("dtype", "strings", v.astype(str), None),
          ("dtype", "objects", _objects(v), None),
          ("dtype", "integers (converted)", ints, ints.astype(float)),
          ("type", "a string", "points", None), ("type", "a dict", {"x": 1}, None)]


def _second_points(v):
  return _points(v) + [("dims", "one feature more", np.concatenate([v, v[:, :1]], 1), None)]


def _weights(v):
  return [("weights", "negative entry", _with(v, 0, -0.1), None),
          ("weights", "all zero", np.zeros_like(v), None),
          ("weights", "twice the mass", 2 * v, None),
          ("dims", "one entry short", v[:-1], None), ("rank", "2-D", v[None], None),
          ("nan", "NaN entry", _with(v, 0, np.nan), None),
          ("inf", "inf entry", _with(v, 0, np.inf), None),
          ("dtype", "complex", v + 1j, None), ("type", "a string", "uniform", None)]


def _positive(v):
  return [("option", "zero", 0.0, None), ("option", "negative", -1.0, None),
          ("nan", "NaN", np.nan, None), ("inf", "inf", np.inf, None),
          ("rank", "a vector", np.full(2, v), None), ("dtype", "complex", complex(v, 1), None),
          ("type", "a string", str(v), None), ("type", "None", None, None),
          ("dtype", "an integer (converted)", int(np.ceil(v)), float(np.ceil(v)))]


def _labels(v):
  return [("dims", "one label short", v[:-1], None), ("rank", "2-D", v[None], None),
          ("dtype", "fractional", v + 0.5, None), ("weights", "negative label", _with(v, 0, -1).astype(int), None),
          ("nan", "NaN label", _with(v, 0, np.nan), None), ("inf", "inf label", _with(v, 0, np.inf), None),
          ("empty", "no labels", v[:0], None), ("type", "a string", "labels", None),
          ("dtype", "complex", v + 1j, None)]


def _key(v):
  del v
  return [("type", "None", None, None), ("type", "an int seed", 0, None),
          ("rank", "two keys", jax.random.split(jax.random.key(0)), None),
          ("dtype", "float array", np.zeros(2), None), ("type", "a string", "key", None)]


def _covariance(v):
  return [("rank", "1-D", np.diag(v), None), ("dims", "wrong size", np.eye(3), None),
          ("weights", "not symmetric", _with(v, (0, 1), 0.9), None),
          ("weights", "negative eigenvalue", -v, None),
          ("nan", "NaN entry", _with(v, (0, 0), np.nan), None),
          ("inf", "inf entry", _with(v, (0, 0), np.inf), None), ("empty", "0 × 0", np.zeros((0, 0)), None),
          ("dtype", "complex", v + 1j, None), ("type", "a string", "cov", None)]


def _vector(v):
  return [("rank", "2-D", v[None], None), ("dims", "one entry short", v[:-1], None),
          ("nan", "NaN entry", _with(v, 0, np.nan), None), ("inf", "inf entry", _with(v, 0, np.inf), None),
          ("empty", "empty", v[:0], None), ("dtype", "complex", v + 1j, None),
          ("type", "a string", "vector", None)]


def _matrix(v):
  return [("rank", "1-D", v[0], None), ("rank", "3-D", v[None, None], None),
          ("nan", "NaN entry", _with(v, (0, 0), np.nan), None),
          ("empty", "0 rows", v[:0], None), ("dtype", "complex", v + 1j, None),
          ("dtype", "strings", v.astype(str), None), ("type", "a string", "matrix", None),
          ("dtype", "integers (converted)", np.round(v).astype(int), np.round(v))]


def _cost_matrix(v):
  return _matrix(v) + [("inf", "-inf entry", _with(v, (0, 0), -np.inf), None)]


def _images(v):
  return [("rank", "2-D", v[0, 0], None), ("dims", "another channel count", v[..., :1], None),
          ("nan", "NaN entry", _with(v, (0, 0, 0, 0), np.nan), None),
          ("inf", "inf entry", _with(v, (0, 0, 0, 0), np.inf), None),
          ("empty", "no channels", v[..., :0], None), ("dtype", "complex", v + 1j, None),
          ("type", "a string", "images", None)]


def _populations(v):
  return [("rank", "2-D", v[0], None), ("dims", "another dimension", v[..., :1], None),
          ("nan", "NaN entry", _with(v, (0, 0, 0), np.nan), None),
          ("inf", "inf entry", _with(v, (0, 0, 0), np.inf), None),
          ("empty", "no populations", v[:0], None), ("empty", "no points", v[:, :0], None),
          ("dtype", "complex", v + 1j, None), ("type", "a string", "populations", None)]


def _histograms(v):
  return [("rank", "1-D", v[0], None), ("dims", "one entry short", v[:, :-1], None),
          ("weights", "negative entry", _with(v, (0, 0), -0.1), None),
          ("weights", "unequal masses", v * np.arange(1, v.shape[0] + 1)[:, None], None),
          ("nan", "NaN entry", _with(v, (0, 0), np.nan), None),
          ("inf", "inf entry", _with(v, (0, 0), np.inf), None),
          ("empty", "no histograms", v[:0], None), ("dtype", "complex", v + 1j, None),
          ("type", "a string", "histograms", None)]


def _int_option(v):
  return [("option", "zero", 0, None), ("option", "negative", -3, None),
          ("option", "a float", v + 0.5, None), ("type", "a string", str(v), None),
          ("type", "None", None, None)]


MUTATIONS = {"points": _points, "points2": _second_points, "weights": _weights,
             "positive": _positive, "labels": _labels, "key": _key, "covariance": _covariance,
             "vector": _vector, "matrix": _matrix, "cost_matrix": _cost_matrix,
             "int": _int_option, "images": _images, "populations": _populations,
             "histograms": _histograms}


def cells(entry: Entry) -> list[Cell]:
  """The valid call and every bad input of ``entry``."""
  out = [Cell(entry.name, "valid", "valid call", dict(entry.args), ())]
  for arg, kind in entry.kinds.items():
    for category, label, value, reference in MUTATIONS[kind](entry.args[arg]):
      args, label = entry.args | {arg: value}, f"{arg}: {label}"
      if label in entry.legit:  # a legitimate input for this entry point
        changes = entry.legit[label]
        out.append(Cell(entry.name, category, label, args, (),
                        None if changes is None else entry.args | changes))
      elif reference is None:
        # A mismatch between arguments may be reported by any of them.
        names = tuple(entry.kinds) if category == "dims" else (arg,)
        out.append(Cell(entry.name, category, label, args, names))
      else:
        out.append(Cell(entry.name, category, label, args, (), entry.args | {arg: reference}))
  for arg, value in entry.options:
    out.append(Cell(entry.name, "option", f"{arg}={value!r}", entry.args | {arg: value}, (arg,)))
  for category, label, changes, names, *reported in entry.extra:
    out.append(Cell(entry.name, category, label, entry.args | changes, tuple(names),
                    reported_ok=bool(reported and reported[0])))
  return out


def _random_value(kind: str, value, rng: np.random.Generator, scale: float):
  """A random valid value like ``value`` for an argument of ``kind`` (``value`` itself for the
  kinds that hold options, labels or keys)."""
  shape = np.shape(value)
  if kind in ("points", "points2", "vector", "matrix", "images"):
    return rng.normal(size=shape) * scale + rng.normal() * scale
  if kind == "weights":
    w = rng.uniform(0.1, 1.0, shape)
    if w.size > 1:
      w[rng.integers(0, w.size)] = 0.0
    return w / w.sum()
  if kind == "cost_matrix":
    return rng.uniform(0.0, 1.0, shape) * scale ** 2
  if kind == "covariance":
    q = rng.normal(size=shape) * scale
    return q @ q.T + 0.1 * scale ** 2 * np.eye(shape[0])
  return value


def random_valid(entry: Entry, rng: np.random.Generator, scale: float) -> Cell:
  """A cell with random valid values of ``entry``'s array arguments (same shapes), points at
  ``scale``; its output must be finite (or report its failure in its result code)."""
  args = {k: _random_value(kind, entry.args[k], rng, scale) for k, kind in entry.kinds.items()
          if k not in entry.fixed}
  return Cell(entry.name, "valid", f"random valid inputs at scale {scale:.3g}", entry.args | args,
              (), reported_ok=True)


# ----------------------------------------------------------------------------- judging


def _float_leaves(tree) -> list[np.ndarray]:
  leaves = []
  for leaf in jax.tree.leaves(tree):
    arr = np.asarray(leaf) if not isinstance(leaf, (str, bytes)) else None
    if arr is not None and np.issubdtype(arr.dtype, np.inexact):
      leaves.append(arr)
  return leaves


def _failed_result(out) -> bool:
  result = getattr(out, "result", None)
  return result is not None and bool(np.any(np.asarray(result) != otkit.Result.CONVERGED))


def _names_argument(message: str, names: tuple) -> bool:
  return any(f"`{n}`" in message or ((n[0].isupper() or any(c in n for c in "./-")) and n in message)
             for n in names)


def judge(entry: Entry, cell: Cell) -> tuple[str, str]:
  """``(outcome, detail)`` of one cell (see the module docstring)."""
  try:
    out = entry.fn(**_resolve(cell.args))
    leaves = _float_leaves(out)
  except entry.errors as err:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if cell.names and _names_argument(str(err), cell.names):
      return "named", message
    return "crash", f"{type(err).__name__}: {message}"
  except Exception as err:  # noqa: BLE001 - anything else is an internal crash
    return "crash", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
  if cell.names:
    if cell.reported_ok and _failed_result(out):
      return "reported", f"result {np.asarray(out.result).max()}"
    return "silent", "bad input accepted"
  if _failed_result(out):  # a valid call that did not converge: acceptable only if said so
    if cell.reported_ok:
      try:
        otkit.check(out)
      except RuntimeError:
        return "reported", f"result {np.asarray(out.result).max()}"
    return "silent", "a valid call did not converge"
  if not all(np.all(np.isfinite(v)) for v in leaves):
    return "silent", "non-finite output"
  if cell.reference is not None:
    expected = _float_leaves(entry.fn(**_resolve(cell.reference)))
    if len(expected) != len(leaves) or not all(
        v.shape == w.shape and np.allclose(v, w, rtol=1e-6, atol=1e-9)
        for v, w in zip(leaves, expected)):
      return "silent", "differs from the reference"
  return "right", ""


# ----------------------------------------------------------------------------- entry points


def _solve(geom, a=None, b=None, epsilon=0.5, solver=None, **kwargs):
  return otkit.solve(geom, a, b, epsilon=epsilon, solver=solver, **kwargs)


def _cli(argv: list[str]) -> int:
  """Runs the command line; a non-zero exit with one line on stderr becomes a ValueError."""
  from otkit import cli

  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      code = cli.main(argv)
    except SystemExit as exit_:  # argparse's own refusals
      code = exit_.code
    except Exception as err:  # noqa: BLE001 - a user would see a traceback: a crash
      raise RuntimeError(f"uncaught {type(err).__name__}: {err}") from err
  lines = err.getvalue().strip().splitlines()
  if code:
    if "Traceback" in err.getvalue():
      raise RuntimeError("traceback: " + lines[-1])
    raise ValueError(lines[-1] if lines else f"exit {code}")
  return code


_FILES = tempfile.mkdtemp(prefix="otkit-reliability-")


def _file(name: str, value) -> str:
  """Writes ``value`` (an array, or raw bytes) to a file of the session's folder."""
  path = os.path.join(_FILES, name)
  if isinstance(value, bytes):
    with open(path, "wb") as fh:
      fh.write(value)
  elif name.endswith(".npz"):
    np.savez(path, **value)
  else:
    np.save(path, np.asarray(value))
  return path


def _cli_distance(x, y, epsilon=0.5, tau=1.0):
  return _cli(["distance", _file("x.npy", x) if not isinstance(x, str) else x,
               _file("y.npy", y) if not isinstance(y, str) else y,
               "--epsilon", str(epsilon), "--tau", str(tau)])


def _cli_otdd(a, b, epsilon=0.5):
  return _cli(["otdd", a if isinstance(a, str) else _file("a.npz", a),
               b if isinstance(b, str) else _file("b.npz", b), "--epsilon", str(epsilon)])


def _energy(make):
  """An entry around an energy: built from the other arguments, scaled by ``weight``, evaluated
  at ``x``."""
  return lambda x, weight, **kw: (make(**kw) * weight)(x)


# Bad weights of an energy (``energy * weight``), for every energy entry.
SCALED = (("weights", "weight NaN", {"weight": np.nan}, ("weight",)),
          ("dims", "weight a vector", {"weight": np.ones(2)}, ("weight",)))


def _flow(energy, x0, step_size=0.1, n_steps=3, temperature=0.0):
  return fl.gradient_flow(energy, x0, step_size=step_size, n_steps=n_steps, temperature=temperature,
                          key=jax.random.key(0) if temperature else None)


def _nn():
  try:
    from flax import nnx
    from otkit import nn
  except ImportError:  # otkit.nn needs flax
    return []
  rngs = lambda: nnx.Rngs(0)  # noqa: E731
  w = np.random.default_rng(1).normal(size=(4, 3))
  kernel = np.random.default_rng(2).normal(size=(3, 3, 2, 4))
  dense = lambda in_features, out_features, rank, rank_scale, inputs: nn.FactorizedDense(  # noqa: E731
      in_features, out_features, rank=rank, rank_scale=rank_scale, rngs=rngs())(inputs)
  conv = lambda in_features, out_features, kernel_size, rank, rank_scale, inputs: nn.FactorizedConv(  # noqa: E731
      in_features, out_features, kernel_size, rank=rank, rank_scale=rank_scale, rngs=rngs())(inputs)
  images = np.random.default_rng(3).normal(size=(1, 5, 5, 2)).astype(np.float32)
  def poisoned(layer, value):
    layer.kernel.value = layer.kernel.value.at[0, 0].set(value) if layer.kernel.value.ndim == 2 else \
        layer.kernel.value.at[0, 0, 0, 0].set(value)
    return layer

  kernel_extra = lambda make: (  # noqa: E731
      ("nan", "layer: NaN kernel", {"layer": Lazy(lambda: poisoned(make(), np.nan))}, ("layer.kernel",)),
      ("inf", "layer: inf kernel", {"layer": Lazy(lambda: poisoned(make(), np.inf))}, ("layer.kernel",)))
  layer_extra = (("weights", "rank_scale 1.5", {"rank": None, "rank_scale": 1.5}, ("rank_scale",)),
                 ("dtype", "rank_scale complex", {"rank": None, "rank_scale": 0.5j}, ("rank_scale",)))
  penalty_args = dict(u=w[:, :2], v=w[:3, :2], m=None)
  decay = lambda coeff, params: nn.frobenius_decay(coeff).update(  # noqa: E731
      params, nn.frobenius_decay(coeff).init(params), params)[0]
  params = {"u": np.ones((3, 1)), "v": np.ones((2, 1)), "bias": np.zeros(2)}
  return [
      Entry("nn.FactorizedDense", dense,
            dict(in_features=4, out_features=3, rank=2, rank_scale=None, inputs=w.T.astype(np.float32)),
            {"in_features": "int", "out_features": "int", "rank": "int", "inputs": "points"},
            options=(("rank", 4),), extra=layer_extra,
            # inputs (..., in_features); integers are promoted with the parameters (float32)
            legit={"inputs: no points": None, "inputs: 3-D": None, "inputs: integers (converted)": None}),
      Entry("nn.FactorizedConv", conv,
            dict(in_features=2, out_features=4, kernel_size=(3, 3), rank=2, rank_scale=None, inputs=images),
            {"in_features": "int", "out_features": "int", "rank": "int", "inputs": "images"},
            options=(("kernel_size", (0, 3)), ("kernel_size", "3x3"), ("rank", 7)), extra=layer_extra),
      Entry("nn.spectral_init", lambda w_full, rank: nn.spectral_init(w_full, rank),
            dict(w_full=w, rank=2), {"w_full": "matrix", "rank": "int"},
            extra=(("inf", "w_full: inf entry", {"w_full": _with(w, (0, 0), np.inf)}, ("w_full",)),
                   ("weights", "rank above min(p, q)", {"rank": 4}, ("rank",)),
                   ("dims", "w_full: a column", {"w_full": w[:, :1]}, ("rank",)))),
      Entry("nn.conv_kernel_matrix", lambda kernel: nn.conv_kernel_matrix(kernel), dict(kernel=kernel),
            {}, extra=(("rank", "3-D kernel", {"kernel": kernel[0]}, ("kernel",)),
                       ("nan", "NaN entry", {"kernel": _with(kernel, (0, 0, 0, 0), np.nan)}, ("kernel",)),
                       ("inf", "inf entry", {"kernel": _with(kernel, (0, 0, 0, 0), np.inf)}, ("kernel",)),
                       ("empty", "no channels", {"kernel": kernel[..., :0]}, ("kernel",)),
                       ("dtype", "complex", {"kernel": kernel + 1j}, ("kernel",)),
                       ("type", "a string", {"kernel": "k"}, ("kernel",)),
                       ("dims", "non-square window", {"kernel": kernel[:2]}, ()),
                       ("weights", "zero kernel", {"kernel": 0 * kernel}, ()),
                       ("option", "integer kernel (converted)", {"kernel": np.ones((1, 1, 1, 1), int)}, ()))),
      Entry("nn.frobenius_penalty", lambda u, v, m: nn.frobenius_penalty(u, v, m), penalty_args,
            {"u": "matrix", "v": "matrix"},
            legit={"u: integers (converted)": {"u": np.round(penalty_args["u"])},
                   "v: integers (converted)": {"v": np.round(penalty_args["v"])}},
            extra=(("dims", "v: another rank", {"v": w[:3, :1]}, ("u", "v")),
                   ("inf", "u: inf entry", {"u": _with(w[:, :2], (0, 0), np.inf)}, ("u",)),
                   ("weights", "m: not square", {"m": np.ones((2, 3))}, ("m",)),
                   ("option", "m: a string", {"m": "m"}, ("m",)))),
      Entry("nn.frobenius_decay", decay, dict(coeff=0.1, params=params), {},
            extra=(("option", "coeff < 0", {"coeff": -0.1}, ("coeff",)),
                   ("nan", "coeff NaN", {"coeff": np.nan}, ("coeff",)),
                   ("inf", "coeff inf", {"coeff": np.inf}, ("coeff",)),
                   ("rank", "coeff a vector", {"coeff": np.ones(2)}, ("coeff",)),
                   ("dtype", "coeff complex", {"coeff": 1j}, ("coeff",)),
                   ("type", "coeff a string", {"coeff": "0.1"}, ("coeff",)),
                   ("dims", "factors that do not multiply", {"params": {"u": np.ones((3, 1)), "v": np.ones((2, 2))}}, ("params", "u", "v")),
                   ("empty", "no parameters", {"params": {}}, ()),
                   ("weights", "params None", {"params": None}, ("params",)))),
      Entry("nn.factorize_dense", lambda layer, rank, rank_scale: nn.factorize_dense(layer, rank=rank, rank_scale=rank_scale),
            dict(layer=Lazy(lambda: nnx.Linear(4, 3, rngs=rngs())), rank=2, rank_scale=None), {"rank": "int"},
            extra=(("type", "layer: a conv", {"layer": Lazy(lambda: nnx.Conv(2, 3, (3, 3), rngs=rngs()))}, ("layer",)),
                   ("rank", "rank above min(in, out)", {"rank": 4}, ("rank",)),
                   ("dims", "layer None", {"layer": None}, ("layer",)),
                   ("option", "rank and rank_scale missing", {"rank": None}, ("rank", "rank_scale")),
                   *layer_extra, ("empty", "rank_scale 0", {"rank": None, "rank_scale": 0.0}, ("rank_scale",)),
                   *kernel_extra(lambda: nnx.Linear(4, 3, rngs=rngs())))),
      Entry("nn.factorize_conv", lambda layer, rank, rank_scale: nn.factorize_conv(layer, rank=rank, rank_scale=rank_scale),
            dict(layer=Lazy(lambda: nnx.Conv(2, 4, (3, 3), rngs=rngs())), rank=2, rank_scale=None), {"rank": "int"},
            extra=(("type", "layer: a dense", {"layer": Lazy(lambda: nnx.Linear(4, 3, rngs=rngs()))}, ("layer",)),
                   ("rank", "rank above min", {"rank": 40}, ("rank",)),
                   ("dims", "layer None", {"layer": None}, ("layer",)),
                   ("option", "rank and rank_scale missing", {"rank": None}, ("rank", "rank_scale")),
                   *layer_extra, ("empty", "rank_scale 0", {"rank": None, "rank_scale": 0.0}, ("rank_scale",)),
                   *kernel_extra(lambda: nnx.Conv(2, 4, (3, 3), rngs=rngs())))),
      Entry("nn.factor_mask", lambda params: nn.factor_mask(params), dict(params=params), {},
            extra=(("type", "None", {"params": None}, ()),
                   ("empty", "no parameters", {"params": {}}, ()),
                   ("dims", "factors that do not multiply", {"params": {"u": np.ones((3, 1)), "v": np.ones((2, 2))}}, ("params", "u", "v")),
                   ("rank", "1-D factors", {"params": {"u": np.ones(3), "v": np.ones(2)}}, ("params", "u", "v")),
                   ("nan", "NaN factor (a mask needs no values)", {"params": {"u": np.full((3, 1), np.nan), "v": np.ones((2, 1))}}, ()),
                   ("inf", "inf factor (a mask needs no values)", {"params": {"u": np.full((3, 1), np.inf), "v": np.ones((2, 1))}}, ()),
                   ("dtype", "string leaves", {"params": {"u": "u"}}, ()),
                   ("weights", "a list of trees", {"params": [params, params]}, ()),
                   ("option", "bool leaves", {"params": {"u": True}}, ()))),
  ]


def _flow_matching():
  try:
    from flax import nnx
    from otkit import flow_matching as fm
  except ImportError:  # otkit.flow_matching needs flax
    return []
  key = jax.random.key(0)
  x0, x1 = X[:M], Y
  field = lambda t, x: 0.5 * x  # noqa: E731
  mlp = lambda: fm.VelocityMLP(D, hidden=4, depth=1, rngs=nnx.Rngs(0))  # noqa: E731
  meta = lambda: fm.MetaVelocity(D, features=2, hidden=4, depth=1, rngs=nnx.Rngs(0))  # noqa: E731
  pops0 = np.stack([x0, x0 + 1.0])
  pops1 = np.stack([x1, x1 - 1.0])
  sigma_extra = (("weights", "sigma < 0", {"sigma": -0.1}, ("sigma",)),
                 ("option", "sigma NaN", {"sigma": np.nan}, ("sigma",)))
  not_callable = ("option", "velocity_fn not callable", {"velocity_fn": 3.0}, ("velocity_fn",))
  integration_extra = (not_callable, ("option", "method dopri5", {"method": "dopri5"}, ("method",)),
                       ("weights", "n_steps 0", {"n_steps": 0}, ("n_steps",)))
  return [
      Entry("flow_matching.couple", lambda key, x0, x1, method, epsilon: fm.couple(
          key, x0, x1, method=method, epsilon=epsilon),
            dict(key=key, x0=x0, x1=x1, method="exact", epsilon=None),
            {"key": "key", "x0": "points", "x1": "points2"}, options=(("method", "emd"),),
            extra=(("weights", "epsilon 0 (sinkhorn)", {"method": "sinkhorn", "epsilon": 0.0}, ("epsilon",)),
                   ("dims", "batch sizes differ (exact)", {"x1": Y[:3]}, ("x0", "x1")))),
      Entry("flow_matching.conditional_path", lambda t, x0, x1, noise, path, sigma: fm.conditional_path(
          t, x0, x1, noise, path=path, sigma=sigma),
            dict(t=np.full(M, 0.3), x0=x0, x1=x1, noise=x1, path="schrodinger_bridge", sigma=0.2),
            {"t": "vector", "x0": "points", "x1": "points2", "noise": "points2"}, fixed=("t",),
            options=(("path", "brownian"),),
            extra=(*sigma_extra, ("weights", "t = 0 on the bridge", {"t": np.zeros(M)}, ("t",)))),
      Entry("flow_matching.sample_path", lambda key, x0, x1, path, sigma: fm.sample_path(
          key, x0, x1, path=path, sigma=sigma),
            dict(key=key, x0=x0, x1=x1, path="linear", sigma=0.2),
            {"key": "key", "x0": "points", "x1": "points2", "sigma": "positive"},
            options=(("path", "brownian"),), legit={"sigma: zero": None},
            extra=(("weights", "sigma 1 on the target path", {"path": "target", "sigma": 1.0}, ("sigma",)),)),
      Entry("flow_matching.cfm_loss", lambda velocity_fn, key, x0, x1, coupling, sigma: fm.cfm_loss(
          velocity_fn, key, x0, x1, coupling=coupling, sigma=sigma),
            dict(velocity_fn=field, key=key, x0=x0, x1=x1, coupling="exact", sigma=0.1),
            {"key": "key", "x0": "points", "x1": "points2"}, options=(("coupling", "emd"),),
            extra=(not_callable, *sigma_extra)),
      Entry("flow_matching.sample", lambda velocity_fn, x0, n_steps, method, t0: fm.sample(
          velocity_fn, x0, n_steps=n_steps, method=method, t0=t0),
            dict(velocity_fn=field, x0=x0, n_steps=3, method="rk4", t0=0.0),
            {"x0": "points", "n_steps": "int"},
            extra=(*integration_extra, ("nan", "t0 NaN", {"t0": np.nan}, ("t0",)),
                   ("dims", "t0 a vector", {"t0": np.zeros(2)}, ("t0",)))),
      Entry("flow_matching.path_energy", lambda velocity_fn, x0, n_steps, method: fm.path_energy(
          velocity_fn, x0, n_steps=n_steps, method=method),
            dict(velocity_fn=field, x0=x0, n_steps=3, method="euler"),
            {"x0": "points", "n_steps": "int"}, extra=integration_extra),
      Entry("flow_matching.wasserstein2", lambda x, y: fm.wasserstein2(x, y), dict(x=x0, y=x1),
            {"x": "points", "y": "points2"},
            extra=(("weights", "sizes differ", {"y": Y[:3]}, ("x", "y")),)),
      Entry("flow_matching.VelocityMLP", lambda dim, hidden, time_features, t, x: fm.VelocityMLP(
          dim, hidden, depth=1, time_features=time_features, rngs=nnx.Rngs(0))(t, x),
            dict(dim=D, hidden=4, time_features=0, t=0.5, x=x0),
            {"dim": "int", "hidden": "int", "t": "positive", "x": "points"},
            options=(("time_features", 3),),
            legit={"x: 3-D": None, "x: no points": None, "t: zero": None, "t: negative": None},
            extra=(("dims", "x: one feature more", {"x": np.concatenate([x0, x0[:, :1]], 1)}, ("x",)),
                   ("weights", "time_features negative", {"time_features": -2}, ("time_features",)))),
      Entry("flow_matching.PopulationEmbedding", lambda dim, features, kind, k, population: fm.PopulationEmbedding(
          dim, features, kind=kind, k=k, rngs=nnx.Rngs(0))(population),
            dict(dim=D, features=3, kind="gcn", k=2, population=x0),
            {"dim": "int", "features": "int", "population": "points"}, options=(("kind", "mlp"),),
            extra=(("dims", "population: one feature more", {"population": np.concatenate([x0, x0[:, :1]], 1)},
                    ("population",)),
                   ("weights", "k 0", {"k": 0}, ("k",)))),
      Entry("flow_matching.MetaVelocity", lambda dim, t, x, population: fm.MetaVelocity(
          dim, features=2, hidden=4, depth=1, rngs=nnx.Rngs(0))(t, x, population),
            dict(dim=D, t=0.5, x=x0, population=x1),
            {"dim": "int", "t": "positive", "x": "points", "population": "points2"},
            legit={"x: 3-D": None, "x: no points": None, "t: zero": None, "t: negative": None}),
      Entry("flow_matching.fit", lambda model, source, target, key, n_steps, batch_size, coupling, sigma: fm.fit(
          model, source, target, key=key, n_steps=n_steps, batch_size=batch_size, coupling=coupling,
          sigma=sigma)[1],
            dict(model=Lazy(mlp), source=x0, target=X, key=key, n_steps=2, batch_size=3,
                 coupling="exact", sigma=0.0),
            {"source": "points", "target": "points2", "key": "key", "n_steps": "int",
             "batch_size": "int"},
            options=(("coupling", "emd"),),
            extra=(("type", "model a function", {"model": field}, ("model",)), *sigma_extra)),
      Entry("flow_matching.fit_meta", lambda model, x0_populations, x1_populations, key, n_steps,
            populations_per_step, coupling: fm.fit_meta(
                model, x0_populations, x1_populations, key=key, n_steps=n_steps,
                populations_per_step=populations_per_step, coupling=coupling)[1],
            dict(model=Lazy(meta), x0_populations=pops0, x1_populations=pops1, key=key, n_steps=2,
                 populations_per_step=2, coupling="paired"),
            {"x0_populations": "populations", "x1_populations": "populations", "key": "key",
             "n_steps": "int",
             "populations_per_step": "int"},
            options=(("coupling", "emd"), ("populations_per_step", 3)),
            extra=(("type", "model a function", {"model": field}, ("model",)),)),
  ]


def entries() -> list[Entry]:
  """Every public entry point of otkit, otkit.flows, otkit.flows.dataset, otkit.nn and the CLI."""
  key = jax.random.key(0)
  cost = ((X[:, None] - Y[None]) ** 2).sum(-1)
  square = cost[:M]
  geom = otkit.PointCloud(X, Y)
  solved = otkit.solve(geom, A, B, epsilon=0.5)
  pnorm = lambda x, y, p, power: _solve(otkit.PointCloud(x, y, cost_fn=otkit.PNorm(p, power)))  # noqa: E731
  means, covs = np.stack([np.zeros(D), np.ones(D)]), np.stack([COV, np.eye(D)])
  dataset = dict(x=X, labels=LABELS_X, x_t=Y, labels_t=LABELS_Y)
  flow_solver = otkit.Sinkhorn(tol=1e-4)
  common_points = {"x": "points", "y": "points2", "a": "weights", "b": "weights"}
  out = [
      Entry("PointCloud", lambda x, y, a, chunk_size, memory_budget, mesh: _solve(otkit.PointCloud(
          x, y, chunk_size=chunk_size, memory_budget=memory_budget, mesh=mesh), a),
            dict(x=X, y=Y, a=A, chunk_size=None, memory_budget=None, mesh=None),
            {"x": "points", "y": "points2", "a": "weights"},
            options=(("chunk_size", 0), ("chunk_size", 2.5), ("memory_budget", -1),
                     ("memory_budget", 1.5), ("mesh", "devices"))),
      Entry("set_memory_budget", lambda nbytes: otkit.set_memory_budget(nbytes), dict(nbytes=None),
            {}, options=(("nbytes", True),),
            extra=(("type", "a string", {"nbytes": "2GB"}, ("nbytes",)),
                   ("dtype", "a float", {"nbytes": 1.5}, ("nbytes",)),
                   ("nan", "NaN", {"nbytes": np.nan}, ("nbytes",)),
                   ("inf", "inf", {"nbytes": np.inf}, ("nbytes",)),
                   ("weights", "negative", {"nbytes": -5}, ("nbytes",)),
                   ("empty", "empty array", {"nbytes": np.zeros(0, int)}, ("nbytes",)),
                   ("rank", "an array", {"nbytes": np.ones(2, int)}, ("nbytes",)),
                   ("dims", "a tuple", {"nbytes": (1, 2)}, ("nbytes",)))),
      Entry("CostMatrix", lambda cost_matrix, a, chunk_size: _solve(otkit.CostMatrix(cost_matrix, chunk_size), a),
            dict(cost_matrix=cost, a=A, chunk_size=None), {"cost_matrix": "cost_matrix", "a": "weights"},
            options=(("chunk_size", -1),),
            extra=(("inf", "+inf entry", {"cost_matrix": _with(cost, (0, 0), np.inf)}, ("cost_matrix",)),)),
      Entry("LabelledPointCloud",
            lambda x, labels_x, y, labels_y, label_cost, feature_weight: _solve(
                otkit.LabelledPointCloud(x, labels_x, y, labels_y, label_cost, feature_weight=feature_weight)),
            dict(x=X, labels_x=LABELS_X, y=Y, labels_y=LABELS_Y, label_cost=np.ones((2, 2)), feature_weight=1.0),
            {"x": "points", "y": "points2", "labels_x": "labels", "labels_y": "labels"},
            options=(("feature_weight", -1.0), ("feature_weight", np.ones(2))),
            extra=(("weights", "label_cost negative (a shift of the cost)", {"label_cost": -np.ones((2, 2))}, ()),
                   ("dims", "label_cost too small", {"label_cost": np.ones((1, 1))}, ("label_cost", "labels_x", "labels_y")),
                   ("nan", "label_cost NaN", {"label_cost": np.full((2, 2), np.nan)}, ("label_cost",)))),
      Entry("PNorm", pnorm, dict(x=X, y=Y, p=1.5, power=2.0), {},
            extra=(("option", "p = 0.5", {"p": 0.5}, ("p",)), ("option", "p = -1", {"p": -1.0}, ("p",)),
                   ("option", "power = 0", {"power": 0.0}, ("power",)),
                   ("weights", "power = -1", {"power": -1.0}, ("power",)),
                   ("nan", "p NaN", {"p": np.nan}, ("p",)), ("inf", "power inf", {"power": np.inf}, ("power",)),
                   ("dtype", "p complex", {"p": 2j}, ("p",)), ("type", "p a string", {"p": "2"}, ("p",)),
                   ("rank", "p a vector", {"p": np.ones(2)}, ("p",)),
                   ("empty", "p an empty array", {"p": np.ones(0)}, ("p",)),
                   ("dims", "p = inf (use a large p)", {"p": np.inf}, ("p",)))),
      Entry("CustomCost", lambda fn, x, b: _solve(otkit.PointCloud(x, Y, cost_fn=otkit.CustomCost(fn)), None, b),
            dict(fn=lambda x, y: jnp.sum(jnp.abs(x - y)), x=X, b=B), {"x": "points", "b": "weights"},
            extra=(("type", "fn not callable", {"fn": 3}, ("fn",)),
                   ("nan", "fn returns NaN", {"fn": lambda x, y: jnp.nan * x[0]}, ("fn",), True),
                   ("inf", "fn returns inf", {"fn": lambda x, y: jnp.inf * jnp.ones_like(x[0])}, ("fn",), True),
                   ("rank", "fn returns a vector", {"fn": lambda x, y: x - y}, ("fn",)),
                   ("option", "fn takes one argument", {"fn": lambda x: x}, ("fn",)))),
      Entry("Cosine", lambda x, y, chunk_size: _solve(otkit.PointCloud(x, y, cost_fn=otkit.Cosine(), chunk_size=chunk_size)),
            dict(x=X, y=Y, chunk_size=None), {"x": "points", "y": "points2"}, options=(("chunk_size", 0),),
            extra=(("weights", "a zero vector (cost 1 by convention)", {"x": _with(X, 0, 0.0)}, ()),)),
      Entry("Euclidean", lambda x, y, chunk_size: _solve(otkit.PointCloud(x, y, cost_fn=otkit.Euclidean(), chunk_size=chunk_size)),
            dict(x=X, y=Y, chunk_size=None), {"x": "points", "y": "points2"}, options=(("chunk_size", 0),),
            extra=(("weights", "coincident points", {"y": X[:M]}, ()),)),
      Entry("Sinkhorn", lambda **kw: _solve(geom, A, B, solver=otkit.Sinkhorn(**kw)),
            dict(tol=1e-3, max_iters=2000, anneal="auto", anneal_decay=0.5, fixed_iters=None,
                 grad_mode="implicit", cg_maxiter=500),
            {"tol": "positive", "max_iters": "int", "cg_maxiter": "int"},
            options=(("anneal", "yes"), ("anneal_decay", 1.5), ("anneal_decay", 0.0),
                     ("fixed_iters", 0), ("grad_mode", "backprop"), ("fixed_iters", 2.5)),
            extra=_solver_extra("anneal_decay")),
      Entry("SinkhornNewton", lambda **kw: _solve(geom, A, B, solver=otkit.SinkhornNewton(**kw)),
            dict(tol=1e-6, warmup_iters=100, warmup_tol=0.05, density=10.0),
            {"tol": "positive", "warmup_iters": "int", "warmup_tol": "positive", "density": "positive"},
            legit={"tol: None": None, "warmup_iters: zero": None, "warmup_tol: zero": None},
            extra=_solver_extra("density")),
      Entry("solve", lambda geom, a, b, epsilon, tau_a, tau_b, solver: otkit.solve(
          geom, a, b, epsilon=epsilon, tau_a=tau_a, tau_b=tau_b, solver=solver),
            dict(geom=geom, a=A, b=B, epsilon=0.5, tau_a=1.0, tau_b=1.0, solver=None),
            {"a": "weights", "b": "weights", "epsilon": "positive"},
            options=(("tau_a", 0.0), ("tau_b", 1.5), ("tau_a", np.nan), ("solver", "sinkhorn"),
                     ("geom", X), ("geom", None)),
            extra=(("weights", "unequal mass, relaxed", {"b": 2 * B, "tau_a": 0.5, "tau_b": 0.5}, ()),
                   ("empty", "a: no weights", {"a": np.zeros(0)}, ("a",)))),
      Entry("sinkhorn", lambda geom, a, b, epsilon, tol: otkit.sinkhorn(geom, a, b, epsilon=epsilon, tol=tol),
            dict(geom=geom, a=A, b=B, epsilon=0.5, tol=1e-3),
            {"a": "weights", "b": "weights", "epsilon": "positive", "tol": "positive"},
            options=(("geom", "geometry"),), extra=(("empty", "b: no weights", {"b": np.zeros(0)}, ("b",)),)),
      Entry("sinkhorn_newton", lambda geom, a, b, epsilon, tol: otkit.sinkhorn_newton(
          geom, a, b, epsilon=epsilon, tol=tol),
            dict(geom=geom, a=A, b=B, epsilon=0.5, tol=1e-6),
            {"a": "weights", "b": "weights", "epsilon": "positive", "tol": "positive"},
            options=(("geom", "geometry"),), legit={"tol: None": None},
            extra=(("empty", "a: no weights", {"a": np.zeros(0)}, ("a",)),)),
      Entry("transport_plan", lambda geom, out: otkit.transport_plan(geom, out), dict(geom=geom, out=solved), {},
            extra=_derived_extra(geom, solved)),
      Entry("transport_cost", lambda geom, out: otkit.transport_cost(geom, out), dict(geom=geom, out=solved), {},
            extra=_derived_extra(geom, solved)),
      Entry("apply_plan", lambda geom, out, vec, axis: otkit.apply_plan(geom, out, vec, axis=axis),
            dict(geom=geom, out=solved, vec=np.ones(M), axis=1), {"vec": "vector"},
            options=(("axis", 2), ("axis", "rows")), extra=_derived_extra(geom, solved)),
      Entry("check", lambda out: otkit.check(out), dict(out=solved), {},
            extra=_check_extra(solved), errors=(ValueError, TypeError, RuntimeError)),
      Entry("combine_results", lambda r1, r2: otkit.combine_results(r1, r2),
            dict(r1=np.int32(0), r2=np.int32(2)), {},
            extra=(("type", "a string", {"r1": "converged"}, ("results",)),
                   ("dtype", "floats", {"r1": 0.5}, ("results",)),
                   ("nan", "NaN", {"r1": np.nan}, ("results",)), ("inf", "inf", {"r1": np.inf}, ("results",)),
                   ("weights", "negative code", {"r1": -1}, ("results",)),
                   ("option", "unknown code", {"r1": 9}, ("results",)),
                   ("empty", "empty array", {"r1": np.zeros(0, int)}, ()),
                   ("rank", "arrays of codes (elementwise)", {"r1": np.zeros(3, int)}, ()),
                   ("dims", "arrays that do not broadcast", {"r1": np.zeros(3, int), "r2": np.zeros(2, int)}, ("results",)))),
      Entry("assignment", lambda cost_matrix, method, init: otkit.assignment(cost_matrix, init=init, method=method),
            dict(cost_matrix=square, method="auto", init=None), {"cost_matrix": "cost_matrix"},
            options=(("method", "hungarian"),), legit={"cost_matrix: 3-D": None},
            extra=(("dims", "not square", {"cost_matrix": cost}, ("cost_matrix",)),
                   ("weights", "init: NaN potentials", {"init": (np.full(M, np.nan), np.zeros(M))}, ("init",)),
                   ("weights", "init: potentials of another size", {"init": (np.zeros(3), np.zeros(M))}, ("init",)),
                   ("inf", "+inf forbids a pair", {"cost_matrix": _with(square, (0, 0), np.inf)}, ()))),
      Entry("class_statistics", lambda x, labels, num_classes: otkit.class_statistics(x, labels, num_classes=num_classes),
            dict(x=X, labels=LABELS_X, num_classes=None), {"x": "points", "labels": "labels"},
            options=(("num_classes", 0), ("num_classes", 2.0)),
            extra=(("option", "num_classes=1 with two labels", {"num_classes": 1}, ("labels",)),),
            legit={"labels: negative label": None}),
      Entry("gaussian_w2", lambda m0, C0, m1, C1: otkit.gaussian_w2(m0, C0, m1, C1),
            dict(m0=np.zeros(D), C0=COV, m1=np.ones(D), C1=np.eye(D)),
            {"m0": "vector", "m1": "vector", "C0": "covariance", "C1": "covariance"},
            extra=(("option", "m0 None (required)", {"m0": None}, ("m0",)),)),
      Entry("gaussian_map", lambda m0, C0, m1, C1: otkit.gaussian_map(m0, C0, m1, C1),
            dict(m0=np.zeros(D), C0=COV, m1=np.ones(D), C1=np.eye(D)),
            {"m0": "vector", "m1": "vector", "C0": "covariance", "C1": "covariance"},
            extra=(("option", "C1 None (required)", {"C1": None}, ("C1",)),)),
      Entry("gaussian_barycenter", lambda means, covs, weights, max_iters: otkit.gaussian_barycenter(
          means, covs, weights, max_iters=max_iters),
            dict(means=means, covs=covs, weights=np.array([0.3, 0.7]), max_iters=100),
            {"weights": "weights", "max_iters": "int"},
            legit={"weights: twice the mass": {"weights": np.array([0.3, 0.7])}},
            extra=(("weights", "covs: negative eigenvalue", {"covs": -covs}, ("covs",)),
                   ("rank", "means 1-D", {"means": means[0]}, ("means",)),
                   ("dims", "covs of another dimension", {"covs": np.stack([np.eye(3)] * 2)}, ("covs", "means")),
                   ("nan", "covs NaN", {"covs": _with(covs, (0, 0, 0), np.nan)}, ("covs",)),
                   ("empty", "no Gaussians", {"means": means[:0], "covs": covs[:0], "weights": None}, ("means", "covs")))),
      Entry("wasserstein_1d", lambda u, v, a, b, p: otkit.wasserstein_1d(u, v, a, b, p=p),
            dict(u=X[:, 0], v=Y[:, 0], a=A, b=B, p=2), {"u": "vector", "v": "vector", "a": "weights", "b": "weights"},
            options=(("p", 0), ("p", "2"))),
      Entry("ot_1d", lambda u, v, a, b, p: otkit.ot_1d(u, v, a, b, p=p),
            dict(u=X[:, 0], v=Y[:, 0], a=A, b=B, p=2), {"u": "vector", "v": "vector", "a": "weights", "b": "weights"},
            options=(("p", 0), ("p", "2"))),
      Entry("sliced_wasserstein", lambda key, x, y, a, b, n_projections, p, mesh: otkit.sliced_wasserstein(
          key, x, y, a, b, n_projections=n_projections, p=p, mesh=mesh),
            dict(key=key, x=X, y=Y, a=A, b=B, n_projections=8, p=2, mesh=None),
            common_points | {"key": "key", "n_projections": "int"},
            options=(("p", 0), ("p", np.nan), ("mesh", "devices"))),
      Entry("max_sliced_wasserstein", lambda key, x, y, a, b, n_starts, n_steps: otkit.max_sliced_wasserstein(
          key, x, y, a, b, n_starts=n_starts, n_steps=n_steps),
            dict(key=key, x=X, y=Y, a=A, b=B, n_starts=2, n_steps=5),
            common_points | {"key": "key", "n_starts": "int", "n_steps": "int"},
            legit={"n_steps: zero": None}),
      Entry("barycenter", lambda geoms_or_support, weights_list, lambdas, epsilon, debiased: otkit.barycenter(
          geoms_or_support, weights_list, lambdas=lambdas, epsilon=epsilon, debiased=debiased),
            dict(geoms_or_support=X, weights_list=np.stack([A, A[::-1]]), lambdas=np.array([0.4, 0.6]),
                 epsilon=0.5, debiased=False),
            {"geoms_or_support": "points", "weights_list": "histograms", "lambdas": "weights",
             "epsilon": "positive"},
            options=(("debiased", "yes"),),
            extra=(("weights", "lambdas not summing to 1", {"lambdas": np.array([0.4, 0.4])}, ("lambdas",)),
                   ("dims", "support of another size", {"geoms_or_support": X[:-1]}, ("weights_list",)))),
      Entry("free_support_barycenter", lambda key_or_init, xs, lambdas, n_points, epsilon, n_iters: otkit.free_support_barycenter(
          key_or_init, xs, lambdas=lambdas, n_points=n_points, epsilon=epsilon, n_iters=n_iters),
            dict(key_or_init=X[:3], xs=np.stack([X[:3], Y[:3] + 1.0]), lambdas=np.array([0.3, 0.7]), n_points=3,
                 epsilon=None, n_iters=5),
            {"key_or_init": "points", "xs": "populations", "lambdas": "weights", "n_points": "int",
             "n_iters": "int"},
            options=(("epsilon", 0.0), ("epsilon", np.nan)),
            extra=(("dims", "more atoms than n_points (exact)", {"xs": np.stack([X[:4], Y[:4]])}, ("n_points",)),)),
      Entry("gromov_wasserstein", lambda geom_xx, geom_yy, a, b, epsilon, tau_b, fused_penalty, loss, init, max_outer_iters: otkit.gromov_wasserstein(
          otkit.PointCloud(geom_xx), otkit.PointCloud(geom_yy), a, b, epsilon=epsilon, tau_b=tau_b,
          fused_penalty=fused_penalty, loss=loss, init=init, max_outer_iters=max_outer_iters),
            dict(geom_xx=X, geom_yy=Y, a=A, b=B, epsilon=5.0, tau_b=1.0, fused_penalty=0.0, loss="square", init=None,
                 max_outer_iters=200),
            {"geom_xx": "points", "geom_yy": "points", "a": "weights", "b": "weights", "epsilon": "positive",
             "max_outer_iters": "int"},
            options=(("loss", "l1"), ("init", "random"), ("fused_penalty", 1.5), ("fused_penalty", 0.5),
                     ("tau_b", 0.0)),
            extra=(("dims", "clouds of different dimensions", {"geom_yy": Y[:, :1]}, ()),
                   ("dims", "init of the wrong shape", {"init": np.ones((N, N))}, ("init",)),
                   ("weights", "unequal mass, relaxed", {"b": 2 * B, "tau_b": 0.5}, ()))),
      Entry("gw_lower_bound", lambda geom_xx, geom_yy, a, b, signature: otkit.gw_lower_bound(
          otkit.PointCloud(geom_xx), otkit.PointCloud(geom_yy), a, b, signature=signature),
            dict(geom_xx=X, geom_yy=Y, a=A, b=B, signature="eccentricity"),
            {"geom_xx": "points", "geom_yy": "points", "a": "weights", "b": "weights"},
            options=(("signature", "degree"),),
            extra=(("dims", "clouds of different dimensions", {"geom_yy": Y[:, :1]}, ()),)),
      Entry("sinkhorn_divergence", lambda x, y, a, b, epsilon, tau_a, tau_b, solver: otkit.sinkhorn_divergence(
          x, y, a, b, epsilon=epsilon, tau_a=tau_a, tau_b=tau_b, solver=solver),
            dict(x=X, y=Y, a=A, b=B, epsilon=0.5, tau_a=1.0, tau_b=1.0, solver=None),
            common_points | {"epsilon": "positive"},
            options=(("solver", "newton"), ("tau_a", 0.0), ("tau_b", np.nan)),
            extra=(("weights", "unequal mass, relaxed", {"b": 2 * B, "tau_a": 0.5, "tau_b": 0.5}, ()),)),
      Entry("minibatch_ot", lambda key, x, y, a, b, batch_size, n_batches, inner, mesh: otkit.minibatch_ot(
          key, x, y, a, b, batch_size=batch_size, n_batches=n_batches, inner=inner, mesh=mesh),
            dict(key=key, x=X, y=Y, a=A, b=B, batch_size=2, n_batches=3, inner="exact", mesh=None),
            common_points | {"key": "key", "batch_size": "int", "n_batches": "int"},
            options=(("batch_size", 9), ("inner", "greedy"), ("mesh", "devices"))),
      Entry("minibatch_bounds", lambda key, x, y, a, b, batch_size, partition: otkit.minibatch_bounds(
          key, x, y, a, b, batch_size=batch_size, partition=partition),
            dict(key=key, x=X[:M], y=Y, a=np.full(M, 1 / M), b=np.full(M, 1 / M), batch_size=2, partition="random"),
            common_points | {"key": "key", "batch_size": "int"}, fixed=("a", "b"),
            options=(("batch_size", 9), ("partition", "kmeans"))),
      Entry("otdd", lambda x_s, labels_s, x_t, labels_t, epsilon, label_distance: otkit.otdd(
          x_s, labels_s, x_t, labels_t, epsilon=epsilon, label_distance=label_distance),
            dict(x_s=X, labels_s=LABELS_X, x_t=Y, labels_t=LABELS_Y, epsilon=0.5, label_distance="gaussian"),
            {"x_s": "points", "x_t": "points2", "labels_s": "labels", "labels_t": "labels", "epsilon": "positive"},
            options=(("label_distance", "wasserstein"),), legit=_negative_labels("labels_s", "labels_t")),
      # flows
      Entry("flows.gradient_flow", _flow, dict(energy=fl.potential_energy(lambda x: jnp.sum(x ** 2)), x0=X,
                                               step_size=0.1, n_steps=3),
            {"x0": "points", "step_size": "positive", "n_steps": "int"},
            extra=(("option", "energy not callable", {"energy": 3}, ("energy",)),
                   ("weights", "temperature < 0", {"temperature": -1.0}, ("temperature",)),
                   ("dims", "x0 of another dimension than the energy's target",
                    {"energy": fl.sliced_wasserstein_to(key, Y), "x0": np.concatenate([X, X], 1)}, ("y", "x0", "x")))),
      Entry("flows.potential_energy", _energy(fl.potential_energy),
            dict(V=lambda x: jnp.sum(x ** 2), x=X, weight=1.0),
            {"x": "points"}, extra=(("option", "V not callable", {"V": "V"}, ("V",)), *SCALED)),
      Entry("flows.interaction_energy", _energy(fl.interaction_energy),
            dict(W=lambda z: jnp.sum(z ** 2), x=X, weight=1.0, chunk_size=None),
            {"x": "points"}, options=(("chunk_size", 0),),
            extra=(("option", "W not callable", {"W": 2.0}, ("W",)), *SCALED)),
      Entry("flows.kde_entropy", _energy(fl.kde_entropy), dict(bandwidth=0.5, x=X, weight=1.0),
            {"x": "points", "bandwidth": "positive"}, extra=SCALED),
      Entry("flows.sinkhorn_divergence_to", _energy(fl.sinkhorn_divergence_to),
            dict(y=Y, b=B, epsilon=0.5, solver=flow_solver, x=X, weight=1.0),
            {"x": "points2", "y": "points", "b": "weights", "epsilon": "positive"},
            options=(("solver", "sinkhorn"),)),
      Entry("flows.sliced_wasserstein_to", _energy(fl.sliced_wasserstein_to),
            dict(key=key, y=Y, b=B, n_projections=8, x=X, weight=1.0),
            {"key": "key", "x": "points2", "y": "points", "b": "weights", "n_projections": "int"}),
      Entry("flows.otdd_to", _energy(fl.otdd_to),
            dict(x_t=Y, labels_t=LABELS_Y, labels=LABELS_X, epsilon=0.5, solver=flow_solver, x=X, weight=1.0),
            {"x": "points2", "x_t": "points", "labels_t": "labels", "labels": "labels", "epsilon": "positive"},
            options=(("statistics", "frozen"),), legit=_negative_labels("labels", "labels_t")),
      Entry("flows.total", lambda e1, e2, x, weight: (fl.total(e1, e2) * weight)(x),
            dict(e1=fl.potential_energy(lambda x: jnp.sum(x ** 2)), e2=fl.kde_entropy(0.5), x=X, weight=1.0),
            {"x": "points"}, extra=(("option", "an energy not callable", {"e2": "e"}, ("energies",)), *SCALED)),
      Entry("flows.as_energy", lambda energy, x, weight: (fl.as_energy(energy) * weight)(x),
            dict(energy=lambda x: jnp.sum(x ** 2), x=X, weight=1.0), {"x": "points"},
            extra=(("option", "not callable", {"energy": 1.0}, ("energy",)), *SCALED)),
      Entry("flows.dataset.augment", lambda x, labels, num_classes: ds.augment(x, labels, num_classes=num_classes),
            dict(x=X, labels=LABELS_X, num_classes=None), {"x": "points", "labels": "labels"},
            legit=_negative_labels("labels"), options=(("num_classes", 0),),
            extra=(("option", "num_classes=1 with two labels", {"num_classes": 1}, ("labels",)),)),
      Entry("flows.dataset.class_collapse",
            lambda labels, x, num_classes: ds.class_collapse(labels, num_classes=num_classes)(x),
            dict(labels=LABELS_X, x=X, num_classes=None), {"x": "points", "labels": "labels"},
            legit=_negative_labels("labels"), options=(("num_classes", 0), ("num_classes", "two"))),
      Entry("flows.dataset.margin_potential",
            lambda signs, w, b, margin, x, weight: (ds.margin_potential(signs, w, b, margin=margin) * weight)(x),
            dict(signs=np.array([1.0, -1, 1, -1, 1]), w=np.array([1.0, 0.5]), b=0.0, margin=1.0, x=X, weight=1.0),
            {"x": "points", "signs": "vector", "w": "vector"},
            options=(("margin", np.ones(2)), ("b", "offset")), extra=SCALED),
      Entry("flows.dataset.kmeans_labels", lambda points, k: ds.kmeans_labels(points, k),
            dict(points=X, k=2), {"points": "points", "k": "int"}, options=(("k", 6),),
            extra=(("weights", "duplicated points", {"points": np.zeros((5, 2))}, ()),
                   ("dims", "fewer points than k", {"points": X[:1]}, ("k", "points")))),
      Entry("flows.dataset.dataset_flow", lambda x, labels, x_t, labels_t, mode, epsilon: ds.dataset_flow(
          x, labels, x_t, labels_t, mode=mode, epsilon=epsilon, n_steps=2, solver=flow_solver),
            dict(dataset, mode="xonly", epsilon=0.5),
            {"x": "points", "x_t": "points2", "labels": "labels", "labels_t": "labels", "epsilon": "positive"},
            options=(("mode", "xy"),), legit=_negative_labels("labels", "labels_t")),
      # the command line (its errors name the file or the option)
      Entry("cli distance", _cli_distance, dict(x=X, y=Y, epsilon=0.5, tau=1.0), {},
            extra=_cli_distance_extra()),
      Entry("cli otdd", _cli_otdd, dict(a={"x": X, "y": LABELS_X}, b={"x": Y, "y": LABELS_Y}, epsilon=0.5), {},
            extra=_cli_otdd_extra()),
  ]
  return out + _nn() + _flow_matching()


def _negative_labels(*names):
  """Labels are class identifiers (any integers) where the classes are found from the labels."""
  return {f"{name}: negative label": None for name in names}


def _solver_extra(scalar: str):
  """Bad values of a solver object's traced scalar option ``scalar`` beyond its generated ones."""
  return (("empty", "tol an empty array", {"tol": np.ones(0)}, ("tol",)),
          ("weights", f"{scalar} negative", {scalar: -0.5}, (scalar,)),
          ("dims", f"{scalar} a vector", {scalar: np.full(2, 0.5)}, (scalar,)))


def _derived_extra(geom, solved):
  other = otkit.PointCloud(X + 1.0, Y)
  return (("type", "out None", {"out": None}, ("out",)),
          ("dtype", "out a string", {"out": "out"}, ("out",)),
          ("option", "geom None", {"geom": None}, ("geom",)),
          ("dims", "another geometry's output", {"geom": otkit.PointCloud(X[:3], Y)}, ("geom", "out")),
          ("weights", "another geometry, same shape", {"geom": other}, ("geom", "out")),
          ("rank", "geom an array", {"geom": X}, ("geom",)),
          ("empty", "out an empty tuple", {"out": ()}, ("out",)),
          ("nan", "out with NaN potentials", {"out": dataclasses.replace(solved, f=solved.f * np.nan)}, ("out",)),
          ("inf", "out with inf potentials", {"out": dataclasses.replace(solved, f=solved.f + np.inf)}, ("out",)))


def _check_extra(solved):
  failed = dataclasses.replace(solved, result=jnp.asarray(otkit.Result.MAX_ITERS, jnp.int32))
  return (("type", "None", {"out": None}, ("out",)), ("dtype", "a string", {"out": "out"}, ("out",)),
          ("rank", "an array", {"out": np.ones(3)}, ("out",)), ("empty", "an empty tuple", {"out": ()}, ("out",)),
          ("nan", "NaN value", {"out": dataclasses.replace(solved, value=solved.value * np.nan)}, ("SinkhornOutput",)),
          ("inf", "inf value", {"out": dataclasses.replace(solved, value=solved.value + np.inf)}, ("SinkhornOutput",)),
          ("option", "not converged", {"out": failed}, ("SinkhornOutput",)),
          ("weights", "a dict", {"out": {"value": 1.0}}, ("out",)),
          ("dims", "a batch with one failure",
           {"out": jax.tree.map(lambda u, v: jnp.stack([u, v]), solved, failed)}, ("SinkhornOutput",)))


def _cli_distance_extra():
  bad = {"zero bytes": b"", "corrupt": b"\x93NUMPY garbage", "text": b"not numbers\n"}
  extra = []
  for i, (label, content) in enumerate(bad.items()):
    path = _file(f"distance_bad_{i}.npy", content)
    extra.append(("type", f"x: {label} file", {"x": path}, (path,)))
  return tuple(extra) + (
      ("type", "x: missing file", {"x": "/nonexistent/x.npy"}, ("/nonexistent/x.npy",)),
      ("nan", "x: NaN entry", {"x": _with(X, (0, 0), np.nan)}, ("x", "x.npy")),
      ("inf", "x: inf entry", {"x": _with(X, (0, 0), np.inf)}, ("x", "x.npy")),
      ("rank", "x: 3-D", {"x": X[None]}, ("x", "x.npy")),
      ("dims", "y: another dimension", {"y": Y[:, :1]}, ("x", "y", "x.npy", "y.npy")),
      ("empty", "x: no points", {"x": X[:0]}, ("x", "x.npy")),
      ("dtype", "x: complex", {"x": X + 1j}, ("x", "x.npy")),
      ("option", "--epsilon 0", {"epsilon": 0.0}, ("epsilon", "--epsilon")),
      ("weights", "--tau 2", {"tau": 2.0}, ("tau", "--tau", "tau_a")),
      ("dtype", "x: integers (converted)", {"x": np.round(X).astype(int)}, ()))


def _cli_otdd_extra():
  return (("type", "a: missing file", {"a": "/nonexistent/a.npz"}, ("/nonexistent/a.npz",)),
          ("type", "a: zero bytes", {"a": _file("otdd_empty.npz", b"")}, (os.path.join(_FILES, "otdd_empty.npz"),)),
          ("dtype", "a: corrupt", {"a": _file("otdd_corrupt.npz", b"PK\x03\x04garbage")}, (os.path.join(_FILES, "otdd_corrupt.npz"),)),
          ("empty", "a: no arrays", {"a": {"z": np.ones(2)}}, ("a.npz", "x")),
          ("nan", "a: NaN feature", {"a": {"x": _with(X, (0, 0), np.nan), "y": LABELS_X}}, ("a.npz", "x")),
          ("inf", "a: inf feature", {"a": {"x": _with(X, (0, 0), np.inf), "y": LABELS_X}}, ("a.npz", "x")),
          ("rank", "a: 1-D features", {"a": {"x": X[:, 0], "y": LABELS_X}}, ("a.npz", "x")),
          ("dims", "a: labels one short", {"a": {"x": X, "y": LABELS_X[:-1]}}, ("a.npz", "y", "labels")),
          ("weights", "a: fractional labels", {"a": {"x": X, "y": LABELS_X + 0.5}}, ("a.npz", "y", "labels")),
          ("option", "--epsilon -1", {"epsilon": -1.0}, ("epsilon", "--epsilon")))
