"""The regression gate (fkd/gate.py) on a real git+DVC repo whose metrics are committed, then changed.

Most tests call the gate in-process (``main`` with the repo as working folder, DVC's Python API
reading the metrics); a few run ``python -m fkd.gate`` for what only a subprocess shows: the exit
code and the one-line stderr a user sees. Comparing plain dicts is in tests/test_gate_rules.py.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest

from fkd import gate as gate_module
from tests.conftest import ROOT, commit_all, dvc, project_env, run

COMMITTED = {
    "metrics/evaluate/resnet.json": {"rmse": 2.0, "complete": {"rmse": 2.5}, "partial": {"rmse": 1.5}},
    "metrics/evaluate/cnn.json": {"rmse": 3.0, "complete": {"rmse": 3.5}, "partial": {"rmse": 2.5}},
    "metrics/train_resnet/metrics.json": {"best_val_rmse": 2.1, "device": "cpu", "images_per_second": 100.0},
}
# as in the project: the evaluate metrics are a directory, the training metrics one file
DVC_YAML = "metrics:\n  - metrics/evaluate\n  - metrics/train_resnet/metrics.json\n"
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
def repo(committed_repo: Path, monkeypatch) -> Path:
    """``committed_repo`` (the working folder) with its workspace metrics reset to the committed ones."""
    for path in COMMITTED:
        (committed_repo / path).unlink(missing_ok=True)
    write_metrics(committed_repo, COMMITTED)
    (committed_repo / "gate.yaml").write_text(TOLERANCES)
    monkeypatch.chdir(committed_repo)
    return committed_repo


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def gate(capsys, *args: str) -> Result:
    """The gate's ``main(ARGS)`` in-process, in the repo: exit code, stdout, stderr."""
    capsys.readouterr()
    code = gate_module.main(list(args))
    out = capsys.readouterr()
    return Result(code, out.out, out.err)


def gate_process(repo: Path, *args: str):
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


@contextlib.contextmanager
def committed(repo: Path, message: str):
    """The repo's changes committed as the baseline for the block; the commit (and the block's changes) undone after."""
    commit_all(repo, message)
    try:
        yield
    finally:
        run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=repo, env=project_env())


# --- as a user runs it: exit codes and one-line errors ------------------------------------------

def test_unchanged_metrics_pass(repo):
    proc = gate_process(repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate passed: 5 tracked metrics" in proc.stdout
    assert proc.stdout.count("| same") == 5


def test_worse_rmse_fails_with_a_table(repo):
    write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=2.2))
    proc = gate_process(repo, "--baseline", "HEAD")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "resnet.json" in line and "| rmse " in line)
    assert "2.0000" in row and "2.2000" in row and "+0.2000" in row and "WORSE" in row
    assert "gate FAILED: 1 of 5" in proc.stdout


def test_null_committed_as_a_baseline_value_is_a_usage_error(repo):
    # it passed as "new: no baseline value" before: DVC leaves nulls out of what it shows
    (repo / "metrics/evaluate/resnet.json").write_text('{"rmse": null, "complete": {"rmse": 2.5}}')
    with committed(repo, "a null metric"):
        write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=999.0))
        proc = gate_process(repo, "--baseline", "HEAD")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: baseline HEAD: metrics/evaluate/resnet.json has rmse = null, not a finite number to compare with; "
        "choose another --baseline"]


def test_empty_baseline_is_refused(repo):
    proc = gate_process(repo, "--baseline", "")
    assert proc.returncode == 2 and "argument --baseline: must not be empty" in proc.stderr
    assert "gate passed" not in proc.stdout


def test_unreadable_dvc_yaml_is_one_line(repo):
    # DVC's own "failed to load metrics" warning is not printed as a second line
    (repo / "dvc.yaml").write_text("metrics: [\n")
    try:
        proc = gate_process(repo)
    finally:
        (repo / "dvc.yaml").write_text(DVC_YAML)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: the workspace: dvc cannot read the metrics there: unable to read: 'dvc.yaml', YAML file structure is corrupted"]


def test_baseline_can_be_an_older_ref(repo, capsys):
    env = project_env()
    write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=2.5))
    run(["git", "commit", "-q", "-am", "worse model"], cwd=repo, env=env)
    try:
        assert gate(capsys, "--baseline", "HEAD").returncode == 0  # the workspace is what HEAD committed
        assert gate(capsys, "--baseline", "main").returncode == 0  # the branch checked out, same metrics
        proc = gate_process(repo, "--baseline", "HEAD~1")
        assert proc.returncode == 1 and "| HEAD~1 " in proc.stdout and "WORSE" in proc.stdout
    finally:
        run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=repo, env=env)


# --- in-process, on the real repo: what DVC reads -----------------------------------------------

def test_nested_key_regression_fails(repo, capsys):
    write_metrics(repo, changed("metrics/evaluate/cnn.json", complete__rmse=4.0))
    proc = gate(capsys)
    assert proc.returncode == 1
    assert "complete.rmse" in proc.stdout and "WORSE" in proc.stdout


@pytest.mark.parametrize("path", ["metrics/evaluate/cnn.json", "metrics/train_resnet/metrics.json"])
def test_missing_metric_file_fails_with_a_clear_message(repo, capsys, path):
    # one file of a metrics directory was "not declared as a metric in dvc.yaml" before
    (repo / path).unlink()
    proc = gate(capsys)
    assert proc.returncode == 1
    assert "MISSING: in the workspace: file not found (run `dvc repro` to make it, or `dvc pull` to fetch it)" in proc.stdout
    assert path in proc.stdout and "not declared" not in proc.stdout


def test_missing_key_and_unreadable_file_fail(repo, capsys):
    write_metrics(repo, {"metrics/train_resnet/metrics.json": {"device": "cpu"}})
    (repo / "metrics/evaluate/resnet.json").write_text("{not json")
    proc = gate(capsys)
    assert proc.returncode == 1
    assert "no key 'best_val_rmse'" in proc.stdout
    assert "resnet.json" in proc.stdout and proc.stdout.count("MISSING") == 3


@pytest.mark.parametrize("text", ["-Infinity", "Infinity", "NaN", "null"])
def test_non_finite_workspace_values_fail(repo, capsys, text):
    # null was "MISSING: no key" before (DVC leaves it out)
    (repo / "metrics/evaluate/cnn.json").write_text(f'{{"rmse": {text}, "complete": {{"rmse": 3.5}}}}')
    proc = gate(capsys)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if "cnn.json" in line and "| rmse " in line)
    assert "INVALID: not a finite number" in row
    assert "gate FAILED: 1 of 5" in proc.stdout


@pytest.mark.parametrize("corrupt", [b'{"rmse": 1.40, "complete": {', b"\x00\xff\xfe binary", b"not json at all"])
def test_unreadable_baseline_file_at_a_ref_is_an_error(repo, capsys, corrupt):
    (repo / "metrics/evaluate/resnet.json").write_bytes(corrupt)
    with committed(repo, "a corrupt metrics file"):
        write_metrics(repo, changed("metrics/evaluate/resnet.json", rmse=50.0))
        proc = gate(capsys, "--baseline", "HEAD")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "gate passed" not in proc.stdout and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: baseline HEAD: metrics/evaluate/resnet.json cannot be read (")
    assert "choose another --baseline" in line


def test_untracked_unreadable_baseline_file_does_not_matter(repo, capsys):
    (repo / "dvc.yaml").write_text(DVC_YAML + "  - metrics/other.json\n")
    (repo / "metrics/other.json").write_text("{broken")
    with committed(repo, "an unreadable metric file no rule tracks"):
        proc = gate(capsys, "--baseline", "HEAD")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_metric_file_absent_at_the_baseline_is_new(repo, capsys):
    env = project_env()
    run(["git", "rm", "-q", "metrics/evaluate/cnn.json"], cwd=repo, env=env)  # still declared in dvc.yaml
    with committed(repo, "no cnn metrics yet"):
        write_metrics(repo, {"metrics/evaluate/cnn.json": COMMITTED["metrics/evaluate/cnn.json"]})
        proc = gate(capsys, "--baseline", "HEAD")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "cnn.json" in line]
    assert len(rows) == 2 and all("new: no baseline value" in row for row in rows)


def test_unknown_ref_is_a_usage_error(repo, capsys):
    proc = gate(capsys, "--baseline", "no-such-branch")
    assert proc.returncode == 2 and "no-such-branch" in proc.stderr


# --- baseline files -----------------------------------------------------------------------------

def test_binary_baseline_file_is_a_usage_error(repo, capsys):
    (repo / "baseline.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    try:
        proc = gate(capsys, "--baseline", "baseline.bin")
    finally:
        (repo / "baseline.bin").unlink()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: baseline baseline.bin is not valid JSON")


def test_non_finite_value_in_a_baseline_file_is_a_usage_error(repo, capsys):
    (repo / "baseline.json").write_text('{"metrics/evaluate/resnet.json": {"rmse": NaN, "complete.rmse": 2.5}}')
    try:
        proc = gate(capsys, "--baseline", "baseline.json")
    finally:
        (repo / "baseline.json").unlink()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "metrics/evaluate/resnet.json has rmse = nan, not a finite number" in proc.stderr


def test_write_baseline_refuses_non_finite_values(repo, capsys):
    (repo / "metrics/evaluate/cnn.json").write_text('{"rmse": -Infinity, "complete": {"rmse": 3.5}}')
    proc = gate(capsys, "--write-baseline", "baseline.json")
    assert proc.returncode == 2 and "rmse is -inf, not a finite number" in proc.stderr
    assert not (repo / "baseline.json").exists()


def test_write_baseline_to_an_unwritable_path_is_one_line(repo, capsys):
    # a traceback before
    (repo / "a_dir").mkdir(exist_ok=True)
    proc = gate(capsys, "--write-baseline", "a_dir")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: cannot write the baseline to a_dir: ")
    assert list((repo / "a_dir").iterdir()) == [] and not list(repo.glob(".a_dir.*"))
    (repo / "a_dir").rmdir()


def test_baseline_file_written_then_compared(repo, capsys):
    proc = gate(capsys, "--write-baseline", "baseline.json")
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((repo / "baseline.json").read_text())
    assert saved["metrics/evaluate/resnet.json"] == {"rmse": 2.0, "complete.rmse": 2.5}
    write_metrics(repo, changed("metrics/evaluate/cnn.json", rmse=3.5))
    proc = gate(capsys, "--baseline", "baseline.json")
    assert proc.returncode == 1 and "baseline.json" in proc.stdout and "WORSE" in proc.stdout
    (repo / "baseline.json").unlink()
