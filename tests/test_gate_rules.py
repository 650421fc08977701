"""The regression gate's pure logic (fkd/gate.py) in-process, on plain dicts: gate.yaml's rules, comparing
two metric dicts, the verdict, baseline values. The real git+DVC side is in tests/test_gate.py."""
from __future__ import annotations

import json
import math

import pytest
import yaml

from fkd.gate import (NOT_FOUND, GateError, baseline_values, compare, file_metrics, flatten, format_table,
                      load_rules, main, parse_rules, restore_dropped, write_baseline)
from tests.conftest import ROOT
from tests.test_gate import TOLERANCES

#: the committed metrics of tests/test_gate.py's repo (its TOLERANCES), flattened as DVC shows them
BASE = {
    "metrics/evaluate/resnet.json": {"rmse": 2.0, "complete.rmse": 2.5, "partial.rmse": 1.5},
    "metrics/evaluate/cnn.json": {"rmse": 3.0, "complete.rmse": 3.5, "partial.rmse": 2.5},
    "metrics/train_resnet/metrics.json": {"best_val_rmse": 2.1, "device": "cpu", "images_per_second": 100.0},
}
RULES = parse_rules(yaml.safe_load(TOLERANCES))


def changed(**values) -> dict:
    """BASE with ``path__key=value`` changes ("resnet__rmse", "cnn__complete.rmse", "train__best_val_rmse")."""
    names = {"resnet": "metrics/evaluate/resnet.json", "cnn": "metrics/evaluate/cnn.json",
             "train": "metrics/train_resnet/metrics.json"}
    new = json.loads(json.dumps(BASE))
    for name, value in values.items():
        file, key = name.split("__")
        new[names[file]][key] = value
    return new


def verdict(workspace: dict, baseline: dict = BASE, rules=RULES, **kwargs) -> tuple[bool, str, list]:
    checks = compare(rules, baseline, workspace, **kwargs)
    return not any(c.failed for c in checks), format_table(checks, "HEAD"), checks


def row(table: str, path: str, key: str) -> str:
    return next(line for line in table.splitlines() if path in line and f"| {key} " in line)


# --- gate.yaml ---------------------------------------------------------------------------------

def rules_text(**entry) -> dict:
    """A gate.yaml whose second rule is a valid one updated with ``entry``."""
    second = {"files": "b.json", "keys": ["rmse"], "abs": 0.1, "rel": 0.0, **entry}
    return {"tracked": [{"files": "a.json", "keys": "rmse", "abs": 0, "rel": 0}, second]}


@pytest.mark.parametrize("key", ["abs", "rel"])
@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"),
                                          (-0.5, "-0.5"), ("0.1", "'0.1'"), (True, "True"), (None, "None")])
def test_every_tolerance_must_be_a_finite_number_at_least_0(key, value, shown):
    # nan and inf passed before: an RMSE going from 19.65 to 999 was within a tolerance of nan
    with pytest.raises(GateError) as err:
        parse_rules(rules_text(**{key: value}))
    assert str(err.value) == f"gate.yaml: 'tracked[1].{key}' must be a finite number >= 0, got {shown}"


def test_nan_tolerance_in_a_yaml_file_is_refused(tmp_path):
    (tmp_path / "gate.yaml").write_text("tracked:\n  - {files: a.json, keys: rmse, abs: .nan, rel: 0}\n")
    with pytest.raises(GateError, match=r"'tracked\[0\].abs' must be a finite number >= 0, got nan$"):
        load_rules(tmp_path / "gate.yaml")


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"tracked": []}, "gate.yaml: 'tracked' must be a list of rules, got []"),
        (None, "gate.yaml: expected a mapping with a 'tracked:' list of rules, got None"),
        ({"tracked": ["a.json"]}, "gate.yaml: 'tracked[0]' must be a mapping of files, keys, abs, rel, better, got 'a.json'"),
        ({"tracked": [{"files": "a.json", "keys": "rmse", "abs": 0.1}]}, "gate.yaml: missing key 'tracked[0].rel'"),
        ({"tracked": [{"files": "a.json", "keys": "rmse", "abs": 0.1, "rel": 0, "tol": 1}]},
         "gate.yaml: unknown key 'tracked[0].tol' (allowed here: files, keys, abs, rel, better)"),
        (rules_text(better="up"), "gate.yaml: 'tracked[1].better' must be lower or higher, got 'up'"),
        (rules_text(keys=[]), "gate.yaml: 'tracked[1].keys' must be a metric name or a list of metric names, got []"),
        (rules_text(keys=["rmse", 3]), "gate.yaml: 'tracked[1].keys[1]' must be a metric name or a list of metric names, got 3"),
        (rules_text(files=["a.json"]), "gate.yaml: 'tracked[1].files' must be a glob of metric files, got ['a.json']"),
        # ignored before: a misspelt section silently tracked nothing more
        ({**rules_text(), "trackd": [{"files": "c.json"}]}, "gate.yaml: unknown key 'trackd' (allowed here: tracked)"),
    ],
)
def test_bad_tolerances_are_one_line_naming_the_key(raw, message):
    with pytest.raises(GateError) as err:
        parse_rules(raw)
    assert str(err.value) == message


def test_keys_may_be_one_name_or_a_list():
    assert [r.keys for r in RULES] == [("rmse", "complete.rmse"), ("best_val_rmse",)]
    assert RULES[0].better == "lower" and RULES[0].abs == 0.05 and isinstance(RULES[1].rel, float)


def test_project_gate_yaml_is_valid():
    rules = load_rules(ROOT / "gate.yaml")
    assert any("rmse" in key for rule in rules for key in rule.keys)
    assert all(math.isfinite(r.abs) and math.isfinite(r.rel) for r in rules)


# --- comparing ---------------------------------------------------------------------------------

def test_unchanged_metrics_pass():
    passed, table, _ = verdict(BASE)
    assert passed and "gate passed: 5 tracked metrics" in table and table.count("| same") == 5


def test_worse_rmse_fails_with_a_table():
    passed, table, _ = verdict(changed(resnet__rmse=2.2))
    line = row(table, "resnet.json", "rmse")
    assert not passed and "2.0000" in line and "2.2000" in line and "+0.2000" in line and "WORSE" in line
    assert "gate FAILED: 1 of 5" in table


def test_better_and_slightly_worse_within_tolerance_pass():
    # resnet: 2.0 -> 2.08 is within 0.05 + 2 % of 2.0 = 0.09; cnn got better; training RMSE within 0.05.
    passed, table, _ = verdict(changed(resnet__rmse=2.08, cnn__rmse=2.0, **{"cnn__complete.rmse": 3.0},
                                       train__best_val_rmse=2.149, train__device="cuda"))
    assert passed and "| better" in table and "| ok" in table


def test_just_beyond_tolerance_fails():
    passed, table, _ = verdict(changed(train__best_val_rmse=2.151))
    assert not passed and "WORSE" in row(table, "metrics.json", "best_val_rmse")


def test_untracked_keys_may_change():
    # partial.rmse and images_per_second are not in gate.yaml: the gate ignores them.
    assert verdict(changed(**{"resnet__partial.rmse": 9.0}, train__images_per_second=1.0))[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), None, "2.0", True])
def test_a_workspace_value_that_is_not_a_finite_number_fails(value):
    # null was "MISSING" before, as if the key were absent
    passed, table, checks = verdict(changed(resnet__rmse=value))
    assert not passed and "INVALID: not a finite number" in row(table, "resnet.json", "rmse")
    assert [c.status for c in checks if c.failed] == ["INVALID"]


@pytest.mark.parametrize("value, shown", [(None, "null"), ("2.0", "'2.0'"), (True, "True"), (float("nan"), "nan"),
                                          (float("inf"), "inf")])
@pytest.mark.parametrize("workspace", ["same", "worse", "missing"])
def test_a_baseline_value_that_is_there_but_not_a_finite_number_is_a_usage_error(value, shown, workspace):
    # a committed null passed as "new: no baseline value" before, whatever the workspace had
    new = {"same": changed(), "worse": changed(resnet__rmse=999.0), "missing": changed()}[workspace]
    if workspace == "missing":
        del new["metrics/evaluate/resnet.json"]["rmse"]
    with pytest.raises(GateError) as err:
        compare(RULES, changed(resnet__rmse=value), new, baseline_name="HEAD")
    assert str(err.value) == (f"baseline HEAD: metrics/evaluate/resnet.json has rmse = {shown}, "
                              "not a finite number to compare with; choose another --baseline")


def test_a_value_is_new_only_when_its_key_or_file_is_absent_at_the_baseline():
    base = changed()
    del base["metrics/evaluate/resnet.json"]["rmse"]
    del base["metrics/evaluate/cnn.json"]
    passed, table, checks = verdict(changed(), base)
    assert passed
    assert sorted((c.path, c.key) for c in checks if c.status == "new") == [
        ("metrics/evaluate/cnn.json", "complete.rmse"), ("metrics/evaluate/cnn.json", "rmse"),
        ("metrics/evaluate/resnet.json", "rmse")]
    assert "new: no baseline value" in row(table, "resnet.json", "rmse")


def test_missing_workspace_values_fail_with_the_reason():
    workspace = changed()
    del workspace["metrics/train_resnet/metrics.json"]["best_val_rmse"]
    del workspace["metrics/evaluate/cnn.json"]
    errors = {"metrics/evaluate/cnn.json": NOT_FOUND}
    passed, table, checks = verdict(workspace, errors=errors)
    assert not passed and [c.status for c in checks].count("MISSING") == 3
    assert "MISSING: in the workspace: no key 'best_val_rmse'" in row(table, "metrics.json", "best_val_rmse")
    assert f"MISSING: in the workspace: {NOT_FOUND}" in row(table, "cnn.json", "rmse")
    assert "dvc repro" in NOT_FOUND and "dvc pull" in NOT_FOUND
    # a file dvc does not list and that is not said to be gone is no longer declared
    assert "not declared as a metric in dvc.yaml" in row(verdict(workspace)[1], "cnn.json", "rmse")


def test_higher_is_better_rule():
    rules = parse_rules(yaml.safe_load(
        "tracked:\n  - {files: metrics/train_resnet/metrics.json, keys: images_per_second, abs: 0, rel: 0.5, better: higher}\n"))
    assert verdict(changed(train__images_per_second=60.0), rules=rules)[0]
    assert not verdict(changed(train__images_per_second=40.0), rules=rules)[0]


def test_rule_matching_nothing_fails():
    rules = parse_rules({"tracked": [{"files": "metrics/evaluate/*.json", "keys": ["rmse_typo"], "abs": 0, "rel": 0}]})
    passed, table, _ = verdict(BASE, rules=rules)
    assert not passed and "no metric matches this gate.yaml rule" in table


def test_unreadable_baseline_file_is_an_error_only_when_tracked():
    with pytest.raises(GateError, match=r"^baseline HEAD: metrics/evaluate/resnet.json cannot be read \(boom\); "):
        compare(RULES, BASE, BASE, baseline_errors={"metrics/evaluate/resnet.json": "boom"}, baseline_name="HEAD")
    assert verdict(BASE, baseline_errors={"metrics/other.json": "boom"})[0]


def test_dropped_tracked_values_are_put_back_from_the_file():
    # DVC leaves null (and lists, {}) out of what it shows; read alone, a committed null looked absent
    shown = changed()
    del shown["metrics/evaluate/resnet.json"]["rmse"]
    read = []
    files = {"metrics/evaluate/resnet.json": {"rmse": None, "complete": {"rmse": 2.5}, "partial": {"rmse": None}}}
    restore_dropped(RULES, shown, lambda path: read.append(path) or files[path])
    assert read == ["metrics/evaluate/resnet.json"]  # only files lacking a tracked key are read again
    assert shown["metrics/evaluate/resnet.json"] == {"rmse": None, "complete.rmse": 2.5, "partial.rmse": 1.5}
    with pytest.raises(GateError, match="resnet.json has rmse = null"):
        compare(RULES, shown, BASE, baseline_name="HEAD")


def test_flatten_names_nested_keys_as_dvc_does():
    assert flatten({"rmse": 1, "complete": {"rmse": None, "n": {"x": [1]}}}) == {
        "rmse": 1, "complete.rmse": None, "complete.n.x": [1]}


# --- baseline files ----------------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [(float("-inf"), "-inf"), (float("nan"), "nan"), (None, "null"), ("x", "'x'")])
def test_baseline_values_must_be_finite_numbers(value, shown):
    with pytest.raises(GateError, match=rf"^metrics/evaluate/cnn.json: rmse is {shown}, not a finite number"):
        baseline_values(RULES, changed(cnn__rmse=value))
    assert baseline_values(RULES, BASE)["metrics/evaluate/resnet.json"] == {"rmse": 2.0, "complete.rmse": 2.5}


def test_null_in_a_baseline_file_is_a_usage_error(tmp_path):
    (tmp_path / "baseline.json").write_text('{"metrics/evaluate/resnet.json": {"rmse": null, "complete": {"rmse": 2.5}}}')
    with pytest.raises(GateError, match="resnet.json has rmse = null, not a finite number"):
        compare(RULES, file_metrics(tmp_path / "baseline.json"), BASE)


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_unwritable_baseline_path_is_one_line_and_leaves_nothing(tmp_path, where):
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_text("x")
    path = tmp_path / ("out" if where == "a directory" else "file/baseline.json")
    with pytest.raises(GateError) as err:
        write_baseline(path, RULES, BASE)
    assert str(err.value).startswith(f"cannot write the baseline to {path}: ") and "\n" not in str(err.value)
    assert "choose another --write-baseline path" in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file", "out"]  # no temporary file left behind


@pytest.mark.parametrize("option", ["--baseline", "--write-baseline"])
@pytest.mark.parametrize("value", ["", "  "])
def test_empty_baseline_is_refused(option, value, capsys):
    # --baseline '' was taken as a git ref before
    with pytest.raises(SystemExit) as exit_:
        main([option, value])
    assert exit_.value.code == 2
    assert f"argument {option}: must not be empty" in capsys.readouterr().err
