"""The whole graph, end to end, through real dvc and git on tiny synthetic data: the session's one trained
project (tests/conftest.py ``trained_run``), read only."""
import json

import numpy as np
import pandas as pd
import pytest

from fkd.core.data import load_fold
from fkd.models.registry import MODELS
from tests.conftest import dvc, dvc_log, run, stages_run
from tests.test_deps import resolved_stages

pytestmark = pytest.mark.slow

#: With the default single fold, each training stage is the one stage its foreach makes: <name>@0.
STAGES = ["download", "parse", "split", "train@resnet-0", "train@heatmap-0", "train_cnn_adam@0", "train_cnn_sgd@0", "evaluate", "submit"]


def test_dvc_repro_runs_every_stage_and_leaves_a_clean_state(trained_run, tmp_path):
    project, out = trained_run.path, trained_run.log
    assert stages_run(out) == set(resolved_stages(project)) == set(STAGES), out  # as DVC names them (group@key)

    submission = pd.read_csv(project / "submission.csv")
    lookup = pd.read_csv(project / "data/raw/IdLookupTable.csv")
    assert list(submission.columns) == ["RowId", "Location"]
    assert submission.RowId.tolist() == lookup.RowId.tolist()
    assert submission.Location.between(0, 96).all()

    metrics = json.loads(dvc("metrics", "show", "--json", cwd=project).stdout)
    files = next(iter(metrics.values()))["data"]
    assert {"metrics/train_resnet/0/metrics.json", "metrics/train_cnn_sgd/0/metrics.json"} <= set(files)
    assert (project / "metrics/evaluate/ensemble.json").exists()
    assert any((project / "plots/faces").glob("*.png"))

    assert "Data and pipelines are up to date" in dvc("status", cwd=project).stdout
    lock = (project / "dvc.lock").read_text()
    assert all(f"  {stage}:" in lock for stage in STAGES)
    html = dvc("plots", "show", "-o", str(tmp_path / "plots_html"), cwd=project)  # outside: the project stays as committed
    assert (tmp_path / "plots_html/index.html").exists(), html.stdout


def test_torch_trainers_write_metrics_curves_and_their_model(trained_project):
    """Was tests/test_resnet.py::test_stage_runs_through_dvc_repro (its own partial repro)."""
    for name in ("resnet", "heatmap"):
        metrics = json.loads((trained_project / f"metrics/train_{name}/0/metrics.json").read_text())
        assert metrics["epochs_run"] == 1 and metrics["device"] == "cpu" and metrics["best_val_rmse"] > 0
        assert (trained_project / f"metrics/train_{name}/0/plots/metrics/val_rmse.tsv").exists()
        assert (trained_project / "models" / MODELS[name].file(0)).is_file()
    assert "Data and pipelines are up to date" in dvc("status", "train@resnet-0", cwd=trained_project).stdout


def test_both_cnn_phases_write_metrics_curves_speed_and_a_model(trained_run):
    """Was tests/test_cnn.py::test_both_phases_run_through_dvc_repro (its own partial repro)."""
    project = trained_run.path
    assert "epoch   1/1" in trained_run.log
    adam = json.loads((project / "metrics/train_cnn_adam/0/metrics.json").read_text())
    sgd = json.loads((project / "metrics/train_cnn_sgd/0/metrics.json").read_text())
    for m in (adam, sgd):
        assert m["epochs_run"] == 1 and m["best_epoch"] == 1 and m["device"] == "cpu"
        assert 0 < m["best_val_rmse"] < 96 and "images_per_second" not in m and "train_seconds" not in m  # not reproducible
    for stage in ("train_cnn_adam", "train_cnn_sgd"):  # speed goes beside the metrics, untracked by git
        speed = json.loads((project / f"metrics/{stage}/0/speed.json").read_text())
        assert speed["images_per_second"] > 0 and speed["train_seconds"] > 0
        assert run(["git", "check-ignore", "-q", f"metrics/{stage}/0/speed.json"], cwd=project, check=False).returncode == 0
    assert sgd["adam_val_rmse"] == pytest.approx(adam["best_val_rmse"], rel=1e-4)
    assert sgd["improved_on_adam"] == (sgd["best_val_rmse"] < sgd["adam_val_rmse"])
    for stage in ("train_cnn_adam", "train_cnn_sgd"):
        for name in ("train_loss", "val_loss", "val_rmse", "lr"):
            rows = (project / f"metrics/{stage}/0/plots/metrics/{name}.tsv").read_text().splitlines()
            assert len(rows) == 2  # header + one epoch
    pred = MODELS["cnn"].load(project / "models" / MODELS["cnn"].file(0))(load_fold(project / "data/split")[1].images)
    assert pred.shape[1] == 34 and np.isfinite(pred).all()
    assert "up to date" in dvc_log("status", "train_cnn_sgd", cwd=project)
