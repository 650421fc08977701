"""Training fanned out over machines that share one DVC remote (.github/workflows/fanout.yml).

Fast checks of the workflow file: its triggers, jobs, needs and matrix, the push/pull --run-cache and
gate steps, every ``dvc`` command in it parsed by the installed DVC, its plan script run on sample
inputs, and actionlint where one is installed.

The proof, on loopback (slow): one S3 server (moto) on 127.0.0.1 and clones of one commit as machines
that run the workflow's own step scripts. A runs the unit train@resnet-* (``dvc repro --glob``), B the units
train@heatmap-* and train_cnn_sgd, S one sweep value; each pushes its outputs and its run-cache. C pulls the run-cache and
reproduces: every training stage (and every data stage) comes back from the run-cache, only evaluate
and submit run, and C's submission.csv, models and metrics are byte-identical to those of D, a single
machine that ran the whole ``dvc repro`` itself (the session's trained project, tests/conftest.py). The
gate step then passes against D's commit. A, B and C start from empty caches, so this is also the suite's
from-scratch reproduction: C's dvc.lock, metrics and plots are D's committed files, byte for byte.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fkd.models.registry import MODELS
from tests.conftest import ROOT, dvc_log, make_project, project_env, run, stages_run
from tests.test_remote import BUCKET, clone, s3_endpoint, sha256  # noqa: F401  (s3_endpoint: a fixture)

WORKFLOW = ROOT / ".github" / "workflows" / "fanout.yml"
PIPELINE = ROOT / ".github" / "workflows" / "pipeline.yml"
TRAINERS = {"train@resnet-0", "train@heatmap-0", "train_cnn_adam@0", "train_cnn_sgd@0"}  # one fold: each model's one stage
DATA_STAGES = {"download", "parse", "split"}
DEFAULT_UNITS = ["train@resnet-*", "train@heatmap-*", "train_cnn_sgd"]  # train_cnn_sgd brings train_cnn_adam
MODEL_UNITS = "train@resnet-* train@heatmap-* train_cnn_adam train_cnn_sgd"  # each model with all its folds
OUTPUTS = ("submission.csv", *(f"models/{MODELS[m].file(0)}" for m in ("resnet", "heatmap")), "models/cnn_adam/0.keras",
           f"models/{MODELS['cnn'].file(0)}", "models/ensemble.json")
PREFIX = "fanout"  # the remote's folder in the bucket
SWEEP_SETTING = "resnet.lr=0.002"  # not the base value: the sweep unit trains one model, restores the rest

#: What dvc.yaml must change for the training stages to reach the run-cache (see run_cacheable_problems).
RUN_CACHE_FIX = (
    "DVC 3.67.1 writes no run-cache entry for a stage that has a plain `outs` entry with `cache: false` "
    "(dvc/stage/__init__.py, Stage.run: `no_cache_outs` -> save(run_cache=False)); metrics and plots are "
    "exempt. In dvc.yaml, declare each training stage's dvclive folder as a plot: replace\n"
    "    outs:\n      - models/<m>\n      - metrics/<stage>/plots:\n          cache: false\n"
    "by\n"
    "    outs:\n      - models/<m>\n    plots:\n      - metrics/<stage>/plots:\n          cache: false\n"
    "in train (the matrix of resnet and heatmap), train_cnn_adam and train_cnn_sgd (dvc.lock does not change)."
)


# --- the workflow file ------------------------------------------------------------------------------


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


@pytest.fixture(scope="module")
def workflow() -> dict:
    return load(WORKFLOW)


def step(job: dict, step_id: str) -> dict:
    found = [s for s in job["steps"] if s.get("id") == step_id]
    assert len(found) == 1, f"one step with id '{step_id}' expected, found {len(found)}"
    return found[0]


def step_index(job: dict, step_id: str) -> int:
    return next(i for i, s in enumerate(job["steps"]) if s.get("id") == step_id)


def test_triggers_by_hand_with_inputs_and_by_a_pull_request_label(workflow):
    on = workflow["on"]
    inputs = on["workflow_dispatch"]["inputs"]
    assert {"units", "sweep", "runs-on", "base"} <= set(inputs), inputs
    assert inputs["units"]["default"].split() == DEFAULT_UNITS
    assert inputs["runs-on"]["default"] == "ubuntu-latest"
    assert "labeled" in on["pull_request"]["types"]
    gate = workflow["jobs"]["plan"]["if"]
    assert "workflow_dispatch" in gate and "github.event.pull_request.labels.*.name, 'fanout'" in gate
    assert workflow["permissions"] == {"contents": "read"}


def test_jobs_needs_and_the_matrix_from_the_first_job(workflow):
    jobs = workflow["jobs"]
    assert list(jobs) == ["plan", "unit", "collect"]
    plan, unit, collect = jobs["plan"], jobs["unit"], jobs["collect"]
    assert plan["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    assert plan["outputs"]["runs-on"] == "${{ steps.plan.outputs.runs-on }}"
    assert unit["needs"] == "plan"
    assert unit["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert unit["strategy"]["fail-fast"] is False
    assert unit["runs-on"] == "${{ fromJSON(needs.plan.outputs.runs-on) }}"  # a label or a list: GPU/self-hosted
    assert set(collect["needs"]) == {"plan", "unit"}
    assert collect["runs-on"] == "ubuntu-latest"


def test_remote_and_credentials_follow_pipeline_yml(workflow):
    """DVC_REMOTE from a repository variable, AWS credentials from secrets: the same names as pipeline.yml."""
    pipeline_env = load(PIPELINE)["jobs"]["pipeline"]["env"]
    keys = ("DVC_REMOTE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    for name in ("unit", "collect"):
        job = workflow["jobs"][name]
        assert {k: job["env"][k] for k in keys} == {k: pipeline_env[k] for k in keys}, name
        assert 'dvc remote default --local "$DVC_REMOTE"' in step(job, "remote")["run"], name


def test_unit_runs_one_unit_then_pushes_outputs_and_run_cache(workflow):
    unit = workflow["jobs"]["unit"]
    script = step(unit, "unit")["run"]
    assert 'dvc repro --pull --allow-missing "$UNIT_TARGET"' in script
    assert 'dvc repro --pull --allow-missing --glob "$UNIT_TARGET"' in script  # train@resnet-*: one model, all folds
    assert 'dvc exp run --pull -n "$UNIT_NAME" "${args[@]}"' in script
    assert "dvc pull --run-cache" in script.split("case")[0]  # stage runs already on the remote come back first
    assert step(unit, "push")["run"].strip() == "dvc push --run-cache"
    assert step(unit, "push-run-outputs")["run"].strip() == "python -m fkd.run_cache"
    order = [step_index(unit, i) for i in ("remote", "unit", "push", "push-run-outputs", "bundle")]
    assert order == sorted(order), order
    checkout = unit["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["fetch-depth"] == 0  # dvc exp run
    assert {unit["env"][k] for k in ("UNIT_NAME", "UNIT_KIND", "UNIT_TARGET", "UNIT_SET")} == {
        "${{ matrix.name }}", "${{ matrix.kind }}", "${{ matrix.target }}", "${{ matrix.set }}"}


def test_collect_pulls_the_run_cache_reproduces_reports_and_gates(workflow):
    collect = workflow["jobs"]["collect"]
    assert step(collect, "pull")["run"].strip().startswith("dvc pull --run-cache")
    repro = step(collect, "repro")["run"]
    assert "dvc repro --pull 2>&1" in repro and "Running stage 'train" in repro and "exit 1" in repro
    summary = step(collect, "summary")["run"]
    assert "dvc metrics show --md" in summary and "dvc exp show --md" in summary and "$GITHUB_STEP_SUMMARY" in summary
    assert 'python -m fkd.gate --baseline "$BASELINE"' in step(collect, "gate")["run"]
    assert collect["env"]["BASELINE"] == "origin/${{ github.base_ref || inputs.base || 'main' }}"
    assert collect["steps"][0]["with"]["fetch-depth"] == 0  # the baseline's commit
    order = [step_index(collect, i) for i in ("remote", "pull", "repro", "experiments", "summary", "gate")]
    assert order == sorted(order), order


def test_no_expression_is_pasted_into_a_script(workflow):
    """Inputs and event fields reach the shell through env: only (no script injection), and the loopback
    test below can run the scripts as they are."""
    for name, job in workflow["jobs"].items():
        for s in job["steps"]:
            assert "${{" not in s.get("run", ""), f"{name}: step '{s.get('name')}' pastes an expression into its script"


def dvc_commands(script: str) -> list[str]:
    """The ``dvc ...`` command lines of a shell script (continuations joined, pipes and redirections cut)."""
    lines = script.replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        line = line.strip()
        if line.startswith("dvc "):
            found.append(re.split(r"\s(?:\||2>&1|>>?|;|&&|\|\|)\s?", line)[0])
    return found


def test_every_dvc_command_parses_with_the_installed_dvc(workflow):
    from dvc.cli import DvcParserError, parse_args

    commands = [c for job in workflow["jobs"].values() for s in job["steps"] for c in dvc_commands(s.get("run", ""))]
    assert len(commands) >= 8, commands
    for command in commands:
        argv = ["X" if "$" in token else token for token in shlex.split(command)[1:]]
        try:
            parse_args(argv)
        except (DvcParserError, SystemExit) as exc:
            pytest.fail(f"dvc {' '.join(argv)}: rejected by the installed dvc ({exc!r})")
    flags = {"push --run-cache", "pull --run-cache", "repro --pull", "metrics show --md", "exp show --md", "exp run --pull"}
    missing = {f for f in flags if not any(c.startswith(f"dvc {f}") for c in commands)}
    assert not missing, missing
    for extra in (["exp", "push", "--run-cache", "origin", "NAME"], ["exp", "pull", "origin", "NAME"],
                  ["fetch", "--run-cache"], ["queue", "start", "-j", "2"]):  # named in docs/fanout.md
        parse_args(extra)


def run_plan(workflow: dict, tmp_path: Path, event: str, cwd: Path = ROOT,
             **inputs: str) -> tuple[subprocess.CompletedProcess, dict]:
    plan = step(workflow["jobs"]["plan"], "plan")
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.write_text(""), summary.write_text("")
    env = {**project_env(), "GITHUB_EVENT_NAME": event, "GITHUB_RUN_ID": "77", "GITHUB_OUTPUT": str(output),
           "GITHUB_STEP_SUMMARY": str(summary), "UNITS": "", "SWEEP": "", "RUNS_ON": "ubuntu-latest", **inputs}
    proc = subprocess.run(["bash", "-eo", "pipefail", "-c", plan["run"]], cwd=cwd, env=env, capture_output=True, text=True)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return proc, outputs


def test_plan_a_pull_request_runs_every_training_unit(workflow, tmp_path):
    proc, out = run_plan(workflow, tmp_path, "pull_request", UNITS="")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    units = json.loads(out["matrix"])["include"]
    assert [(u["kind"], u["target"]) for u in units] == [("glob", "train@resnet-*"), ("glob", "train@heatmap-*"),
                                                         ("stage", "train_cnn_sgd")] == [
        ("glob" if "*" in u else "stage", u) for u in DEFAULT_UNITS]
    assert json.loads(out["runs-on"]) == "ubuntu-latest" and out["experiments"] == ""


def test_plan_a_sweep_on_gpu_runners(workflow, tmp_path):
    proc, out = run_plan(workflow, tmp_path, "workflow_dispatch", UNITS="train@resnet-*",
                         SWEEP="resnet.lr=0.001,0.003 heatmap.lr=0.002,0.004", RUNS_ON='["self-hosted", "gpu"]')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    units = json.loads(out["matrix"])["include"]
    assert units[0] == {"name": "train@resnet-*", "kind": "glob", "target": "train@resnet-*", "set": ""}
    sweep = units[1:]
    assert [u["set"] for u in sweep] == ["resnet.lr=0.001 heatmap.lr=0.002", "resnet.lr=0.001 heatmap.lr=0.004",
                                         "resnet.lr=0.003 heatmap.lr=0.002", "resnet.lr=0.003 heatmap.lr=0.004"]
    assert out["experiments"].split() == [u["name"] for u in sweep] == [f"fanout-77-{i}" for i in (1, 2, 3, 4)]
    assert json.loads(out["runs-on"]) == ["self-hosted", "gpu"]
    assert out["sweep-keys"] == r"resnet\.lr|heatmap\.lr"


@pytest.mark.parametrize("inputs, error", [
    ({"UNITS": "train@resnet-* evaluate"}, "not a training unit of dvc.yaml: evaluate"),
    ({"UNITS": "train_resnet"}, f"not a training unit of dvc.yaml: train_resnet (training units, a model with all its "
                                f"folds: {MODEL_UNITS}; or one fold: train@resnet-0 train@heatmap-0 train_cnn_adam@0 "
                                "train_cnn_sgd@0)"),  # the stage group's name before the matrix
    ({"UNITS": "train@*"}, "not a training unit of dvc.yaml: train@*"),  # a pattern that is no model's
    ({"UNITS": "train@resnet-1"}, "not a training unit of dvc.yaml: train@resnet-1"),  # split.folds is [0]
    ({"UNITS": "", "SWEEP": "resnet.lr"}, "is not KEY=VALUE"),
    ({"UNITS": ""}, "nothing to run"),
    ({"UNITS": "train@resnet-*", "RUNS_ON": "[self-hosted"}, "runs-on: not a JSON list"),
])
def test_plan_refuses_bad_inputs(workflow, tmp_path, inputs, error):
    proc, _ = run_plan(workflow, tmp_path, "workflow_dispatch", **inputs)
    assert proc.returncode == 1 and "::error::" in proc.stdout and error in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1, proc.stdout  # one line


def test_plan_units_are_the_stages_dvc_resolves_one_model_or_one_fold(workflow, tmp_path):
    """With split.folds [0, 1, 2] (params.yaml, resolved by DVC), a unit is a model with its three folds or one
    fold of it; the fourth fold is refused with every unit listed."""
    project = make_project(tmp_path / "three", {"split": {"folds": [0, 1, 2]}})
    proc, out = run_plan(workflow, tmp_path, "workflow_dispatch", cwd=project,
                         UNITS="train@heatmap-* train@resnet-2 train_cnn_adam@1 train_cnn_sgd train@resnet-2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    units = json.loads(out["matrix"])["include"]
    assert [(u["name"], u["kind"], u["target"]) for u in units] == [
        ("train@heatmap-*", "glob", "train@heatmap-*"), ("train@resnet-2", "stage", "train@resnet-2"),
        ("train_cnn_adam@1", "stage", "train_cnn_adam@1"), ("train_cnn_sgd", "stage", "train_cnn_sgd")]
    summary = (tmp_path / "summary").read_text()
    assert "| train@heatmap-* | `dvc repro --glob 'train@heatmap-*'` |" in summary, summary
    assert "| train@resnet-2 | `dvc repro train@resnet-2` |" in summary, summary

    proc, _ = run_plan(workflow, tmp_path, "workflow_dispatch", cwd=project, UNITS="train@resnet-3")
    folds = " ".join(f"train@{m}-{k}" for m in ("resnet", "heatmap") for k in range(3))
    cnn = " ".join(f"train_cnn_{phase}@{k}" for phase in ("adam", "sgd") for k in range(3))
    assert proc.returncode == 1 and proc.stdout == (
        f"::error::not a training unit of dvc.yaml: train@resnet-3 (training units, a model with all its folds: "
        f"{MODEL_UNITS}; or one fold: {folds} {cnn})\n"), proc.stdout + proc.stderr


def test_plan_reports_a_dvc_yaml_dvc_cannot_resolve(workflow, tmp_path):
    project = make_project(tmp_path / "broken")
    dvc_yaml = project / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("fold: ${split.folds}", "fold: ${split.no_such_key}"))
    proc, _ = run_plan(workflow, tmp_path, "workflow_dispatch", cwd=project, UNITS="train@resnet-*")
    assert proc.returncode == 1 and proc.stdout.startswith("::error::dvc stage list: ") and proc.stdout.count("\n") == 1
    assert "no_such_key" in proc.stdout, proc.stdout


@pytest.mark.parametrize("log, error", [
    ("Running stage 'train@resnet-0':\nRunning stage 'train_cnn_sgd@0':\nRunning stage 'evaluate':\n",
     "::error::training stages ran here instead of coming from the run-cache: "
     "Running stage 'train@resnet-0' Running stage 'train_cnn_sgd@0'"),
    ("Stage 'train@resnet-0' is cached - skipping run, checking out outputs\nRunning stage 'evaluate':\n", None),
])
def test_collect_fails_when_a_training_stage_runs_there(workflow, tmp_path, log, error):
    """The repro step's check on DVC's log: a matrix stage (train@...) that trained fails it, as a train_... one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text('#!/bin/sh\nprintf %s "$FAKE_LOG"\n')
    (bin_dir / "dvc").chmod(0o755)
    env = {**project_env(), "RUNNER_TEMP": str(tmp_path), "FAKE_LOG": log}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    script = step(workflow["jobs"]["collect"], "repro")["run"]
    proc = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    if error:
        assert proc.returncode == 1 and error + "\n" in proc.stdout, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr


def run_cacheable_problems(dvc_yaml: Path) -> list[str]:
    """Training stages that DVC will not save to the run-cache: a plain output with ``cache: false``."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    problems = []
    for name in sorted({t.split("@")[0] for t in TRAINERS}):
        for out in stages[name].get("do", stages[name]).get("outs", []):  # foreach stages: under do
            if isinstance(out, dict):
                (path, opts), = out.items()
                if opts and opts.get("cache") is False:
                    problems.append(f"{name}: outs: {path} (cache: false)")
    return problems


def test_training_stages_can_be_saved_to_the_run_cache():
    problems = run_cacheable_problems(ROOT / "dvc.yaml")
    assert not problems, RUN_CACHE_FIX + "\nNow: " + "; ".join(problems)


# --- the proof on loopback --------------------------------------------------------------------------


def run_steps(workflow: dict, job: str, ids: list[str], repo: Path, env: dict) -> str:
    """Run the given steps of a job as GitHub's bash does (-eo pipefail), in ``repo``: their output."""
    logs = []
    for step_id in ids:
        s = step(workflow["jobs"][job], step_id)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]], cwd=repo, env=env,
                              capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise AssertionError(f"{job}/{step_id} failed ({proc.returncode}) in {repo.name}:\n{log}")
        logs.append(log)
    return "\n".join(logs)


def runner_env(tmp: Path, **extra: str) -> dict:
    """A runner's environment: the job's env (remote name, credentials as the secrets give them) and
    GitHub's files."""
    tmp.mkdir(parents=True, exist_ok=True)
    summary = tmp / "summary.md"
    summary.touch()
    return {**project_env(), "DVC_REMOTE": "s3", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "RUNNER_TEMP": str(tmp), "GITHUB_STEP_SUMMARY": str(summary), **extra}


def unit_env(tmp: Path, name: str, kind: str = "stage", target: str = "", setting: str = "") -> dict:
    return runner_env(tmp, UNIT_NAME=name, UNIT_KIND=kind, UNIT_TARGET=target or (name if kind != "sweep" else ""),
                      UNIT_SET=setting)


def cached_stages(output: str) -> set[str]:
    """The stages DVC restored from the run-cache."""
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", output))


def remote_keys(endpoint: str) -> dict[str, int]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    keys = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/"):
        keys.update({o["Key"][len(PREFIX) + 1:]: o["Size"] for o in page.get("Contents", [])})
    return keys


def lock_md5(repo: Path, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)


@pytest.mark.slow
def test_units_on_separate_machines_collect_to_the_single_machine_result(workflow, tmp_path, s3_endpoint, trained_run):
    problems = run_cacheable_problems(ROOT / "dvc.yaml")
    if problems:
        pytest.fail(RUN_CACHE_FIX + "\nNow: " + "; ".join(problems))
    env = project_env()
    origin = make_project(tmp_path / "origin")
    shutil.copy2(ROOT / "gate.yaml", origin / "gate.yaml")
    dvc_log("remote", "add", "s3", f"s3://{BUCKET}/{PREFIX}", cwd=origin)
    dvc_log("remote", "modify", "s3", "endpointurl", s3_endpoint, cwd=origin)
    run(["git", "add", "-A"], cwd=origin, env=env)
    run(["git", "commit", "-qm", "s3 remote, gate"], cwd=origin, env=env)

    # Machine A: the unit train@resnet-* (dvc repro --glob; with the data stages before it).
    a = clone(origin, tmp_path / "a")
    a_env = unit_env(tmp_path / "runner-a", "train@resnet-*", kind="glob")
    out = run_steps(workflow, "unit", ["remote", "unit"], a, a_env)
    assert stages_run(out) == DATA_STAGES | {"train@resnet-0"}, out
    run_steps(workflow, "unit", ["push"], a, a_env)
    # `dvc push --run-cache` sent the run-cache entry, but not the `cache: false` metrics it records ...
    metrics_md5 = lock_md5(a, "train@resnet-0", "metrics/train_resnet/0/metrics.json")
    metrics_key = f"files/md5/{metrics_md5[:2]}/{metrics_md5[2:]}"
    keys = remote_keys(s3_endpoint)
    assert any(k.startswith("runs/") for k in keys) and metrics_key not in keys, sorted(keys)
    # ... which the next step sends.
    out = run_steps(workflow, "unit", ["push-run-outputs"], a, a_env)
    assert metrics_key in remote_keys(s3_endpoint), out

    # Machine B: the units train@heatmap-* and train_cnn_sgd (as two runners would; one clone here).
    b = clone(origin, tmp_path / "b")
    for unit, kind, trains in (("train@heatmap-*", "glob", {"train@heatmap-0"}),
                               ("train_cnn_sgd", "stage", {"train_cnn_adam@0", "train_cnn_sgd@0"})):
        b_env = unit_env(tmp_path / f"runner-{unit.replace('*', 'all')}", unit, kind=kind)
        out = run_steps(workflow, "unit", ["remote", "unit"], b, b_env)
        assert stages_run(out) == trains, out
        if unit == "train@heatmap-*":  # B's first unit: the data stages come from A's run-cache
            assert cached_stages(out) == DATA_STAGES, out
        run_steps(workflow, "unit", ["push", "push-run-outputs"], b, b_env)

    # Machine S: one value of a sweep. Only its model trains; the other three come from the run-cache.
    s = clone(origin, tmp_path / "s")
    s_env = unit_env(tmp_path / "runner-s", "fanout-1-1", kind="sweep", setting=SWEEP_SETTING)
    out = run_steps(workflow, "unit", ["remote", "unit", "push", "push-run-outputs", "bundle"], s, s_env)
    assert stages_run(out) == {"train@resnet-0", "evaluate", "submit"}, out
    bundle = tmp_path / "runner-s" / "experiments" / "fanout-1-1.bundle"
    assert bundle.is_file(), out

    # Machine D: one machine, the whole pipeline, no remote: the result to match. Its commit is the gate's baseline.
    # The session's trained project is that machine: the same files as origin's first commit, `dvc repro`, committed.
    d = trained_run.path
    assert stages_run(trained_run.log) == DATA_STAGES | TRAINERS | {"evaluate", "submit"}, trained_run.log

    # Machine C: the collect job.
    c = clone(origin, tmp_path / "c")
    (tmp_path / "runner-c" / "experiments").mkdir(parents=True)
    shutil.copy2(bundle, tmp_path / "runner-c" / "experiments" / bundle.name)  # what download-artifact does
    run(["git", "fetch", "-q", str(d), "HEAD:refs/remotes/origin/single"], cwd=c, env=env)
    c_env = runner_env(tmp_path / "runner-c", EXPERIMENTS="fanout-1-1", SWEEP_KEYS=r"resnet\.lr", BASELINE="origin/single")
    run_steps(workflow, "collect", ["remote", "pull"], c, c_env)
    out = run_steps(workflow, "collect", ["repro"], c, c_env)
    assert stages_run(out) == {"evaluate", "submit"}, out
    assert cached_stages(out) == DATA_STAGES | TRAINERS, out  # the data stages too: restored, not re-run

    for path in OUTPUTS:
        assert sha256(c / path) == sha256(d / path), f"{path} differs from the single machine's"
    metric_files = sorted(str(p.relative_to(d)) for p in (d / "metrics").rglob("*") if p.is_file() and p.name != "speed.json")
    assert len(metric_files) > 10, metric_files
    for path in metric_files:
        assert (c / path).read_bytes() == (d / path).read_bytes(), f"{path} differs from the single machine's"

    run_steps(workflow, "collect", ["experiments", "summary"], c, c_env)
    summary = Path(c_env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "metrics/train_resnet/0/metrics.json" in summary and "metrics/evaluate/ensemble.json" in summary, summary
    sweep_rows = [line for line in summary.splitlines() if "fanout-1-1" in line]
    assert sweep_rows and "0.002" in sweep_rows[0] and "resnet.lr" in summary, summary
    out = run_steps(workflow, "collect", ["gate"], c, c_env)  # fails the test if the gate fails
    assert "origin/single" in out, out

    # From scratch (A, B and C had empty caches; every stage ran on one of them), the same bytes as D's commit:
    # C's work tree differs from it only by what origin added (the S3 remote, gate.yaml).
    run(["git", "add", "-A"], cwd=c, env=env)
    differs = run(["git", "diff", "--cached", "--name-only", "origin/single"], cwd=c, env=env).stdout.split()
    assert set(differs) == {".dvc/config", "gate.yaml"}, run(["git", "diff", "--cached", "--stat", "origin/single"], cwd=c, env=env).stdout

    keys = remote_keys(s3_endpoint)
    runs = [k for k in keys if k.startswith("runs/")]
    files = {k: v for k, v in keys.items() if k.startswith("files/")}
    print(f"\nremote: {len(runs)} run-cache entries ({sum(keys[k] for k in runs):,} bytes), "
          f"{len(files)} objects ({sum(files.values()):,} bytes)")
