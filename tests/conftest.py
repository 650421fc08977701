"""Shared fixtures: small synthetic data made on the fly, a temporary DVC project, and one tiny trained
project per test session (``trained_project``, read-only; ``trained_copy`` for a test that changes it)."""
from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fkd.core.config import deep_update, load_params

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["fkd", "stages", "competition", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore", ".gitignore"]


#: Overrides that make every stage tiny: CI may run on a machine doing ~15 img/s.
TINY_PARAMS = {
    "synthetic": {"n_train": 48, "n_test": 6},
    "resnet": {"epochs": 1, "batch_size": 16, "widths": [16, 16], "stem_channels": 16, "blocks_per_stage": 1, "threads": 1},
    "heatmap": {"epochs": 1, "batch_size": 16, "widths": [16, 16, 16, 16], "decoder_channels": 8, "threads": 1},
    "cnn": {"filters": [4, 8, 8], "dense": [16, 16], "threads": 1, "adam": {"epochs": 1}, "sgd": {"epochs": 1}},
    "evaluate": {"grid_faces": 4, "worst_faces": 2},
}


def tiny_params(section: str, **overrides):
    """Section ``section`` of params.yaml with :data:`TINY_PARAMS` and then ``overrides`` merged in, checked like the file."""
    merged = deep_update(copy.deepcopy(TINY_PARAMS.get(section, {})), overrides)
    return getattr(load_params(section, path=ROOT / "params.yaml", overrides={section: merged}), section)


#: The longest one command of a test may take: a hung ``dvc`` (its experiment queue has known hangs) fails its
#: test with what it printed instead of holding CI to its time limit.
COMMAND_TIMEOUT_S = 900


def kill_group(popen: subprocess.Popen) -> None:
    """SIGKILL the process group that ``popen`` leads (it was started with ``start_new_session``); one that has
    already exited is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a command, returning its output; on failure the assertion shows stdout and stderr. Past ``timeout``
    seconds the command and every process it started (its process group) are killed, and the test fails."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as popen:
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(popen)
            try:
                stdout, stderr = popen.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # a process outside the group still holds the pipes
                stdout, stderr = "", "(its output could not be read)"
            raise AssertionError(f"{' '.join(map(str, cmd))} did not finish in {timeout:.0f} s and was killed:\n"
                                 f"{stdout}\n{stderr}") from None
        except BaseException:  # Ctrl-C, or pytest-timeout's limit: the group is outside the terminal's signals
            kill_group(popen)
            raise
    proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the real ``dvc`` of this environment in ``cwd``."""
    return run([str(Path(sys.executable).with_name("dvc")), *args], cwd=cwd, check=check, env=project_env(), timeout=timeout)


def dvc_log(*args: str, cwd: Path, timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Run the real ``dvc`` in ``cwd`` (must succeed); returns stdout and stderr together."""
    proc = dvc(*args, cwd=cwd, timeout=timeout)
    return proc.stdout + proc.stderr


def stages_run(output: str) -> set[str]:
    """The stages dvc reports as executed ("Running stage 'x'")."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def project_env() -> dict:
    """Environment for subprocesses: this venv's bin first on PATH, so dvc.yaml's `python` is ours."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"  # loopback servers, never a proxy
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    return env


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the pipeline into ``dest`` as a fresh git+DVC repo with tiny params, committed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, TINY_PARAMS)
    deep_update(params, overrides or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = project_env()
    run(["git", "init", "-q", "-b", "main"], cwd=dest, env=env)
    run(["git", "add", "-A"], cwd=dest, env=env)
    run(["git", "commit", "-q", "-m", "init"], cwd=dest, env=env)
    return dest


def commit_all(repo: Path, message: str) -> None:
    """``git add -A`` and ``git commit`` in ``repo``."""
    run(["git", "add", "-A"], cwd=repo, env=project_env())
    run(["git", "commit", "-q", "-m", message], cwd=repo, env=project_env())


def copy_project(src: Path, dest: Path) -> Path:
    """A full copy of the repo ``src`` (work tree, .git, .dvc/cache) at ``dest``: cheap at TINY_PARAMS' size."""
    dvc_tmp = src / ".dvc" / "tmp"  # dvc's locks and scratch files: the copy makes its own

    def skip(folder: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(folder) == dvc_tmp.parent else []

    shutil.copytree(src, dest, symlinks=True, ignore=skip)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A temporary git+DVC copy of this pipeline with tiny params."""
    return make_project(tmp_path / "project")


@dataclass(frozen=True)
class TrainedRun:
    """The session's one from-scratch ``dvc repro`` of the tiny pipeline."""

    path: Path  # the repo: committed after the repro ("trained"), its parent "init" the untrained project
    log: str  # dvc repro's stdout and stderr


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """``make_project`` + ``dvc repro`` + commit, once per session (the slow lane's only full training run
    besides the fan-out test's machines)."""
    repo = make_project(tmp_path_factory.mktemp("trained") / "project")
    log = dvc_log("repro", cwd=repo)
    commit_all(repo, "trained")
    return TrainedRun(repo, log)


@pytest.fixture(scope="session")
def trained_project(trained_run: TrainedRun) -> Path:
    """The trained tiny project, shared: read it, run read-only dvc commands in it, never change it
    (use ``trained_copy`` for that)."""
    return trained_run.path


@pytest.fixture
def trained_copy(trained_project: Path, tmp_path: Path) -> Path:
    """A private copy of ``trained_project`` (git history, DVC cache and outputs) to change."""
    return copy_project(trained_project, tmp_path / "project")


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A small synthetic competition download (training.csv, test.csv, IdLookupTable.csv)."""
    from fkd.sources.synthetic import write_dataset

    out = tmp_path_factory.mktemp("raw")
    write_dataset(out, n_train=120, n_test=12, partial_fraction=0.7, seed=1)
    return out


@pytest.fixture(scope="session")
def split_dir(synthetic_raw: Path, tmp_path_factory) -> Path:
    """``synthetic_raw`` parsed and split like the pipeline does."""
    from fkd.core.data import parse_raw, write_split

    prepared = tmp_path_factory.mktemp("prepared")
    parse_raw(synthetic_raw, prepared)
    out = tmp_path_factory.mktemp("split")
    write_split(prepared, out, val_fraction=0.25, seed=0)
    return out
