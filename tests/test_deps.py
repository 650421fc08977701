"""Every stage's code deps in dvc.yaml cover the project modules its command imports, and only folders it uses.

A stage whose ``cmd`` is ``python -m stages.<name> ...`` runs ``stages/<name>.py`` and, transitively,
every module of ``fkd/`` and ``stages/`` it imports. DVC re-runs a stage only when a listed dep
changes. Code deps are folders (``fkd/core``, a model's ``fkd/models/<name>``) or single modules:

* a *missing* module (imported, but under no listed dep) means editing it changes the stage's results
  while ``dvc repro`` runs nothing (and ``dvc.lock`` no longer tells the truth);
* an *extra* dep (a folder or file the stage imports nothing from) re-runs the stage for nothing. A
  folder may hold modules a stage does not import: editing those re-runs it, the price of deps that
  cannot drift when a module is added or moved inside a folder.

``python -m stages.train MODEL[.PHASE] ...`` imports the model's package ``fkd.models.MODEL`` by name
(:func:`dynamic_imports`): the walker starts from it as well.

Imports are read from the source (``ast``), anywhere in a file: module level, inside functions,
under ``if``/``try``; ``import fkd.x``, ``from fkd.x import y``, ``from fkd import x`` and relative
imports. Importing ``fkd.x`` also runs ``fkd/__init__.py``; a package ``__init__.py`` counts as a
dep only when it holds code, not just a docstring (editing a docstring changes no result).

dvc.yaml is expanded by DVC's own resolver, so ``foreach``/``matrix`` stages and ``${...}``
interpolation are checked as DVC runs them (one entry per generated stage, ``group@key``).
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import ROOT

#: The folders holding the project's own Python code (the only imports followed).
CODE_DIRS = ("fkd", "stages")
STAGE_CMD = re.compile(r"(?:^|[\s;&|(])python3?\s+-m\s+stages\.([A-Za-z_][A-Za-z0-9_]*)\b")


# --- the import graph -------------------------------------------------------------------------


def module_file(root: Path, dotted: str) -> Path | None:
    """The project file of module ``dotted`` (``fkd.x`` -> fkd/x.py or fkd/x/__init__.py), if it is ours."""
    parts = dotted.split(".")
    if parts[0] not in CODE_DIRS:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _parents(dotted: str) -> list[str]:
    """``fkd.a.b`` -> ``["fkd", "fkd.a"]``: the packages Python imports before the module."""
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_relative(root: Path, path: Path, level: int, module: str | None) -> str | None:
    package = module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    if not package:
        return None
    return f"{package}.{module}" if module else package


def imported_modules(root: Path, path: Path) -> set[str]:
    """Dotted names of every project module ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name)
                names.update(_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(root, path, node.level, node.module) if node.level else node.module
            if not base:
                continue
            names.add(base)
            names.update(_parents(base))
            for alias in node.names:  # `from fkd import x`: x may be a module
                if alias.name != "*" and module_file(root, f"{base}.{alias.name}"):
                    names.add(f"{base}.{alias.name}")
    return {n for n in names if module_file(root, n)}


def is_trivial_init(path: Path) -> bool:
    """A package ``__init__.py`` with nothing but a docstring (or nothing at all)."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]
    return not body


def import_chains(root: Path, start: Path) -> dict[str, list[str]]:
    """Every project module ``start`` imports, transitively, with the shortest chain of imports that
    reaches it: root-relative path -> [start, ..., path] (trivial package ``__init__.py`` files left out)."""
    def rel(name: str) -> str:
        return module_file(root, name).relative_to(root).as_posix()

    start_name = module_name(root, start)
    chains = {start_name: [start_name]}
    for parent in _parents(start_name):  # `python -m stages.x` imports the package stages first
        chains.setdefault(parent, [start_name, parent])
    queue = list(chains)
    while queue:
        name = queue.pop(0)
        for dep in sorted(imported_modules(root, module_file(root, name))):
            if dep not in chains:
                chains[dep] = [*chains[name], dep]
                queue.append(dep)
    return {rel(n): [rel(m) for m in chain] for n, chain in chains.items() if not is_trivial_init(module_file(root, n))}


def import_closure(root: Path, start: Path) -> set[str]:
    """Root-relative paths of ``start`` and every project module it imports, transitively."""
    return set(import_chains(root, start))


# --- the stages, as DVC resolves them ---------------------------------------------------------


def resolved_stages(root: Path) -> dict[str, dict]:
    """dvc.yaml's stages after DVC's own templating (``foreach``/``matrix``/``${}``): name -> definition."""
    from dvc.fs import LocalFileSystem
    from dvc.parsing import DataResolver

    d = yaml.safe_load((root / "dvc.yaml").read_text())
    repo = SimpleNamespace(fs=LocalFileSystem(), config={})  # all DataResolver reads of a repo
    return DataResolver(repo, str(root), d).resolve()["stages"]


def stage_module(definition: dict) -> str | None:
    """``<name>`` of the ``python -m stages.<name>`` a stage's cmd runs (cmd may be a list), else None."""
    cmds = definition.get("cmd", [])
    for cmd in [cmds] if isinstance(cmds, str) else cmds:
        m = STAGE_CMD.search(cmd)
        if m:
            return m.group(1)
    return None


def dynamic_imports(root: Path, definition: dict) -> list[Path]:
    """Modules a stage imports by a name in its command: ``stages.train``'s model package ``fkd.models.<MODEL>``."""
    if stage_module(definition) != "train":
        return []
    cmds = definition["cmd"] if isinstance(definition["cmd"], list) else [definition["cmd"]]
    words = next(c for c in cmds if STAGE_CMD.search(c)).split()
    model = words[words.index("stages.train") + 1].partition(".")[0]
    init = root / "fkd" / "models" / model / "__init__.py"
    assert init.is_file(), f"stages.train runs model {model!r}, but {init.relative_to(root)} does not exist"
    return [init]


def declared_code_deps(root: Path, definition: dict) -> dict[str, set[str]]:
    """Each dep under fkd/ or stages/ of a stage -> the ``.py`` files it covers (a folder: all of them inside)."""
    out: dict[str, set[str]] = {}
    for dep in definition.get("deps", []) or []:
        dep = next(iter(dep)) if isinstance(dep, dict) else dep
        rel = Path(dep).as_posix().strip("/")
        if rel.split("/")[0] not in CODE_DIRS:
            continue
        path = root / rel
        if path.is_dir():
            out[rel] = {p.relative_to(root).as_posix() for p in path.rglob("*.py") if "__pycache__" not in p.parts}
        else:
            out[rel] = {rel} if rel.endswith(".py") and path.is_file() else set()  # a file that is not there covers nothing
    return out


def code_dep_differences(root: Path, chains: dict | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """Per ``python -m stages.<name>`` stage: (modules it imports that no dep covers, deps that cover nothing it
    imports), sorted. ``chains``, if given, receives per stage the import chain of every module it needs."""
    diffs = {}
    for stage, definition in resolved_stages(root).items():
        name = stage_module(definition)
        if name is None:
            continue
        start = root / "stages" / f"{name}.py"
        assert start.is_file(), f"stage {stage!r} runs stages.{name}, but {start.relative_to(root)} does not exist"
        stage_chains = import_chains(root, start)
        for extra_start in dynamic_imports(root, definition):
            for path, chain in import_chains(root, extra_start).items():
                stage_chains.setdefault(path, [start.relative_to(root).as_posix(), *chain])
        needed = set(stage_chains)
        declared = declared_code_deps(root, definition)
        covered = set().union(*declared.values()) if declared else set()
        diffs[stage] = (sorted(needed - covered), sorted(dep for dep, files in declared.items() if not files & needed))
        if chains is not None:
            chains[stage] = stage_chains
    return diffs


def format_differences(diffs: dict[str, tuple[list[str], list[str]]], chains: dict | None = None) -> str:
    lines = []
    for stage, (missing, extra) in diffs.items():
        if missing or extra:
            lines.append(f"  {stage}:")
            if missing:
                lines.append(f"    missing (edits re-run nothing): {', '.join(missing)}")
                for path in missing if chains else ():
                    lines.append(f"      {path}: imported via {' -> '.join(chains[stage][path])}")
            if extra:
                lines.append(f"    extra (imports nothing from):   {', '.join(extra)}")
    return "\n".join(lines)


# --- the check on this project's dvc.yaml -----------------------------------------------------


def _project_stages() -> list[str]:
    return [s for s, d in resolved_stages(ROOT).items() if stage_module(d)]


@functools.cache
def _project_differences() -> tuple[dict, dict]:
    """This project's :func:`code_dep_differences` and import chains, computed once for all the tests below."""
    chains: dict = {}
    return code_dep_differences(ROOT, chains), chains


def test_dvc_yaml_has_python_stages():
    assert len(_project_stages()) >= 8, _project_stages()


@pytest.mark.parametrize("stage", _project_stages())
def test_stage_code_deps_cover_its_imports_and_nothing_unused(stage):
    diffs, chains = _project_differences()
    missing, extra = diffs[stage]
    assert not missing and not extra, (
        f"dvc.yaml stage {stage!r}: its code deps do not fit what `python -m stages.{stage_module(resolved_stages(ROOT)[stage])}` imports\n"
        + format_differences({stage: (missing, extra)}, chains)
    )


def test_all_stage_code_deps_at_once():
    """One summary of every stage's differences (the per-stage tests above give the same, one by one)."""
    report = format_differences(_project_differences()[0])  # chains: see the per-stage tests
    assert not report, "dvc.yaml code deps differ from the stages' imports:\n" + report


# --- the checker itself, on a made-up project -------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    _write(tmp_path, {
        "fkd/__init__.py": '"""docstring only"""\n',
        "stages/__init__.py": "",
        "fkd/a.py": "import os\nimport fkd.b\n",
        "fkd/b.py": "def f():\n    from fkd import c  # inside a function\n    return c\n",
        "fkd/c.py": "from .d import X  # relative\n",
        "fkd/d.py": "X = 1\n",
        "fkd/e.py": "try:\n    from fkd.f import g\nexcept ImportError:\n    pass\n",
        "fkd/f.py": "g = 0\n",
        "fkd/unused.py": "import fkd.a\n",
        "stages/one.py": "from fkd.a import something\n",
        "stages/two.py": "from fkd import e, missing_name\nimport numpy\n",
        "params.yaml": "names: [one, two]\n",
    })
    return tmp_path


def test_closure_follows_every_kind_of_import(toy):
    assert import_closure(toy, toy / "stages/one.py") == {"stages/one.py", "fkd/a.py", "fkd/b.py", "fkd/c.py", "fkd/d.py"}
    assert import_closure(toy, toy / "stages/two.py") == {"stages/two.py", "fkd/e.py", "fkd/f.py"}
    assert import_chains(toy, toy / "stages/one.py")["fkd/d.py"] == ["stages/one.py", "fkd/a.py", "fkd/b.py", "fkd/c.py", "fkd/d.py"]


def test_closure_counts_an_init_with_code(toy):
    _write(toy, {"fkd/__init__.py": '"""doc"""\nVERSION = 1\n'})
    assert "fkd/__init__.py" in import_closure(toy, toy / "stages/one.py")


def test_differences_name_missing_and_extra_per_stage(toy):
    _write(toy, {"dvc.yaml": yaml.safe_dump({"stages": {
        "one": {"cmd": "python -m stages.one out", "deps": ["stages/one.py", "fkd/a.py", "fkd/b.py", "fkd/c.py", "fkd/d.py", "data"]},
        "two": {"cmd": "python -m stages.two", "deps": ["stages/two.py", "fkd/e.py", "fkd/unused.py"]},
        "shell": {"cmd": "echo hi", "deps": ["fkd/a.py"]},
    }})})
    assert code_dep_differences(toy) == {"one": ([], []), "two": (["fkd/f.py"], ["fkd/unused.py"])}


def test_foreach_and_matrix_stages_are_checked_as_dvc_expands_them(toy):
    _write(toy, {"dvc.yaml": yaml.safe_dump({"stages": {
        "each": {"foreach": "${names}", "do": {"cmd": "python -m stages.${item} x", "deps": ["stages/${item}.py", "fkd/e.py", "fkd/f.py"]}},
        "grid": {"matrix": {"stage": ["one"], "n": [1, 2]}, "cmd": "python -m stages.${item.stage} ${item.n}",
                 "deps": ["stages/${item.stage}.py", "fkd"]},
    }}, sort_keys=False)})
    diffs = code_dep_differences(toy)
    assert set(diffs) == {"each@one", "each@two", "grid@one-1", "grid@one-2"}
    assert diffs["each@two"] == ([], [])
    assert diffs["each@one"] == (["fkd/a.py", "fkd/b.py", "fkd/c.py", "fkd/d.py"], ["fkd/e.py", "fkd/f.py"])
    # a folder dep covers all its files, those the stage never imports too
    assert diffs["grid@one-1"] == ([], [])


def test_a_folder_dep_the_stage_imports_nothing_from_is_extra(toy):
    _write(toy, {"fkd/sub/__init__.py": "", "fkd/sub/x.py": "X = 1\n", "dvc.yaml": yaml.safe_dump({"stages": {
        "one": {"cmd": "python -m stages.one", "deps": ["stages/one.py", "fkd/a.py", "fkd/b.py", "fkd/c.py", "fkd/d.py",
                                                       "fkd/sub", "fkd/gone.py"]},
    }})})
    assert code_dep_differences(toy) == {"one": ([], ["fkd/gone.py", "fkd/sub"])}


def test_the_train_stage_needs_the_model_package_its_command_names(toy):
    _write(toy, {"fkd/models/__init__.py": "", "fkd/models/tiny/__init__.py": "from fkd.d import X\n",
                 "stages/train.py": "import importlib\n", "dvc.yaml": yaml.safe_dump({"stages": {
                     "ok": {"cmd": "python -m stages.train tiny.phase data 0", "deps": ["stages/train.py", "fkd/models/tiny", "fkd/d.py"]},
                     "short": {"cmd": "python -m stages.train tiny data 0", "deps": ["stages/train.py", "fkd/models/tiny"]},
                 }})})
    assert code_dep_differences(toy) == {"ok": ([], []), "short": (["fkd/d.py"], [])}
