"""The package's imports point down its layers.

The layers stand in pyproject.toml (``[tool.importlinter]``): from ``grokking.cli`` at the top to
``grokking.version`` at the bottom. A module imports only modules on lower lines, never
one above it nor an independent sibling on its own line (``|``), so the imports have no cycles and
nothing but the command line imports the command line; every module of the package stands on a line.
import-linter checks that contract; the AST checks here add what it does not see: imports inside
functions (allowed for the optional extras only, never between package modules), and imports of the
command line by the package root (which is on no line: it may re-export from any module).

Each check is tested on synthetic packages too, so that a check which can no longer fail is noticed.
import-linter comes with the test extra; without it these tests fail (they never skip).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
PACKAGE = "grokking"
PACKAGE_DIR = REPO / PACKAGE
CLI = f"{PACKAGE}.cli"
# Optional extras: the only imports a function body may make (so that the package imports without them).
OPTIONAL_EXTRAS = ("tensorboard", "wandb", "transformer_lens", "ray", "submitit", "devinterp", "sklearn")
INSTALL_HINT = ("import-linter is not installed: install the test extra (`.venv/bin/python -m pip install -e "
                "'.[test]'`; ./scripts/test.sh installs every extra)")


def require_import_linter() -> None:
    if importlib.util.find_spec("importlinter") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)


# --- import-linter -------------------------------------------------------------------------------

# Runs in a fresh interpreter with the tree to analyse first on sys.path, so that the copy in that tree
# is the one grimp reads (not the editable install's); says which copy that was on its first line.
_RUNNER = r"""
import importlib.util, os, sys
root, config = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
spec = importlib.util.find_spec("grokking")
print("analysed:", os.path.dirname(spec.origin) if spec and spec.origin else None, flush=True)
from importlinter.cli import lint_imports
sys.exit(lint_imports(config_filename=config, no_cache=True, no_logo=True))
"""


@dataclass(frozen=True)
class Lint:
    returncode: int
    output: str


def lint(root: Path) -> Lint:
    """import-linter's run of pyproject.toml's contracts over the package in ``root``."""
    require_import_linter()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(COLUMNS="400", NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")  # no wrapped lines to match against
    proc = subprocess.run([sys.executable, "-c", _RUNNER, str(root), str(PYPROJECT)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    first = output.splitlines()[0] if output else ""
    expected = f"analysed: {root / PACKAGE}"
    assert first == expected, f"import-linter analysed the wrong copy ({first!r}, not {expected!r}):\n{output}"
    return Lint(proc.returncode, output)


def contract_layers() -> list[list[str]]:
    """The layers contract's lines, top first, each as its module names (``|`` and ``:`` split siblings)."""
    require_import_linter()
    from importlinter.api import read_configuration

    contracts = [c for c in read_configuration(str(PYPROJECT))["contracts_options"] if c["type"] == "layers"]
    assert len(contracts) == 1, f"pyproject.toml should hold one layers contract, not {len(contracts)}"
    (contract,) = contracts
    assert contract.get("containers") == [PACKAGE] and contract.get("exhaustive") in (True, "True", "true"), contract
    lines = []
    for line in contract["layers"]:
        names = [name.strip().strip("()") for name in line.replace(":", "|").split("|")]
        lines.append([f"{PACKAGE}.{name}" for name in names])
    return lines


def write_package(root: Path, modules: dict[str, str]) -> Path:
    """Writes ``{"grokking.x": source}`` (``"grokking"``: the package's __init__) below ``root``."""
    for module, source in modules.items():
        parts = module.split(".")
        path = root.joinpath(*parts, "__init__.py") if module == PACKAGE else root.joinpath(*parts).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def layered_package(root: Path) -> Path:
    """A package with one module for each module of the contract, each importing every module on every
    line below it (all that the contract allows), and a root that re-exports from every module but the
    top line's (as ``<module>_name``): a package that keeps the contract."""
    lines = contract_layers()
    modules = {}
    for i, line in enumerate(lines):
        below = [module for lower in lines[i + 1:] for module in lower]
        for module in line:
            modules[module] = "".join(f"import {m}\n" for m in below) + f"NAME = {module!r}\n"
    reexported = [module.rpartition(".")[2] for line in lines[1:] for module in line]
    modules[PACKAGE] = "".join(f"from .{m} import NAME as {m}_name\n" for m in reexported)
    return write_package(root, modules)


def append(root: Path, module: str, source: str) -> int:
    """Appends ``source`` to ``module`` in ``root``; the line number of its first line."""
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    text = path.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + source)
    return text.count("\n") + 1


def assert_broken(result: Lint, importer: str, imported: str, line: int) -> None:
    assert result.returncode != 0, f"the contract should have been broken:\n{result.output}"
    assert f"{importer} is not allowed to import {imported}" in result.output, result.output
    assert f"{importer} -> {imported} (l.{line})" in result.output, result.output


def test_imports_follow_the_layers():
    result = lint(REPO)
    assert result.returncode == 0, f"the imports break the layers of pyproject.toml's contract:\n{result.output}"


def test_the_layer_contract_keeps_a_layered_package(tmp_path):
    result = lint(layered_package(tmp_path))
    assert result.returncode == 0, result.output
    assert "1 kept, 0 broken" in result.output, result.output


def test_the_layer_contract_catches_an_upward_import(tmp_path):
    # The real package, with an empty module for any layer it lacks still (while the modules are moved).
    shutil.copytree(PACKAGE_DIR, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    for module in (m for line in contract_layers() for m in line):
        path = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
        if not path.exists():
            path.write_text("")
    line = append(tmp_path, f"{PACKAGE}.config", "import grokking.cli\n")
    assert_broken(lint(tmp_path), f"{PACKAGE}.config", CLI, line)

    # A relative import, upwards by one line, in a package that otherwise keeps the contract.
    clean = layered_package(tmp_path / "clean")
    line = append(clean, f"{PACKAGE}.model", "from . import engine\n")
    assert_broken(lint(clean), f"{PACKAGE}.model", f"{PACKAGE}.engine", line)


def test_the_layer_contract_catches_an_import_through_the_package_root(tmp_path):
    # config takes model's name from the root, which imports model: config depends on model.
    root = layered_package(tmp_path)
    line = append(root, f"{PACKAGE}.config", "from grokking import model_name\n")
    result = lint(root)
    assert result.returncode != 0, result.output
    assert f"{PACKAGE}.config is not allowed to import {PACKAGE}.model" in result.output, result.output
    assert f"{PACKAGE}.config -> {PACKAGE} (l.{line})" in result.output, result.output


def test_the_layer_contract_catches_a_cycle(tmp_path):
    # Between lines: engine imports checkpoint (allowed), checkpoint imports engine back.
    root = layered_package(tmp_path / "between")
    line = append(root, f"{PACKAGE}.checkpoint", "from .engine import NAME as ENGINE\n")
    assert_broken(lint(root), f"{PACKAGE}.checkpoint", f"{PACKAGE}.engine", line)

    # Between independent siblings on one line: fast and methods import each other.
    root = layered_package(tmp_path / "siblings")
    train_line = append(root, f"{PACKAGE}.fast", "import grokking.methods\n")
    batched_line = append(root, f"{PACKAGE}.methods", "from . import fast\n")
    result = lint(root)
    assert_broken(result, f"{PACKAGE}.fast", f"{PACKAGE}.methods", train_line)
    assert_broken(result, f"{PACKAGE}.methods", f"{PACKAGE}.fast", batched_line)

    # Round three modules: rundir imports config, config imports data, and data imports rundir.
    root = layered_package(tmp_path / "three")
    line = append(root, f"{PACKAGE}.data", "from . import rundir\n")
    result = lint(root)
    assert_broken(result, f"{PACKAGE}.data", f"{PACKAGE}.rundir", line)


def test_the_layer_contract_places_every_module(tmp_path):
    root = layered_package(tmp_path)
    write_package(root, {f"{PACKAGE}.stray": "from . import config\n"})
    result = lint(root)
    assert result.returncode != 0, result.output
    assert "not listed as layers" in result.output and f"- {PACKAGE}.stray" in result.output, result.output


# --- AST checks -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PackageImport:
    where: str            # path:line
    importer: str         # the module whose source it is
    imported: str         # a module of the package, or the package root itself
    name: str | None      # for an import of the root, what it takes (None: `import grokking`)
    local: bool           # inside a function or method body (lambdas included)


class _Imports(ast.NodeVisitor):
    def __init__(self, importer: str, is_package: bool, modules: set[str], where: str):
        self.importer, self.modules, self.where = importer, modules, where
        self.base = importer if is_package else importer.rpartition(".")[0]
        self.depth = 0
        self.found: list[PackageImport] = []

    def _add(self, node: ast.AST, imported: str, name: str | None = None) -> None:
        if imported == PACKAGE or imported.startswith(PACKAGE + "."):
            self.found.append(PackageImport(f"{self.where}:{node.lineno}", self.importer, imported,
                                            name if imported == PACKAGE else None, self.depth > 0))

    def _absolute(self, module: str | None, level: int) -> str:
        if not level:
            return module or ""
        parts = self.base.split(".")
        base = ".".join(parts[:len(parts) - (level - 1)])  # empty: beyond the top (Python refuses it)
        return ".".join(part for part in (base, module) if part)

    def _function(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = self._absolute(node.module, node.level)
        for alias in node.names:
            if f"{target}.{alias.name}" in self.modules:
                self._add(node, f"{target}.{alias.name}")
            else:
                self._add(node, target, alias.name)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("grokking.x"), import_module(".x", __package__), __import__("grokking.x")
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            self._add(node, self._absolute(name[level:] or None, level))
        self.generic_visit(node)


def modules_of(package_dir: Path) -> dict[str, Path]:
    """``{"grokking.x": path}`` for every module of the package in ``package_dir`` (its root included)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_in(source: str, importer: str, modules: set[str], where: str, is_package: bool = False
               ) -> list[PackageImport]:
    """The imports of the package's modules (or of its root) that ``source``, module ``importer``, makes."""
    visitor = _Imports(importer, is_package, modules, where)
    visitor.visit(ast.parse(source, filename=where))
    return visitor.found


def package_imports(package_dir: Path) -> list[PackageImport]:
    modules = modules_of(package_dir)
    found = []
    for module, path in modules.items():
        found += imports_in(path.read_text(), module, set(modules), str(path.relative_to(package_dir.parent)),
                            is_package=path.name == "__init__.py")
    return found


def _once(messages) -> list[str]:
    return list(dict.fromkeys(messages))  # `from .x import a, b` is one import of x


def function_local_imports(package_dir: Path) -> list[str]:
    return _once(f"{i.where}: {i.importer} imports {i.imported}{'' if i.name is None else ' (' + i.name + ')'} "
                 f"inside a function" for i in package_imports(package_dir) if i.local)


def imports_of_the_cli(package_dir: Path) -> list[str]:
    return _once(f"{i.where}: {i.importer} imports {i.imported}" for i in package_imports(package_dir)
                 if (i.imported == CLI or i.imported.startswith(CLI + "."))
                 and not (i.importer == CLI or i.importer.startswith(CLI + ".")))


def test_no_function_local_imports_between_package_modules():
    found = function_local_imports(PACKAGE_DIR)
    assert not found, ("imports between the package's modules belong at the top of the module (a function may "
                       f"import only an optional extra: {', '.join(OPTIONAL_EXTRAS)}):\n" + "\n".join(found))


def test_nothing_outside_the_cli_imports_it():
    found = imports_of_the_cli(PACKAGE_DIR)
    assert not found, f"only {CLI} may import {CLI}:\n" + "\n".join(found)


SYNTHETIC = """\
import importlib
import os
import grokking.data
from . import config, __version__
from .model import Transformer
from grokking import errors


def train():
    import wandb
    import tensorboard.summary
    from .engine import run
    from . import rundir
    from grokking import Transformer
    import grokking.fast
    importlib.import_module("grokking.batched")
    importlib.import_module(".sweep", __package__)


class Checkpoint:
    from .data import Dataset

    def load(self):
        from .cli import main

    async def save(self):
        from . import __version__
        helper = lambda: __import__("grokking.methods")
"""


def test_the_ast_checks_find_each_kind_of_import():
    modules = {f"{PACKAGE}.{name}" for name in ("config", "data", "model", "errors", "engine", "rundir", "fast",
                                                "batched", "sweep", "cli", "methods", "train")}
    found = imports_in(SYNTHETIC, f"{PACKAGE}.train", modules | {PACKAGE}, "grokking/train.py")
    by_line = {(int(i.where.rsplit(":", 1)[1]), i.imported, i.name, i.local) for i in found}
    G = PACKAGE
    assert by_line == {
        (3, f"{G}.data", None, False), (4, f"{G}.config", None, False), (4, G, "__version__", False),
        (5, f"{G}.model", None, False), (6, f"{G}.errors", None, False),
        (12, f"{G}.engine", None, True), (13, f"{G}.rundir", None, True), (14, G, "Transformer", True),
        (15, f"{G}.fast", None, True), (16, f"{G}.batched", None, True), (17, f"{G}.sweep", None, True),
        (21, f"{G}.data", None, False),  # a class body is no function
        (24, f"{G}.cli", None, True),
        (27, G, "__version__", True), (28, f"{G}.methods", None, True),
    }, sorted(by_line)


def test_the_ast_checks_pass_a_clean_package_and_fail_a_violating_one(tmp_path):
    clean = write_package(tmp_path / "clean", {
        PACKAGE: '__version__ = "0"\nfrom .model import Transformer\n',
        f"{PACKAGE}.cli": "from . import engine\nfrom .model import Transformer\n",
        f"{PACKAGE}.engine": ("from . import __version__\nfrom .model import Transformer\n\n"
                              "def log():\n    import wandb\n    return wandb\n"),
        f"{PACKAGE}.model": "import torch\n\n\ndef f():\n    import tensorboard\n",
    })
    assert function_local_imports(clean / PACKAGE) == []
    assert imports_of_the_cli(clean / PACKAGE) == []

    bad = write_package(tmp_path / "bad", {
        PACKAGE: '__version__ = "0"\nfrom . import cli\n',
        f"{PACKAGE}.cli": "def main():\n    from .engine import run\n",
        f"{PACKAGE}.engine": "from grokking import Transformer\nfrom .cli import main\n",
        f"{PACKAGE}.model": "import grokking\n\n\ndef f():\n    import grokking.cli\n",
    })
    assert function_local_imports(bad / PACKAGE) == [
        "grokking/cli.py:2: grokking.cli imports grokking.engine inside a function",
        "grokking/model.py:5: grokking.model imports grokking.cli inside a function",
    ]
    assert imports_of_the_cli(bad / PACKAGE) == [
        "grokking/__init__.py:2: grokking imports grokking.cli",
        "grokking/engine.py:2: grokking.engine imports grokking.cli",
        "grokking/model.py:5: grokking.model imports grokking.cli",
    ]
