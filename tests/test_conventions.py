"""Conventions checked by parsing the code: the import rule between subpackages, no private
recompilation counters in the tests.

The import rule: a module may use the private names (``_x``: functions, classes, constants; not
dunders) of its own subpackage only. Subpackage = the first component under ``otkit``
(``otkit/solvers``, ``otkit/geometry``, ...); each top-level module (``otkit/_validation.py``,
``otkit/cli.py``, ``otkit/__init__.py``) is a unit of its own. Importing a private *module* of
another subpackage is allowed (``from otkit.solvers import _solve``); its public names are public,
its private names are not, whether imported by name (``from otkit.estimators._divergence import
_divergence``) or reached as an attribute (``_sliced._sliced``, ``G._replace``,
``getattr(G, "_replace")``).
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "otkit"
# The documented API of NamedTuple classes starts with an underscore.
NAMEDTUPLE_API = frozenset({"_replace", "_make", "_fields", "_asdict", "_field_defaults"})


def is_private(name: str) -> bool:
  return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def unit_of(module: str) -> str:
  """The subpackage ``otkit.<first>`` a module belongs to; a top-level module is its own unit."""
  parts = module.split(".")
  return ".".join(parts[:2])


@dataclasses.dataclass(frozen=True)
class Module:
  name: str  # dotted name of an otkit module


@dataclasses.dataclass(frozen=True)
class Name:
  module: str  # the module the name is taken from
  name: str


@dataclasses.dataclass(frozen=True)
class Violation:
  path: str
  line: int
  text: str

  def __str__(self):
    return f"{self.path}:{self.line}: {self.text}"


class Package:
  """Module lookups in a source tree whose root holds the ``otkit`` directory."""

  def __init__(self, root: pathlib.Path):
    self.root = root

  def is_module(self, dotted: str) -> bool:
    path = self.root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

  def is_package(self, dotted: str) -> bool:
    return (self.root.joinpath(*dotted.split(".")) / "__init__.py").is_file()

  def modules(self):
    for path in sorted((self.root / PACKAGE).rglob("*.py")):
      rel = path.relative_to(self.root).with_suffix("")
      parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
      yield path, ".".join(parts)


def _absolute(package: Package, module: str, node: ast.ImportFrom) -> str:
  """The absolute module of a ``from ... import`` (relative imports resolved)."""
  if not node.level:
    return node.module or ""
  base = module.split(".")
  if not package.is_package(module):
    base = base[:-1]
  base = base[:len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _bindings(tree: ast.AST, package: Package, module: str):
  """Local names bound by imports of otkit modules (anywhere in the file) and the private names
  of other units imported by name."""
  bound, imported = {}, []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] != PACKAGE:
          continue
        if alias.asname:
          bound[alias.asname] = Module(alias.name)
        else:
          bound[alias.name.split(".")[0]] = Module(PACKAGE)
    elif isinstance(node, ast.ImportFrom):
      source = _absolute(package, module, node)
      if source.split(".")[0] != PACKAGE:
        continue
      for alias in node.names:
        if alias.name == "*":
          continue
        local = alias.asname or alias.name
        if package.is_module(f"{source}.{alias.name}"):
          bound[local] = Module(f"{source}.{alias.name}")
        else:
          bound[local] = Name(source, alias.name)
          imported.append((node.lineno, source, alias.name))
  return bound, imported


def _resolve(expr: ast.AST, bound: dict, package: Package):
  """What an expression made of names and attributes refers to, if it starts at an import."""
  if isinstance(expr, ast.Name):
    return bound.get(expr.id)
  if isinstance(expr, ast.Attribute):
    base = _resolve(expr.value, bound, package)
    if isinstance(base, Module):
      dotted = f"{base.name}.{expr.attr}"
      return Module(dotted) if package.is_module(dotted) else Name(base.name, expr.attr)
  return None


def _private_use(base, attr: str, package: Package, here: str) -> str | None:
  """A description of ``base.attr`` if it uses a private name of another unit."""
  if isinstance(base, Module):
    if package.is_module(f"{base.name}.{attr}"):
      return None  # a (private) module: allowed
    owner = base.name
  elif isinstance(base, Name):
    if attr in NAMEDTUPLE_API:
      return None
    owner = base.module
  else:
    return None
  if is_private(attr) and unit_of(owner) != unit_of(here):
    what = base.name if isinstance(base, Module) else f"{base.module}.{base.name}"
    return f"{what}.{attr}"
  return None


def check_source(source: str, module: str, package: Package, path: str = "") -> list[Violation]:
  """Violations of the import rule in the source of ``module``."""
  tree = ast.parse(source)
  bound, imported = _bindings(tree, package, module)
  found = []
  for line, source_module, name in imported:
    if is_private(name) and unit_of(source_module) != unit_of(module):
      found.append(Violation(path, line, f"imports private {source_module}.{name}"))
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute):
      use = _private_use(_resolve(node.value, bound, package), node.attr, package, module)
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
          and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
          and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
      use = _private_use(_resolve(node.args[0], bound, package), node.args[1].value, package,
                         module)
    else:
      continue
    if use:
      found.append(Violation(path, node.lineno, f"uses private {use}"))
  return sorted(set(found), key=lambda v: (v.path, v.line, v.text))


def package_violations(root: pathlib.Path) -> list[Violation]:
  package = Package(root)
  found = []
  for path, module in package.modules():
    rel = str(path.relative_to(root))
    found += check_source(path.read_text(encoding="utf-8"), module, package, rel)
  return found


# ----------------------------------------------------------------------------- the rule itself


def test_no_module_uses_a_private_name_of_another_subpackage():
  violations = package_violations(ROOT)
  assert not violations, "private names used across subpackages:\n" + "\n".join(map(str, violations))


def test_tests_do_not_read_private_compilation_caches():
  # "A second call does not recompile" is checked with chex.assert_max_traces.
  needle = "_cache" + "_size"
  hits = [f"{path.relative_to(ROOT)}:{i}"
          for path in sorted((ROOT / "tests").rglob("*.py"))
          for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
          if needle in line]
  assert not hits, f"tests read {needle}(): " + ", ".join(hits)


# ----------------------------------------------------------------------------- the checker


@pytest.fixture
def tree(tmp_path):
  """A miniature package: two subpackages with private modules, and a top-level module."""
  files = {
      "otkit/__init__.py": "",
      "otkit/_validation.py": "def check(x): return x\ndef _hidden(x): return x\n",
      "otkit/solvers/__init__.py": "",
      "otkit/solvers/_solve.py": "def make_problem(): pass\ndef _kernel(): pass\n",
      "otkit/estimators/__init__.py": "",
      "otkit/estimators/_sliced.py": "def _sliced(): pass\ndef sliced(): pass\n",
      "otkit/estimators/_divergence.py": "def _divergence(): pass\n",
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  return Package(tmp_path)


def _lines(source, module, package):
  return [v.line for v in check_source(textwrap.dedent(source), module, package)]


def test_checker_flags_private_names_of_other_subpackages(tree):
  source = """\
      from otkit.estimators._divergence import _divergence
      from otkit.estimators import _sliced
      import otkit.solvers._solve as S
      import otkit
      _sliced._sliced()
      S._kernel()
      otkit.solvers._solve._kernel()
      getattr(S, "_kernel")
      from otkit import _validation as V
      V._hidden(1)
      def inner():
        from ..estimators._sliced import _sliced as alias
  """
  assert _lines(source, "otkit.flows._energies", tree) == list(range(1, 13))[:1] + [5, 6, 7, 8, 10, 12]


def test_checker_allows_private_modules_public_names_and_own_subpackage(tree):
  source = """\
      from otkit.solvers import _solve
      from otkit import _validation as V
      import otkit
      _solve.make_problem()
      V.check(1)
      otkit.solvers._solve.make_problem()
      otkit.__name__
      from otkit.estimators._sliced import _sliced
      _sliced()
      out._replace(f=1)
  """
  assert _lines(source, "otkit.flows._energies", tree) == [8]  # only the cross-unit import
  assert _lines(source, "otkit.estimators._bounds", tree) == []  # its own subpackage


def test_checker_resolves_relative_imports_and_named_tuple_api(tree):
  source = """\
      from . import _sliced
      from ._sliced import sliced
      _sliced._sliced()
      from ..solvers._solve import make_problem
      make_problem._replace()
  """
  assert _lines(source, "otkit.estimators._bounds", tree) == []
  assert _lines("from .._validation import _hidden\n", "otkit.estimators._bounds", tree) == [1]
