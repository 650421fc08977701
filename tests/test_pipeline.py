"""The whole graph, end to end, through real dvc and git on tiny synthetic data."""
import json

import pandas as pd
import pytest

from tests.conftest import dvc, run, project_env

#: With the default single fold, each training stage is the one stage its foreach makes: <name>@0.
STAGES = ["download", "parse", "split", "train_resnet@0", "train_heatmap@0", "train_cnn_adam@0", "train_cnn_sgd@0", "evaluate", "submit"]


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_and_leaves_a_clean_state(project):
    out = dvc("repro", cwd=project).stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out

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
    # a second repro runs nothing; the lock file records every stage
    assert "Running stage" not in dvc("repro", cwd=project).stdout
    lock = (project / "dvc.lock").read_text()
    assert all(f"  {stage}:" in lock for stage in STAGES)
    run(["git", "add", "-A"], cwd=project, env=project_env())
    run(["git", "commit", "-qm", "run"], cwd=project, env=project_env())
    html = dvc("plots", "show", "-o", "plots_html", cwd=project)
    assert (project / "plots_html/index.html").exists(), html.stdout
