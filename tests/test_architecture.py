"""The layers of ARCHITECTURE.md, read from the source with ``ast``: imports go down, never round.

``cli -> services -> searcher -> trainer -> shared leaves (errors, validation, files)``: a module imports
its own layer or a lower one. Inside the searcher the rooms have their own order (``ROOMS``), and
Optuna's private API stays in ``searcher/storage/_optuna/``. Imports inside functions count (they are
a dependency all the same); imports under ``if TYPE_CHECKING:`` do not (they never run). Each checker is
also run on a small planted tree, so a test that could never fail would show here.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgesearch"
LAYERS = {"leaf": 0, "trainer": 1, "searcher": 2, "services": 3, "cli": 4}
UI_LIBRARIES = ("typer", "rich", "click")
OPTUNA_HOME = "edgesearch.searcher.storage._optuna"
ROOMS = {
    "edgesearch.searcher.storage": frozenset(),
    "edgesearch.searcher.study": frozenset({"edgesearch.searcher.storage"}),
    "edgesearch.searcher.run": frozenset({"edgesearch.searcher.storage", "edgesearch.searcher.study"}),
    "edgesearch.searcher.results": frozenset({"edgesearch.searcher.storage", "edgesearch.searcher.study"}),
    "edgesearch.services": frozenset({"edgesearch.searcher.storage"}),
}
"""Each room of the searcher (and the services) -> the rooms of the searcher it may import."""


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package``."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports(path: Path) -> list[tuple[str, str | None]]:
    """What ``path`` imports at run time: ``import a.b`` -> (a.b, None); ``from a import b`` -> (a, b)."""
    found: list[tuple[str, str | None]] = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.module, alias.name) for alias in node.names)
    return found


def imported_names(path: Path) -> set[str]:
    """The modules (and ``module.name`` pairs) ``path`` imports at run time."""
    return {module if name is None else f"{module}.{name}" for module, name in imports(path)} | {
        module for module, _ in imports(path)
    }


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports.

    ``from pkg import mod`` is an edge to ``pkg.mod`` when that is a module, else to ``pkg``
    (``from edgesearch.trainer import TrainConfig`` depends on the package's ``__init__``).
    """
    modules = module_files(package)
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, imported in imports(path):
            dotted = f"{module}.{imported}" if imported is not None else module
            if dotted in modules:
                targets.add(dotted)
            elif module in modules:
                targets.add(module)
        graph[name] = targets - {name}
    return graph


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("cli", "__main__"):
        return "cli"
    if len(parts) > 1 and parts[1] in ("searcher", "services", "trainer"):
        return parts[1]
    return "leaf"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{source} ({layer(source)}) imports {target} ({layer(target)})"
        for source, targets in graph.items()
        for target in targets
        if LAYERS[layer(target)] > LAYERS[layer(source)]
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def ui_imports(package: Path) -> list[str]:
    """Modules outside ``cli`` that import a terminal-UI library."""
    return sorted(
        f"{name} imports {imported}"
        for name, path in module_files(package).items()
        if layer(name) != "cli"
        for imported, _ in imports(path)
        if imported.split(".")[0] in UI_LIBRARIES
    )


def room(module: str) -> str | None:
    """The room (a package of :data:`ROOMS`) that holds ``module``, or None."""
    return next((name for name in ROOMS if module == name or module.startswith(name + ".")), None)


def searcher_room(module: str) -> str | None:
    """``edgesearch.searcher.X`` for a module under the searcher's package X, else None."""
    parts = module.split(".")
    return ".".join(parts[:3]) if parts[:2] == ["edgesearch", "searcher"] and len(parts) > 2 else None


def room_crossings(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a room into a searcher room it may not use (see :data:`ROOMS`)."""
    found = []
    for source, targets in graph.items():
        home = room(source)
        if home is None:
            continue
        for target in targets:
            other = searcher_room(target)
            if other is not None and other != home and other not in ROOMS[home]:
                found.append(f"{source} imports {target}")
    return sorted(found)


def rootless_searcher_modules(modules: dict[str, Path]) -> list[str]:
    """Modules of the searcher outside its rooms (only the package's own ``__init__`` may be)."""
    return sorted(name for name in modules if name.startswith("edgesearch.searcher.") and room(name) is None)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _self_stores(tree: ast.AST) -> set[str]:
    """The private attributes a class body assigns on ``self``."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and _private(node.attr)
    }


@functools.cache  # Optuna's source is read once per test process
def optuna_private_names(cls: type | None = None) -> frozenset[str]:
    """The private method and attribute names Optuna's classes define: those of ``cls`` and its Optuna bases,
    or, without ``cls``, of every class in the installed Optuna (read from its source)."""
    import inspect
    import textwrap

    import optuna

    if cls is not None:
        names: set[str] = set()
        for klass in cls.__mro__:
            if klass.__module__.split(".")[0] == "optuna":
                names |= {name for name in vars(klass) if _private(name)}
                names |= _self_stores(ast.parse(textwrap.dedent(inspect.getsource(klass))))
        return frozenset(names)
    names = set()
    for path in Path(optuna.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names |= _self_stores(node)
                names |= {item.name for item in node.body if isinstance(item, ast.FunctionDef) and _private(item.name)}
    return frozenset(names)


def _optuna_names(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted Optuna path, for the names a module imports from Optuna (``import optuna`` too)."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "optuna":
                    # ``import optuna.x`` binds ``optuna``; ``import optuna.x as y`` binds ``y`` to optuna.x
                    found[alias.asname or "optuna"] = alias.name if alias.asname else "optuna"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "optuna":
            for alias in node.names:
                found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return found


def _resolve(dotted: str) -> object:
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            target = getattr(target, part)
        return target
    raise ImportError(dotted)


def optuna_bases(files: dict[str, Path]) -> dict[str, list[type]]:
    """Class name -> the Optuna classes it derives from, directly or through classes of ``files``."""
    direct: dict[str, list[type]] = {}
    local: dict[str, list[str]] = {}
    for path in files.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _optuna_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    text = ast.unparse(base)
                    head = text.split(".")[0]
                    if head in imported:
                        cls = _resolve(imported[head] + text[len(head) :])
                        if isinstance(cls, type):
                            direct.setdefault(node.name, []).append(cls)
                    else:
                        local.setdefault(node.name, []).append(text.split(".")[-1])
    changed = True
    while changed:  # through classes that derive from ours
        changed = False
        for name, bases in local.items():
            inherited = [cls for base in bases for cls in direct.get(base, [])]
            new = [cls for cls in inherited if cls not in direct.get(name, [])]
            if new:
                direct.setdefault(name, []).extend(new)
                changed = True
    return direct


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def optuna_private_uses(files: dict[str, Path]) -> list[str]:
    """Uses of Optuna's private API outside :data:`OPTUNA_HOME`: an ``optuna.x._y`` import; a private name of
    Optuna's (:func:`optuna_private_names`) read on anything but ``self`` (``study._storage``, ``super()._x``)
    or set by name (``setattr(RDBStorage, "_x", f)``); and in a class derived from an Optuna class, a method
    or ``self`` attribute that is a private name of that class (an override, or its private state)."""
    every = optuna_private_names()
    derived = optuna_bases(files)
    found = []
    for name, path in files.items():
        if name == OPTUNA_HOME or name.startswith(OPTUNA_HOME + "."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                if module.startswith("optuna") and any(part.startswith("_") for part in module.split(".")):
                    found.append(f"{name}:{node.lineno} imports {module}")
            on_self = (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            )
            if isinstance(node, ast.Attribute) and node.attr in every and not on_self:
                found.append(f"{name}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "setattr" and len(node.args) > 1:
                key = node.args[1]
                if isinstance(key, ast.Constant) and key.value in every:
                    found.append(f"{name}:{node.lineno} sets .{key.value}")
            if isinstance(node, ast.ClassDef) and node.name in derived:
                private = frozenset().union(*(optuna_private_names(cls) for cls in derived[node.name]))
                for item in ast.walk(node):
                    if isinstance(item, ast.FunctionDef) and item.name in private:
                        found.append(f"{name}:{item.lineno} overrides {node.name}.{item.name}")
                    elif isinstance(item, ast.Attribute) and _on_self(item) and item.attr in private:
                        found.append(f"{name}:{item.lineno} uses self.{item.attr}")
    return sorted(set(found))


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "edgesearch"
    for relative, text in {"__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return package


# ---------------------------------------------------------------------------------------------
# The real tree


def test_imports_only_go_down_the_layers() -> None:
    assert upward_imports(import_graph(PACKAGE)) == []


def test_the_import_graph_has_no_cycles() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_the_library_imports_no_terminal_ui() -> None:
    assert ui_imports(PACKAGE) == []


def test_optuna_private_api_is_used_only_in_its_module() -> None:
    files = module_files(PACKAGE)
    assert OPTUNA_HOME in files and f"{OPTUNA_HOME}.routing" in files
    others = {
        f"{folder}.{path.stem}": path
        for folder in ("benchmarks", "devtools")
        for path in sorted((ROOT / folder).glob("*.py"))
    }
    assert optuna_private_uses({**files, **others}) == []


def test_each_room_imports_only_the_rooms_below_it() -> None:
    assert room_crossings(import_graph(PACKAGE)) == []


def test_every_searcher_module_is_in_a_room() -> None:
    modules = module_files(PACKAGE)
    assert all(any(m.startswith(r + ".") for m in modules) for r in ROOMS)
    assert rootless_searcher_modules(modules) == []


def test_every_cli_command_module_is_a_thin_typer_app() -> None:
    """Each top-level command has its module under cli/, and the app composes exactly those."""
    app_imports = imported_names(PACKAGE / "cli" / "app.py")
    for command in ("train", "study", "worker", "dashboard", "predict", "export_model"):
        assert (PACKAGE / "cli" / f"{command}.py").is_file()
        assert "edgesearch.cli." + command in app_imports


def test_no_test_module_imports_another_test_module() -> None:
    """Fixtures live in conftest.py (never imported), shared configs and makers in helpers.py, browser.py, deploy.py."""
    shared = {"tests.helpers", "tests.browser", "tests.deploy"}
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        for name in imported_names(path)
        if name.startswith("tests.") and name.rpartition(".")[0] not in shared and name not in shared
    )
    assert offenders == []


# ---------------------------------------------------------------------------------------------
# The checkers find what they look for


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    package = _plant(
        tmp_path,
        {
            "trainer/__init__.py": "",
            "trainer/loop.py": "def f():\n    from edgesearch.searcher.run.worker import run\n",
            "searcher/__init__.py": "",
            "searcher/run/worker.py": "from edgesearch.trainer import loop\n",
        },
    )
    assert upward_imports(import_graph(package)) == [
        "edgesearch.trainer.loop (trainer) imports edgesearch.searcher.run.worker (searcher)"
    ]


def test_a_leaf_importing_the_trainer_is_found(tmp_path: Path) -> None:
    package = _plant(tmp_path, {"errors.py": "import edgesearch.trainer.config\n", "trainer/config.py": ""})
    assert upward_imports(import_graph(package)) == [
        "edgesearch.errors (leaf) imports edgesearch.trainer.config (trainer)"
    ]


def test_a_type_checking_import_is_not_a_dependency(tmp_path: Path) -> None:
    package = _plant(
        tmp_path,
        {
            "trainer/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgesearch.cli import app\n",
            "cli/__init__.py": "app = 1\n",
        },
    )
    assert upward_imports(import_graph(package)) == []


def test_a_cycle_is_found(tmp_path: Path) -> None:
    package = _plant(
        tmp_path,
        {
            "trainer/config.py": "from edgesearch.trainer.model import build\n",
            "trainer/model.py": "def f():\n    from edgesearch.trainer import config\n",
            "trainer/loop.py": "from edgesearch.trainer.model import build\n",
        },
    )
    assert cycles(import_graph(package)) == [["edgesearch.trainer.config", "edgesearch.trainer.model"]]


def test_ui_imports_in_the_library_are_found(tmp_path: Path) -> None:
    package = _plant(
        tmp_path, {"searcher/study/progress.py": "from rich.console import Console\n", "cli/x.py": "import typer\n"}
    )
    assert ui_imports(package) == ["edgesearch.searcher.study.progress imports rich.console"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from optuna.artifacts._protocol import ArtifactStore\n", "imports optuna.artifacts._protocol"),
        ("import optuna.storages._rdb.models\n", "imports optuna.storages._rdb.models"),
        ("def f(study):\n    return study._storage\n", "uses ._storage"),
        ("def f(trial):\n    return trial._trial_id\n", "uses ._trial_id"),
    ],
)
def test_optuna_private_uses_are_found(tmp_path: Path, source: str, expected: str) -> None:
    package = _plant(tmp_path, {"searcher/run/worker.py": source, "searcher/storage/_optuna/handles.py": source})
    found = optuna_private_uses(module_files(package))
    assert len(found) == 1
    assert found[0].startswith("edgesearch.searcher.run.worker:") and found[0].endswith(expected)


@pytest.mark.parametrize(
    ("source", "importer", "expected"),
    [
        ("searcher/storage/opening.py", "from edgesearch.searcher.study.config import C\n", "study.config"),
        ("searcher/results/report.py", "def f():\n    from edgesearch.searcher.run import worker\n", "run.worker"),
        ("services/pooler.py", "import edgesearch.searcher.study.studies\n", "study.studies"),
        ("searcher/study/confirm.py", "from edgesearch.searcher.run.worker import W\n", "run.worker"),
    ],
)
def test_a_room_importing_a_room_it_may_not_is_found(tmp_path: Path, source: str, importer: str, expected: str) -> None:
    planted = {
        source: importer,
        "searcher/study/config.py": "",
        "searcher/study/studies.py": "",
        "searcher/run/worker.py": "from edgesearch.searcher.study.config import C\n",  # allowed
        "searcher/results/export.py": "from edgesearch.searcher.storage import opening\n",  # allowed
        "services/dashboard.py": "from edgesearch.searcher.storage.opening import open_storage\n",  # allowed
        "searcher/storage/opening.py": "",
    }
    planted[source] = importer
    package = _plant(tmp_path, planted)
    source_module = "edgesearch." + source.removesuffix(".py").replace("/", ".")
    assert room_crossings(import_graph(package)) == [f"{source_module} imports edgesearch.searcher.{expected}"]


def test_a_searcher_module_outside_the_rooms_is_found(tmp_path: Path) -> None:
    package = _plant(tmp_path, {"searcher/__init__.py": "", "searcher/helpers.py": "", "searcher/run/worker.py": ""})
    assert rootless_searcher_modules(module_files(package)) == ["edgesearch.searcher.helpers"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(storage):\n    return super(type(storage), storage)._get_trials(1)\n", "uses ._get_trials"),
        (
            "from optuna.storages import RDBStorage\nclass S(RDBStorage):\n    def _get_trials(self):\n        pass\n",
            "overrides S._get_trials",
        ),
        (
            "import optuna\nclass P(optuna.pruners.MedianPruner):\n    def f(self):\n"
            "        return self._n_warmup_steps\n",
            "uses self._n_warmup_steps",
        ),
        (
            "from optuna.storages import RDBStorage\nclass A(RDBStorage):\n    pass\n"
            "class B(A):\n    def _get_stale_trial_ids(self, study_id):\n        return []\n",
            "overrides B._get_stale_trial_ids",
        ),
        ("from optuna.storages import RDBStorage\nsetattr(RDBStorage, '_get_trials', print)\n", "sets ._get_trials"),
    ],
)
def test_optuna_private_overrides_and_names_are_found(tmp_path: Path, source: str, expected: str) -> None:
    package = _plant(tmp_path, {"searcher/storage/reconnecting.py": source, "searcher/storage/_optuna/a.py": source})
    found = optuna_private_uses(module_files(package))
    assert len(found) == 1, found
    assert found[0].startswith("edgesearch.searcher.storage.reconnecting:") and found[0].endswith(expected)


def test_a_subclass_of_an_optuna_class_may_keep_private_state_of_its_own(tmp_path: Path) -> None:
    source = (
        "from optuna.samplers import BaseSampler\nclass S(BaseSampler):\n    def __init__(self):\n"
        "        self._own_seed = 1\n    def _draw(self):\n        return self._own_seed\n"
    )
    assert optuna_private_uses(module_files(_plant(tmp_path, {"searcher/study/sampling.py": source}))) == []


# ---------------------------------------------------------------------------------------------
# ARCHITECTURE.md


def mapped_modules(text: str) -> set[str]:
    """The file paths named in the first column of ARCHITECTURE.md's module map.

    ``cli/train.py``, ``study.py`` in one cell: a name without a folder is in the folder of the one before.
    """
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    paths: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        folder = ""
        for name in re.findall(r"`([^`]+\.py)`", line.split("|")[1]):
            if "/" in name:
                folder = name.rpartition("/")[0] + "/"
                paths.add(name)
            else:
                paths.add(folder + name)
    return paths


def test_the_module_map_matches_the_tree() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    tree = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    }
    mapped = mapped_modules(text)
    assert sorted(tree - mapped) == [], "modules missing from ARCHITECTURE.md's module map"
    assert sorted(mapped - tree) == [], "ARCHITECTURE.md names modules that do not exist"
    assert len(text.splitlines()) <= 150


def test_the_module_map_reader_sees_shared_folders() -> None:
    text = "## Module map\n| `cli/a.py`, `b.py` | x |\n| `errors.py` | y |\n## Next\n| `c.py` | z |\n"
    assert mapped_modules(text) == {"cli/a.py", "cli/b.py", "errors.py"}
