"""A fourth model as a plugin: a folder with the contract module, one registry entry, its params section and its
train matrix entry (plus its model folder in evaluate's and submit's deps) are all it takes; real ``dvc`` then trains
only it, evaluates and submits it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open

from tests.conftest import commit_all, dvc_log, run, stages_run

#: The contract of docs/models.md "Adding a model", with no framework: the training rows' mean shape plus a linear
#: correction on each face's mean brightness, saved as safetensors (loading it runs no code). The suffix is
#: ``.safetensors`` because the ``train`` matrix's out path in dvc.yaml is ``models/<name>/<fold>.safetensors``.
TINY = '''"""tiny: the training rows' mean shape plus a linear correction on each face's mean brightness (numpy only)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from fkd.core.errors import ModelFileError
from fkd.core.io import save_bytes
from fkd.core.keypoints import masked_rmse, to_extended
from fkd.core.schema import NonNegative
from fkd.nn.train_result import TrainResult

SUFFIX = ".safetensors"


@dataclass(frozen=True)
class Params:  # params.yaml's section "tiny"
    ridge: NonNegative  # shrinks the brightness slope, not the mean shape


def features(images) -> np.ndarray:
    """(N, 2): a constant and the face's mean brightness in [-1, 1]."""
    x = np.asarray(images, dtype=np.float64).mean(axis=(1, 2)) / 127.5 - 1
    return np.stack([np.ones_like(x), x], axis=1)


def build(p: Params) -> np.ndarray:
    """The untrained coefficients (2, 34)."""
    return np.zeros((2, 34))


def fit(train, val, p: Params, model_path, live=None):
    start = time.perf_counter()
    x, y, coef = features(train.images), to_extended(train.keypoints).astype(np.float64), build(p)
    for j in range(y.shape[1]):  # each coordinate on the rows that label it
        rows = np.isfinite(y[:, j])
        a = x[rows].T @ x[rows] + p.ridge * np.diag([0.0, 1.0])
        coef[:, j] = np.linalg.lstsq(a, x[rows].T @ y[rows, j], rcond=None)[0]
    val_rmse = masked_rmse(features(val.images) @ coef, to_extended(val.keypoints))
    save_bytes(model_path, save({"coef": coef}, metadata={"model": "tiny"}))
    if live is not None:  # dvc.yaml declares the stage's plots folder: log one step
        live.log_metric("val_rmse", val_rmse)
        live.next_step()
    seconds = time.perf_counter() - start
    return TrainResult(val_rmse, 1, 1, seconds, len(train.images) / seconds, "cpu", "fp32")


def load(path):
    coef = load_file(Path(path)).get("coef")  # a damaged file: the registry's loader names it in one line
    if coef is None or coef.shape != (2, 34):
        raise ModelFileError(f"{path}: holds no tiny coefficients (2, 34); rebuild it with `dvc repro`")
    return lambda images: features(images) @ coef
'''


def add_tiny(repo: Path) -> None:
    """Every edit a new model needs, and nothing else."""
    (repo / "fkd/models/tiny").mkdir()
    (repo / "fkd/models/tiny/__init__.py").write_text(TINY)
    edit(repo / "fkd/models/registry.py", "from fkd.models import cnn, heatmap, resnet\n",
         "from fkd.models import cnn, heatmap, resnet, tiny\n")
    edit(repo / "fkd/models/registry.py", "    ModelSpec(cnn),\n", "    ModelSpec(cnn),\n    ModelSpec(tiny),\n")
    with (repo / "params.yaml").open("a") as f:
        f.write("tiny:\n  ridge: 1.0\n")
    edit(repo / "dvc.yaml", "model: [resnet, heatmap]\n", "model: [resnet, heatmap, tiny]\n")
    edit(repo / "dvc.yaml", "      - models/heatmap\n", "      - models/heatmap\n      - models/tiny\n", count=2)  # evaluate, submit


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert text.count(old) == count, f"{path.name}: expected {count} x {old!r}"
    path.write_text(text.replace(old, new))


def touched(repo: Path) -> dict[str, tuple[int, int]]:
    """Path -> (lines added, lines removed) of the work tree against HEAD, new files included."""
    run(["git", "add", "-A", "--intent-to-add"], cwd=repo)
    out = run(["git", "diff", "--numstat"], cwd=repo).stdout
    return {path: (int(added), int(removed)) for added, removed, path in (line.split("\t") for line in out.splitlines())}


@pytest.mark.slow
def test_a_fourth_model_is_a_folder_one_registry_entry_a_params_section_and_a_matrix_entry(trained_copy):
    add_tiny(trained_copy)
    lines = touched(trained_copy)
    print("\nfiles and lines a new model touches (added, removed):")
    for path, (added, removed) in lines.items():
        print(f"  {path}: +{added} -{removed}")
    assert lines == {"dvc.yaml": (3, 1), "fkd/models/registry.py": (2, 1), "fkd/models/tiny/__init__.py": (56, 0),
                     "params.yaml": (2, 0)}
    commit_all(trained_copy, "tiny model")

    log = dvc_log("repro", cwd=trained_copy)
    assert stages_run(log) == {"train@tiny-0", "evaluate", "submit"}, log  # no other model retrains
    metrics = json.loads((trained_copy / "metrics/evaluate/tiny.json").read_text())
    assert math.isfinite(metrics["rmse"]) and metrics["rmse"] > 0
    assert safe_open(trained_copy / "models/tiny/0.safetensors", "np").metadata() == {"model": "tiny"}
    assert "up to date" in dvc_log("status", cwd=trained_copy)
    commit_all(trained_copy, "tiny trained")

    ensemble_csv = (trained_copy / "submission.csv").read_text()
    log = dvc_log("exp", "run", "-S", "submit.model=tiny", cwd=trained_copy)
    assert stages_run(log) == {"submit"}, log
    assert "model tiny + TTA: flip, turns [-5.0, 5.0]" in log
    submission = (trained_copy / "submission.csv").read_text()
    rows, ensemble_rows = submission.splitlines(), ensemble_csv.splitlines()
    assert rows[0] == ensemble_rows[0] and len(rows) == len(ensemble_rows) and rows != ensemble_rows  # tiny's locations

    log = dvc_log("exp", "run", "-S", "submit.model=ensemble", "-S", "ensemble.members=[resnet,tiny]", cwd=trained_copy)
    assert stages_run(log) == {"evaluate", "submit"}, log  # an ensemble member too: refitted, nothing retrains
    assert json.loads((trained_copy / "models/ensemble.json").read_text())["members"] == ["resnet", "tiny"]
    assert "model ensemble + TTA: flip, turns [-5.0, 5.0]" in log
