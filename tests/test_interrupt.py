"""Interrupted and failed training runs: the previous metrics and curves stay byte-identical, Ctrl-C is one line."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fkd.core.errors import TrainingError
from tests.conftest import ROOT, TINY_PARAMS, deep_update, make_project, project_env

#: The log lines of fkd.core.cli.run_stage's logging set-up: "12:34:56 fkd.train_torch: ...".
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d [\w.]+: ")
PREVIOUS = {
    "metrics.json": '{\n    "best_val_rmse": 1.5,\n    "epochs_run": 7\n}\n',
    "plots/metrics/val_rmse.tsv": "step\tval_rmse\n0\t3.0\n1\t1.5\n",
    "plots/metrics/train_loss.tsv": "step\ttrain_loss\n0\t0.5\n1\t0.25\n",
    "speed.json": '{"train_seconds": 1.0}\n',
}


def write_previous(metrics_dir: Path) -> dict[str, bytes]:
    for name, text in PREVIOUS.items():
        (metrics_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (metrics_dir / name).write_text(text)
    return snapshot(metrics_dir)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def staging(metrics_dir: Path) -> list[Path]:
    return sorted(metrics_dir.parent.glob(f".{metrics_dir.name}.*.tmp"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder to run ``python -m stages.train resnet`` in, with a params.yaml of ``epochs`` tiny resnet epochs."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, {"resnet": TINY_PARAMS["resnet"]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def set_epochs(workdir: Path, epochs: int) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["resnet"].update(epochs=epochs, patience=epochs)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def start_training(workdir: Path, split_dir: Path) -> subprocess.Popen:
    """The training stage as a terminal's foreground job runs it: Ctrl-C at its default even where pytest itself
    was started in the background of a script (``bash -c 'pytest &'``), which leaves SIGINT ignored in its children."""
    env = {**project_env(), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "stages.train", "resnet", str(split_dir), "0", "metrics/train_resnet/0", "models/resnet/0.safetensors"]
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_an_epoch(proc: subprocess.Popen, metrics_dir: Path, timeout: float = 120.0) -> Path:
    """Wait until the run has logged at least one epoch's curve point into its staging folder; returns the folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for folder in staging(metrics_dir):
            curve = folder / metrics_dir.name / "plots/metrics/val_rmse.tsv"
            if curve.exists() and len(curve.read_text().splitlines()) >= 2:
                return folder
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no epoch logged in {timeout:.0f} s: {proc.communicate()}")


def interrupt(proc: subprocess.Popen, every: float = 5.0, timeout: float = 60.0) -> str:
    """Ctrl-C ``proc``, again every ``every`` s while it runs (as a user would), until ``timeout``; its stderr."""
    deadline = time.monotonic() + timeout
    while True:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=every)[1]
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                raise


def test_ctrl_c_leaves_the_previous_metrics_and_prints_one_line(workdir, split_dir):
    metrics_dir = workdir / "metrics/train_resnet/0"
    before = write_previous(metrics_dir)
    set_epochs(workdir, 100_000)
    proc = start_training(workdir, split_dir)
    wait_for_an_epoch(proc, metrics_dir)
    stderr = interrupt(proc)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert [line for line in stderr.splitlines() if not LOG_LINE.match(line)] == [
        "interrupted: train stopped; the outputs it had not finished were left as they were"], stderr
    assert snapshot(metrics_dir) == before
    assert staging(metrics_dir) == []
    assert not (workdir / "models/resnet/0.safetensors").exists()


def test_a_killed_run_leaves_the_previous_metrics_and_the_next_run_clears_its_staging(workdir, split_dir):
    metrics_dir = workdir / "metrics/train_resnet/0"
    before = write_previous(metrics_dir)
    set_epochs(workdir, 100_000)
    proc = start_training(workdir, split_dir)
    left = wait_for_an_epoch(proc, metrics_dir)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(metrics_dir) == before
    assert staging(metrics_dir) == [left]  # what a killed run leaves; the next run removes it

    set_epochs(workdir, 2)
    proc = start_training(workdir, split_dir)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert staging(metrics_dir) == []
    after = snapshot(metrics_dir)
    assert sorted(after) == ["metrics.json", "plots/metrics/lr.tsv", "plots/metrics/train_loss.tsv", "plots/metrics/val_rmse.tsv",
                             "speed.json"]
    assert b'"epochs_run": 2' in after["metrics.json"] and b'"best_val_rmse"' in after["metrics.json"]
    assert len(after["plots/metrics/val_rmse.tsv"].decode().splitlines()) == 3  # header and two epochs


def test_training_that_fails_leaves_the_previous_metrics(tmp_path, split_dir):
    from fkd.nn.train_result import run_training

    metrics_dir = tmp_path / "metrics/train_x/0"
    before = write_previous(metrics_dir)

    def failing(train, val, live):
        live.log_metric("val_rmse", float("nan"))
        live.next_step()
        raise TrainingError("training x: no finite validation RMSE in 1 epochs")

    with pytest.raises(TrainingError):
        run_training(failing, split_dir, 0, metrics_dir)
    assert snapshot(metrics_dir) == before
    assert staging(metrics_dir) == []


def test_staging_of_a_dead_run_is_removed_and_of_a_live_one_kept(tmp_path):
    from fkd.core.io import staged_dir

    out = tmp_path / "0"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".0.{int(dead.stdout)}.abc.tmp"
    running = tmp_path / f".0.{os.getpid()}.def.tmp"  # this process: still running
    for folder in (stale, running):
        (folder / "0").mkdir(parents=True)
    with staged_dir(out) as new:
        (new / "a.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["0", running.name])
    assert (out / "a.txt").read_text() == "new"


def test_ctrl_c_under_dvc_names_the_stages_own_outputs_and_how_to_restore_them(tmp_path, monkeypatch, capsys):
    """Under ``dvc repro`` the outputs were removed before the stage ran: the line says how to put them back."""
    from fkd.core.cli import run_stage

    monkeypatch.chdir(make_project(tmp_path / "project"))
    monkeypatch.setenv("DVC_STAGE", "train@resnet-0")

    def main(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        run_stage(main, [])
    assert exit_.value.code == 130
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("interrupted: train@resnet-0 stopped; dvc had removed its outputs before running it: "
                    "`git checkout -- metrics/train_resnet/0/metrics.json metrics/train_resnet/0/plots && "
                    "dvc checkout train@resnet-0` puts back the committed ones")
