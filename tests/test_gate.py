"""The regression gate (fkd/gate.py) on a real git+DVC repo whose metrics are committed, then changed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fkd.gate import GateError, load_rules
from tests.conftest import ROOT, dvc, project_env, run

COMMITTED = {
    "metrics/evaluate/resnet.json": {"rmse": 2.0, "complete": {"rmse": 2.5}, "partial": {"rmse": 1.5}},
    "metrics/evaluate/cnn.json": {"rmse": 3.0, "complete": {"rmse": 3.5}, "partial": {"rmse": 2.5}},
    "metrics/train_resnet/metrics.json": {"best_val_rmse": 2.1, "device": "cpu", "images_per_second": 100.0},
}
DVC_YAML = "metrics:\n" + "".join(f"  - {path}\n" for path in COMMITTED)
TOLERANCES = """\
tracked:
  - files: metrics/evaluate/*.json
    keys: [rmse, complete.rmse]
    abs: 0.05
    rel: 0.02
  - files: metrics/train_*/metrics.json
    keys: best_val_rmse
    abs: 0.05
    rel: 0.0
"""


def write_metrics(repo: Path, metrics: dict) -> None:
    for path, values in metrics.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(json.dumps(values))


@pytest.fixture(scope="module")
def committed_repo(tmp_path_factory) -> Path:
    """A git+DVC repo with metric files declared in dvc.yaml and committed, and a gate.yaml."""
    repo = tmp_path_factory.mktemp("gate")
    env = project_env()
    run(["git", "init", "-q", "-b", "main"], cwd=repo, env=env)
    dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "gate.yaml").write_text(TOLERANCES)
    write_metrics(repo, COMMITTED)
    run(["git", "add", "-A"], cwd=repo, env=env)
    run(["git", "commit", "-q", "-m", "metrics"], cwd=repo, env=env)
    return repo


@pytest.fixture
def repo(committed_repo: Path) -> Path:
    """``committed_repo`` with its workspace metrics reset to the committed ones before each test."""
    for path in COMMITTED:
        (committed_repo / path).unlink(missing_ok=True)
    write_metrics(committed_repo, COMMITTED)
    (committed_repo / "gate.yaml").write_text(TOLERANCES)
    return committed_repo


def gate(repo: Path, *args: str):
    """``python -m fkd.gate ARGS`` in ``repo``, as a user runs it."""
    env = project_env()
    env["PYTHONPATH"] = str(ROOT)
    return run([sys.executable, "-m", "fkd.gate", *args], cwd=repo, check=False, env=env)


def changed(path: str, **values) -> dict:
    new = json.loads(json.dumps(COMMITTED[path]))
    for key, value in values.items():
        node = new
        *parents, last = key.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return {path: new}


def test_unchanged_metrics_pass(repo):
    proc = gate(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate passed: 5 tracked metrics" in proc.stdout
    assert proc.stdout.count("| same") == 5


def test_worse_rmse_fails_with_a_table(repo):
    write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=2.2))
    proc = gate(repo, "--baseline", "HEAD")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "resnet.json" in line and "| rmse " in line)
    assert "2.0000" in row and "2.2000" in row and "+0.2000" in row and "WORSE" in row
    assert "gate FAILED: 1 of 5" in proc.stdout


def test_better_and_slightly_worse_within_tolerance_pass(repo):
    # resnet: 2.0 -> 2.08 is within 0.05 + 2 % of 2.0 = 0.09; cnn got better; training RMSE within 0.05.
    write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=2.08))
    write_metrics(repo, changed("metrics/evaluate/cnn.json", rmse=2.0, complete__rmse=3.0))
    write_metrics(repo, changed("metrics/train_resnet/metrics.json", best_val_rmse=2.149, device="cuda"))
    proc = gate(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| better" in proc.stdout and "| ok" in proc.stdout


def test_just_beyond_tolerance_fails(repo):
    write_metrics(repo, changed("metrics/train_resnet/metrics.json", best_val_rmse=2.151))
    proc = gate(repo)
    assert proc.returncode == 1
    assert "best_val_rmse" in proc.stdout and "WORSE" in proc.stdout


def test_nested_key_regression_fails(repo):
    write_metrics(repo, changed("metrics/evaluate/cnn.json", complete__rmse=4.0))
    proc = gate(repo)
    assert proc.returncode == 1
    assert "complete.rmse" in proc.stdout and "WORSE" in proc.stdout


def test_untracked_keys_may_change(repo):
    # partial.rmse and images_per_second are not in gate.yaml: the gate ignores them.
    write_metrics(repo, changed("metrics/evaluate/resnet.json", partial__rmse=9.0))
    write_metrics(repo, changed("metrics/train_resnet/metrics.json", images_per_second=1.0))
    assert gate(repo).returncode == 0


def test_missing_metric_file_fails_with_a_clear_message(repo):
    (repo / "metrics/evaluate/cnn.json").unlink()
    proc = gate(repo)
    assert proc.returncode == 1
    assert "MISSING: in the workspace: file not found" in proc.stdout
    assert "metrics/evaluate/cnn.json" in proc.stdout


def test_missing_key_and_unreadable_file_fail(repo):
    write_metrics(repo, {"metrics/train_resnet/metrics.json": {"device": "cpu"}})
    (repo / "metrics/evaluate/resnet.json").write_text("{not json")
    proc = gate(repo)
    assert proc.returncode == 1
    assert "no key 'best_val_rmse'" in proc.stdout
    assert "resnet.json" in proc.stdout and proc.stdout.count("MISSING") == 3


def test_not_a_number_fails(repo):
    write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=float("nan")))
    proc = gate(repo)
    assert proc.returncode == 1 and "INVALID: not a finite number" in proc.stdout


@pytest.mark.parametrize("text", ["-Infinity", "Infinity", "NaN"])
def test_non_finite_workspace_values_fail(repo, text):
    (repo / "metrics/evaluate/cnn.json").write_text(f'{{"rmse": {text}, "complete": {{"rmse": 3.5}}}}')
    proc = gate(repo)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "cnn.json" in line and "| rmse " in line)
    assert "INVALID: not a finite number" in row
    assert "gate FAILED: 1 of 5" in proc.stdout


def commit(repo: Path, message: str) -> None:
    env = project_env()
    run(["git", "add", "-A"], cwd=repo, env=env)
    run(["git", "commit", "-q", "-m", message], cwd=repo, env=env)


def undo_commit(repo: Path) -> None:
    run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=repo, env=project_env())


@pytest.mark.parametrize("corrupt", [b'{"rmse": 1.40, "complete": {', b"\x00\xff\xfe binary", b"not json at all"])
def test_unreadable_baseline_file_at_a_ref_is_an_error(repo, corrupt):
    (repo / "metrics/evaluate/resnet.json").write_bytes(corrupt)
    commit(repo, "a corrupt metrics file")
    try:
        write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=50.0))
        proc = gate(repo, "--baseline", "HEAD")
    finally:
        undo_commit(repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gate passed" not in proc.stdout and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: baseline HEAD: metrics/evaluate/resnet.json cannot be read (")
    assert "choose another --baseline" in line


def test_untracked_unreadable_baseline_file_does_not_matter(repo):
    (repo / "dvc.yaml").write_text(DVC_YAML + "  - metrics/other.json\n")
    (repo / "metrics/other.json").write_text("{broken")
    commit(repo, "an unreadable metric file no rule tracks")
    try:
        proc = gate(repo, "--baseline", "HEAD")
    finally:
        undo_commit(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metric_file_absent_at_the_baseline_is_new(repo):
    env = project_env()
    run(["git", "rm", "-q", "metrics/evaluate/cnn.json"], cwd=repo, env=env)  # still declared in dvc.yaml
    commit(repo, "no cnn metrics yet")
    try:
        write_metrics(repo, {"metrics/evaluate/cnn.json": COMMITTED["metrics/evaluate/cnn.json"]})
        proc = gate(repo, "--baseline", "HEAD")
    finally:
        undo_commit(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "cnn.json" in line]
    assert len(rows) == 2 and all("new: no baseline value" in row for row in rows)


def test_binary_baseline_file_is_a_usage_error(repo):
    (repo / "baseline.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    try:
        proc = gate(repo, "--baseline", "baseline.bin")
    finally:
        (repo / "baseline.bin").unlink()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: baseline baseline.bin is not valid JSON")


def test_non_finite_value_in_a_baseline_file_is_a_usage_error(repo):
    (repo / "baseline.json").write_text('{"metrics/evaluate/resnet.json": {"rmse": NaN, "complete.rmse": 2.5}}')
    try:
        proc = gate(repo, "--baseline", "baseline.json")
    finally:
        (repo / "baseline.json").unlink()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "metrics/evaluate/resnet.json has rmse = nan, not a finite number" in proc.stderr


def test_write_baseline_refuses_non_finite_values(repo):
    (repo / "metrics/evaluate/cnn.json").write_text('{"rmse": -Infinity, "complete": {"rmse": 3.5}}')
    proc = gate(repo, "--write-baseline", "baseline.json")
    assert proc.returncode == 2 and "rmse is -inf, not a finite number" in proc.stderr
    assert not (repo / "baseline.json").exists()


def test_baseline_can_be_an_older_ref(repo):
    env = project_env()
    write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=2.5))
    run(["git", "commit", "-q", "-am", "worse model"], cwd=repo, env=env)
    try:
        assert gate(repo, "--baseline", "HEAD").returncode == 0  # the workspace is what HEAD committed
        proc = gate(repo, "--baseline", "HEAD~1")
        assert proc.returncode == 1 and "| HEAD~1 " in proc.stdout and "WORSE" in proc.stdout
    finally:
        run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=repo, env=env)


def test_baseline_file_written_then_compared(repo):
    proc = gate(repo, "--write-baseline", "baseline.json")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((repo / "baseline.json").read_text())
    assert saved["metrics/evaluate/resnet.json"] == {"rmse": 2.0, "complete.rmse": 2.5}
    write_metrics(repo, changed("metrics/evaluate/cnn.json", rmse=3.5))
    proc = gate(repo, "--baseline", "baseline.json")
    assert proc.returncode == 1 and "baseline.json" in proc.stdout and "WORSE" in proc.stdout
    (repo / "baseline.json").unlink()


def test_higher_is_better_rule(repo):
    (repo / "gate.yaml").write_text(
        "tracked:\n  - {files: metrics/train_resnet/metrics.json, keys: images_per_second, abs: 0, rel: 0.5, better: higher}\n"
    )
    write_metrics(repo, changed("metrics/train_resnet/metrics.json", images_per_second=60.0))
    assert gate(repo, "--tolerances", "gate.yaml").returncode == 0
    write_metrics(repo, changed("metrics/train_resnet/metrics.json", images_per_second=40.0))
    assert gate(repo, "--tolerances", "gate.yaml").returncode == 1


def test_rule_matching_nothing_fails(repo):
    (repo / "gate.yaml").write_text("tracked:\n  - {files: metrics/evaluate/*.json, keys: [rmse_typo], abs: 0, rel: 0}\n")
    proc = gate(repo)
    assert proc.returncode == 1 and "no metric matches this gate.yaml rule" in proc.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("tracked: []\n", "top-level 'tracked:' list"),
        ("tracked:\n  - {files: a.json, keys: rmse, abs: 0.1}\n", "missing key 'rel'"),
        ("tracked:\n  - {files: a.json, keys: rmse, abs: 0.1, rel: 0, tol: 1}\n", "unknown key 'tol'"),
        ("tracked:\n  - {files: a.json, keys: rmse, abs: -1, rel: 0}\n", "'abs' must be a number >= 0"),
        ("tracked:\n  - {files: a.json, keys: rmse, abs: 0, rel: 0, better: up}\n", "'better' must be lower or higher"),
    ],
)
def test_bad_tolerances_are_usage_errors(tmp_path, text, message):
    (tmp_path / "gate.yaml").write_text(text)
    with pytest.raises(GateError, match=message):
        load_rules(tmp_path / "gate.yaml")


def test_unknown_ref_is_a_usage_error(repo):
    proc = gate(repo, "--baseline", "no-such-branch")
    assert proc.returncode == 2 and "no-such-branch" in proc.stderr


def test_project_gate_yaml_is_valid():
    rules = load_rules(ROOT / "gate.yaml")
    assert any("rmse" in key for rule in rules for key in rule.keys)
