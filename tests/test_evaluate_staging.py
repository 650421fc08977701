"""The evaluate stage's folders are staged with fkd.core.io.staged_dir: a killed run's staging folders go on the next run."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np

from fkd.evaluation import outputs, plots


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_outputs_removes_staging_folders_of_a_killed_run(tmp_path, monkeypatch):
    metrics_dir, plots_dir = tmp_path / "metrics" / "evaluate", tmp_path / "plots"
    left = [tmp_path / "metrics" / f".evaluate.{_dead_pid()}.k1ll3d.tmp", tmp_path / f".plots.{_dead_pid()}.k1ll3d.tmp"]
    for folder in left:
        (folder / "evaluate").mkdir(parents=True)
        (folder / "evaluate" / "cnn.json").write_text("{partial")
    seen = []
    monkeypatch.setattr(plots, "error_histogram", lambda path, errors: (seen.append(path), path.write_bytes(b"png")))
    val = SimpleNamespace(keypoints=np.zeros((1, 30), np.float32))
    outputs.write_outputs({}, val, None, metrics_dir, plots_dir)
    assert not any(folder.exists() for folder in left)
    # the folder was staged under this process's pid, so a run killed now would leave a removable one
    assert seen[0].parent.parent.name.startswith(f".plots.{os.getpid()}.")
    assert (plots_dir / "error_histogram.png").read_bytes() == b"png" and metrics_dir.is_dir()
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []
