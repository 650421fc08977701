"""One error hierarchy: every domain error derives from fkd.core.errors.FkdError (keeping its builtin base),
and fkd.core.cli.run_stage turns any of them into one line and exit code 2."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from fkd.core.cli import run_stage
from fkd.core.errors import FkdError
from tests.conftest import ROOT

#: Defined in fkd/core/schema.py, which is being rewritten (pydantic); it moves onto FkdError with that change.
def domain_errors() -> list[tuple[str, str, list[str]]]:
    """(module, class, base names) of every class in fkd/ whose bases include a *Error or *Exception."""
    found = []
    for path in sorted((ROOT / "fkd").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                if node.name != "FkdError" and any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append((module, node.name, bases))
    return found


def test_the_scan_finds_the_known_errors():
    names = {name for _, name, _ in domain_errors()}
    assert {"TrainingError", "ModelFileError", "PredictionError", "EnsembleWeightsError", "StageError", "DataError",
            "GateError", "MetricsSchemaError", "LabelOffsetError", "ParamsError"} <= names


@pytest.mark.parametrize("module,name,bases", domain_errors(), ids=[f"{m}.{n}" for m, n, _ in domain_errors()])
def test_every_domain_error_is_an_fkd_error_and_keeps_its_builtin_base(module, name, bases):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, FkdError)
    builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (Exception, BaseException, object)]
    assert builtin, f"{name} lost its builtin base (ValueError/RuntimeError): `except ValueError` callers would miss it"


@pytest.mark.parametrize("error", ["fkd.gate:GateError", "fkd.evaluation.metrics:MetricsSchemaError", "fkd.core.label_offset:LabelOffsetError",
                                   "fkd.core.errors:EnsembleWeightsError", "fkd.core.config:ParamsError"])
def test_run_stage_prints_one_line_and_exits_2(error, capsys):
    module, name = error.split(":")
    cls = getattr(importlib.import_module(module), name)

    def main(argv):
        raise cls("models/x.json: something is wrong; run the stage again")

    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, [])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1:] == ["error: models/x.json: something is wrong; run the stage again"]


def test_run_stage_keeps_the_traceback_of_a_bug():
    def main(argv):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_stage(main, [])
