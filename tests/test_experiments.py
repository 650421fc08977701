"""DVC experiments on the tiny pipeline: each param re-runs exactly its stages, sweeps run from the queue,
and exp show / params diff / metrics diff report what changed. Which stages ran is read from DVC's own
output ("Running stage 'x'"), in the workspace run and in each queued experiment's log."""
from __future__ import annotations

import csv
import io
import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import commit_all, copy_project, dvc, dvc_log, project_env, run, stages_run
from tests.test_download import _zip_bytes, kaggle_layout

pytestmark = pytest.mark.slow

DOWNSTREAM = {"evaluate", "submit"}
TRAINERS = {"train@resnet-0", "train@heatmap-0", "train_cnn_adam@0", "train_cnn_sgd@0"}  # one fold
ALL_STAGES = {"download", "parse", "split"} | TRAINERS | DOWNSTREAM
#: The experiments run once per module: name -> (the -S setting, the stages it must run and no others).
SINGLE_PARAM_EXPERIMENTS = {
    "resnet-lr": ("resnet.lr=0.002", {"train@resnet-0"} | DOWNSTREAM),
    "heatmap-lr": ("heatmap.lr=0.002", {"train@heatmap-0"} | DOWNSTREAM),
    "sgd-lr": ("cnn.sgd.lr=0.002", {"train_cnn_sgd@0"} | DOWNSTREAM),
    "split-seed": ("split.seed=7", {"split"} | TRAINERS | DOWNSTREAM),
}
SWEEP_LRS = (0.001, 0.004)  # neither is the baseline's resnet.lr, so both must train
#: The README's readable `dvc exp show`: the params you sweep and the RMSEs, nothing else.
EXP_SHOW_COLUMNS = [
    "--drop", ".*", "--keep",
    r"Experiment|(resnet|heatmap)\.lr|cnn\.(adam|sgd)\.lr|split\.seed|metrics/evaluate/(resnet|heatmap|cnn|ensemble)\.json:rmse$|.*best_val_rmse",
]


@pytest.fixture(scope="module")
def baseline(trained_project, tmp_path_factory) -> Path:
    """The tiny pipeline on a local competition zip (in competition/, added with `dvc add`, as README says),
    reproduced and committed: experiments, the queued sweep included, start from this commit. It is a copy of the
    session's trained project, whose drawn faces the zip holds: only the download side re-runs."""
    from fkd.sources.synthetic import write_dataset

    repo = copy_project(trained_project, tmp_path_factory.mktemp("experiments") / "project")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["source"] = "local"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    csv_dir = tmp_path_factory.mktemp("local_csv")
    write_dataset(csv_dir, **params["synthetic"])
    (repo / "competition" / "facial-keypoints-detection.zip").write_bytes(_zip_bytes(kaggle_layout(csv_dir)))
    dvc_log("add", "competition/facial-keypoints-detection.zip", cwd=repo)
    output = dvc_log("repro", cwd=repo)
    # download reads the zip; parse re-runs (data/raw lost the drawn faces' answers file) and writes the same arrays
    assert stages_run(output) == {"download", "parse"}, output
    assert all(f"Stage '{stage}' didn't change, skipping" in output for stage in ALL_STAGES - {"download", "parse"}), output
    commit_all(repo, "baseline")
    return repo


@pytest.fixture(scope="module")
def single_runs(baseline) -> dict[str, str]:
    """One `dvc exp run --temp -S ...` per entry of SINGLE_PARAM_EXPERIMENTS: name -> its output."""
    return {name: dvc_log("exp", "run", "--temp", "-n", name, "-S", setting, cwd=baseline)
            for name, (setting, _) in SINGLE_PARAM_EXPERIMENTS.items()}


def exp_table(repo: Path, *args: str) -> list[dict[str, str]]:
    """`dvc exp show --csv ARGS` as rows of column -> value."""
    return list(csv.DictReader(io.StringIO(run([str(Path(sys.executable).with_name("dvc")), "exp", "show", "--csv", *args],
                                               cwd=repo, env=project_env()).stdout)))


#: Longer than the tiny sweep takes on CI's slowest machine (about a minute here); a queue that hangs (dvc
#: #10398) fails the sweep's tests with the workers' logs instead of holding CI to its time limit.
QUEUE_TIMEOUT_S = 900


def worker_logs(repo: Path) -> str:
    """The queue workers' own logs (dvc writes them beside its celery broker), for a failure message."""
    return "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-4000:]}"
                     for log in sorted((repo / ".dvc/tmp/exps/celery").glob("*.out")))


@pytest.fixture(scope="module")
def sweep(baseline) -> dict[float, str]:
    """A queued sweep over resnet.lr run two at a time: lr -> experiment name. A sweep that fails or hangs
    leaves no worker running: they are stopped, and what they still run killed."""
    before = {row["Experiment"] for row in exp_table(baseline)}
    dvc_log("exp", "run", "--queue", "-S", "resnet.lr=" + ",".join(map(str, SWEEP_LRS)), cwd=baseline)
    try:
        # docs/sharing.md "Queue workers": N background workers, threads per job so that jobs x threads <= cores
        # (TINY_PARAMS train with 1 thread each: 2 jobs x 1 thread on CI's 2 cores).
        dvc_log("queue", "start", "-j", "2", cwd=baseline)
        deadline = time.monotonic() + QUEUE_TIMEOUT_S
        while re.search(r"\b(Queued|Running)\b", status := dvc_log("queue", "status", cwd=baseline, timeout=120)):
            assert time.monotonic() < deadline, (f"the queue did not finish in {QUEUE_TIMEOUT_S} s:\n{status}\n"
                                                 f"{worker_logs(baseline)}")
            time.sleep(2)
        dvc_log("queue", "stop", cwd=baseline, timeout=120)  # the idle workers
    except BaseException:
        dvc("queue", "stop", "--kill", cwd=baseline, check=False, timeout=120)
        raise
    rows = [r for r in exp_table(baseline, "--drop", ".*", "--keep", r"Experiment|resnet\.lr") if r["Experiment"] not in before]
    return {float(r["resnet.lr"]): r["Experiment"] for r in rows}


@pytest.mark.parametrize("name", SINGLE_PARAM_EXPERIMENTS)
def test_a_param_reruns_exactly_its_stages(single_runs, name):
    _, expected = SINGLE_PARAM_EXPERIMENTS[name]
    output = single_runs[name]
    assert stages_run(output) == expected, output
    for stage in ALL_STAGES - expected:
        assert f"Stage '{stage}' didn't change, skipping" in output


def test_temp_experiments_leave_the_workspace_alone(single_runs, baseline):
    assert "Data and pipelines are up to date" in dvc_log("status", cwd=baseline)


def test_queued_sweep_runs_each_value_and_only_the_resnet_side(sweep, baseline):
    assert sorted(sweep) == sorted(SWEEP_LRS), sweep
    status = dvc_log("queue", "status", cwd=baseline)
    for name in sweep.values():
        assert re.search(rf"{re.escape(name)}\s.*Success", status), status
        log = dvc_log("queue", "logs", name, cwd=baseline)
        assert stages_run(log) == {"train@resnet-0"} | DOWNSTREAM, log


def test_params_and_metrics_diff_between_two_experiments(sweep, baseline):
    a, b = (sweep[lr] for lr in SWEEP_LRS)
    params = json.loads(dvc_log("params", "diff", a, b, "--json", cwd=baseline))
    assert params == {"params.yaml": {"resnet.lr": {"old": SWEEP_LRS[0], "new": SWEEP_LRS[1], "diff": pytest.approx(0.003)}}}
    metrics = json.loads(dvc_log("metrics", "diff", a, b, "--json", cwd=baseline))
    assert "rmse" in metrics["metrics/evaluate/resnet.json"]
    assert "best_val_rmse" in metrics["metrics/train_resnet/0/metrics.json"]
    # The CNN did not re-run: its training metrics are the same files in both experiments.
    assert not {"metrics/train_cnn_adam/0/metrics.json", "metrics/train_cnn_sgd/0/metrics.json"} & set(metrics)
    header = dvc_log("metrics", "diff", a, b, "--md", cwd=baseline).splitlines()[0]
    assert a in header and b in header


def test_exp_show_has_readable_columns_for_every_experiment(single_runs, sweep, baseline):
    rows = exp_table(baseline, *EXP_SHOW_COLUMNS)
    columns = set(rows[0])
    expected_metrics = {f"metrics/evaluate/{m}.json:rmse" for m in ("resnet", "heatmap", "cnn", "ensemble")}
    expected_metrics |= {f"metrics/{folder}/0/metrics.json:best_val_rmse"
                         for folder in ("train_resnet", "train_heatmap", "train_cnn_adam", "train_cnn_sgd")}
    assert expected_metrics | {"resnet.lr", "heatmap.lr", "cnn.adam.lr", "cnn.sgd.lr", "split.seed"} <= columns, columns
    assert not any("seconds" in c or c.endswith(":lr") for c in columns), columns
    by_name = {r["Experiment"]: r for r in rows}
    assert set(SINGLE_PARAM_EXPERIMENTS) | set(sweep.values()) <= set(by_name)
    assert by_name["sgd-lr"]["cnn.sgd.lr"] == "0.002" and by_name["split-seed"]["split.seed"] == "7"
    for name in by_name.keys() - {""}:
        assert all(by_name[name][m] not in ("", "-") for m in expected_metrics), by_name[name]
    print(dvc_log("exp", "show", "--md", *EXP_SHOW_COLUMNS, cwd=baseline))  # shown with pytest -s
