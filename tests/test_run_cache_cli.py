"""``python -m fkd.run_cache``: a real argument parser, and a remote that cannot be used is one line (exit 2)."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, dvc, project_env, run

#: One stage with a cached output and a ``cache: false`` metric, as the training stages have.
STAGE = {"stages": {"count": {
    "cmd": "cp in.txt out.txt && echo '{\"n\": 1}' > m.json",
    "deps": ["in.txt"], "outs": ["out.txt"], "metrics": [{"m.json": {"cache": False}}],
}}}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def endpoint() -> str:
    return f"http://127.0.0.1:{closed_port()}"


@pytest.fixture
def repo(tmp_path: Path, endpoint: str) -> Path:
    """A git+DVC repo with one run-cache entry and a default S3 remote on a closed loopback port (fake credentials)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], cwd=repo, env=project_env())
    dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(STAGE))
    (repo / "in.txt").write_text("in\n")
    dvc("repro", cwd=repo)
    with open(repo / ".dvc/config", "a") as config:  # what `dvc remote add -d` / `modify` write, without a dvc call each
        config.write(f'[core]\n    remote = dead\n[\'remote "dead"\']\n    url = s3://bucket/fkd\n    endpointurl = {endpoint}\n'
                     "    connect_timeout = 1\n    read_timeout = 1\n")
    (repo / ".dvc/config.local").write_text('[\'remote "dead"\']\n    access_key_id = fake\n    secret_access_key = fake\n')
    assert list((repo / ".dvc/cache/runs").glob("*/*/*")), "dvc repro saved no run-cache entry"
    return repo


def run_cache(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """The command in ``repo``, with no AWS credentials but the repo's own, one attempt per request."""
    env = {k: v for k, v in project_env().items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(ROOT), AWS_MAX_ATTEMPTS="1", AWS_EC2_METADATA_DISABLED="true",
               AWS_SHARED_CREDENTIALS_FILE=str(repo / "no-such-file"), AWS_CONFIG_FILE=str(repo / "no-such-file"))
    return subprocess.run([sys.executable, "-m", "fkd.run_cache", *args], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)


def test_an_unreachable_remote_is_one_line_naming_it(repo, endpoint):
    proc = run_cache(repo)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: run-cache: cannot push to remote 'dead' (s3://bucket/fkd): Could not connect to the endpoint URL: "
                           f'"{endpoint}/'), line
    assert "dvc remote modify --local dead" in line

    (repo / ".dvc/config.local").unlink()  # no credentials at all
    proc = run_cache(repo)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: run-cache: cannot push to remote 'dead' (s3://bucket/fkd): Unable to locate credentials; check its url, "
        "endpointurl and credentials (dvc remote modify --local dead ...) and that it can be reached, then run this again"], proc.stderr


def test_remote_picks_the_remote_and_an_unknown_one_is_refused(repo, tmp_path):
    storage = tmp_path / "storage"
    with open(repo / ".dvc/config", "a") as config:
        config.write(f'[\'remote "folder"\']\n    url = {storage}\n')
    proc = run_cache(repo, "-r", "nosuch")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "error: run-cache: config file error: remote 'nosuch' doesn't exist (dvc remote list shows the remotes)"], proc.stderr

    proc = run_cache(repo, "--remote", "folder")  # not the default (the dead one)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "run-cache: 1 entries; 2 of the objects they name are here: 2 uploaded, 0 failed\n"
    assert len([p for p in storage.rglob("*") if p.is_file()]) == 2  # out.txt and m.json


def test_arguments_it_does_not_take_are_refused(repo):
    proc = run_cache(repo, "nosuch", "--jobs", "4")
    assert proc.returncode == 2 and "unrecognized arguments: nosuch --jobs 4" in proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    proc = run_cache(repo, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m fkd.run_cache [-h] [-r NAME]")
