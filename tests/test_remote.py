"""Cached artifacts: push a trained pipeline (a copy of the session's trained project) to a remote, pull it in a
fresh clone, retrain nothing.

Two remotes: the project's default (a local folder, no account) and S3, served by moto on 127.0.0.1.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import yaml

from fkd.models.registry import MODELS
from tests.conftest import commit_all, copy_project, dvc_log, project_env, run, stages_run

pytestmark = pytest.mark.slow

BUCKET = "fkd-dvc-cache"
#: Dummy credentials for the loopback S3 server; kept in .dvc/config.local, as a user keeps real ones.
S3_CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
TRAINING_STAGES = ("train_resnet", "train_heatmap", "train_cnn_adam", "train_cnn_sgd")  # their metrics: metrics/<name>/0/
TORCH_MODELS = tuple(f"models/{MODELS[m].file(0)}" for m in ("resnet", "heatmap"))
MODEL_FILES = (*TORCH_MODELS, "models/cnn_adam/0.keras", f"models/{MODELS['cnn'].file(0)}", "models/ensemble.json")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clone(origin: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], cwd=origin.parent, env=project_env())
    return dest


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API (moto's server) on 127.0.0.1 with an empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def add_s3_credentials(repo: Path) -> None:
    for option, value in S3_CREDENTIALS.items():
        dvc_log("remote", "modify", "--local", "s3", option, value, cwd=repo)


@pytest.fixture(scope="module")
def trained(trained_project, tmp_path_factory, s3_endpoint) -> Path:
    """Repo A: the tiny pipeline run and committed (a copy of the session's), with an S3 remote, pushed to it."""
    repo = copy_project(trained_project, tmp_path_factory.mktemp("remote") / "a")
    dvc_log("remote", "add", "s3", f"s3://{BUCKET}/fkd", cwd=repo)
    dvc_log("remote", "modify", "s3", "endpointurl", s3_endpoint, cwd=repo)
    add_s3_credentials(repo)
    commit_all(repo, "s3 remote")
    dvc_log("push", "-r", "s3", cwd=repo)
    return repo


def test_default_remote_is_a_local_folder(trained):
    """The project's default remote needs no account: push to it, pull from it in a fresh clone."""
    default = dvc_log("remote", "default", cwd=trained).strip()
    urls = dict(line.split(None, 1) for line in dvc_log("remote", "list", cwd=trained).splitlines() if line.strip())
    assert default in urls, f"no default remote in .dvc/config: {urls}"
    url = urls[default].split()[0]
    assert "://" not in url, f"default remote {default} is not a local folder: {url}"
    storage = (trained / ".dvc" / url).resolve()
    assert not storage.is_relative_to(trained), f"the default remote {storage} is inside the repo"
    dvc_log("push", cwd=trained)
    assert storage.is_dir() and any(storage.rglob("*")), "dvc push wrote nothing to the default remote"
    repo = clone(trained, trained.parent / "b")  # a sibling: the relative remote path resolves alike
    dvc_log("pull", cwd=repo)
    for path in MODEL_FILES:
        assert sha256(repo / path) == sha256(trained / path), path


def test_committed_config_holds_no_credentials(trained):
    committed = run(["git", "show", "HEAD:.dvc/config"], cwd=trained, env=project_env()).stdout
    assert "endpointurl" in committed and "secret_access_key" not in committed


def test_s3_pull_in_a_fresh_clone_restores_models_byte_identical(trained, tmp_path):
    repo = clone(trained, tmp_path / "b")
    for path in MODEL_FILES:
        assert not (repo / path).exists()
    add_s3_credentials(repo)
    dvc_log("pull", "-r", "s3", cwd=repo)
    for path in MODEL_FILES:
        assert sha256(repo / path) == sha256(trained / path), path
    assert "Data and pipelines are up to date" in dvc_log("status", cwd=repo)
    assert stages_run(dvc_log("repro", cwd=repo)) == set()


def test_repro_pull_trains_nothing(trained, tmp_path):
    repo = clone(trained, tmp_path / "c")
    add_s3_credentials(repo)
    dvc_log("remote", "default", "--local", "s3", cwd=repo)  # how a user picks another remote for themselves
    output = dvc_log("repro", "--pull", cwd=repo)
    assert stages_run(output) == set(), output
    for stage in TRAINING_STAGES:
        assert (repo / f"metrics/{stage}/0/metrics.json").read_bytes() == (trained / f"metrics/{stage}/0/metrics.json").read_bytes()

    # A change downstream of training: evaluate and submit run on pulled models, nothing retrains.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ensemble"]["weights"] = [0.5, 0.3, 0.2]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc_log("repro", "--pull", cwd=repo)
    assert stages_run(output) == {"evaluate", "submit"}, output
    for path in (*TORCH_MODELS, f"models/{MODELS['cnn'].file(0)}"):
        assert sha256(repo / path) == sha256(trained / path), path


def test_training_metrics_record_the_device(trained):
    import torch

    for stage in TRAINING_STAGES:
        device = json.loads((trained / f"metrics/{stage}/0/metrics.json").read_text()).get("device")
        assert isinstance(device, str) and device, f"{stage}: no device in its metrics"
        if stage in ("train_resnet", "train_heatmap") and not torch.cuda.is_available():
            assert device == "cpu"
