"""Byte-for-byte reproducible: the same code, params and data give the same bytes, so dvc.lock tells the truth.

* Model files: ``fkd.nn.torch_nn.save_checkpoint`` and ``fkd.models.cnn.network.save_model`` write the same bytes for the same model,
  whatever the file name, the time of day, or the process (object addresses) that saved it.
* The pipeline (the session's trained project): after ``dvc repro`` and a commit, a second ``dvc repro`` runs
  nothing and changes nothing; run timings stay out of the committed metrics. Reproducing from scratch (an empty
  cache, no outputs) gives the same dvc.lock, metrics, plots, models and submission: tests/test_fanout.py's
  machines do that, and compare every byte with this project.
"""
from __future__ import annotations

import io
import json
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, dvc_log, project_env, run, stages_run, tiny_params
from tests.test_deps import resolved_stages

TIMING_KEYS = {"train_seconds", "images_per_second"}


def zip_differences(a: bytes, b: bytes) -> str:
    """Which members of two zip archives (``.keras``, ``torch.save``) differ, for assertion messages."""
    try:
        za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
    except zipfile.BadZipFile:
        return "(not zip archives)"
    ia, ib = {i.filename: i for i in za.infolist()}, {i.filename: i for i in zb.infolist()}
    lines = []
    if list(ia) != list(ib):
        lines.append(f"member names/order differ: {list(ia)[:3]}... vs {list(ib)[:3]}...")
    for name in ia.keys() & ib.keys():
        if za.read(name) != zb.read(name):
            lines.append(f"{name}: content differs" + (f" ({za.read(name)[:300]!r} vs {zb.read(name)[:300]!r})"
                                                        if name.endswith(".json") else ""))
        if ia[name].date_time != ib[name].date_time:
            lines.append(f"{name}: timestamp {ia[name].date_time} vs {ib[name].date_time}")
    return "\n".join(lines) or "(members equal; zip headers differ)"


def assert_same_bytes(a: Path, b: Path) -> None:
    da, db = a.read_bytes(), b.read_bytes()
    assert da == db, f"{a.parent.name}/{a.name} and {b.parent.name}/{b.name} differ ({len(da)} vs {len(db)} bytes):\n{zip_differences(da, db)}"


# --- torch ------------------------------------------------------------------------------------


def tiny_resnet_checkpoint() -> tuple[dict, dict]:
    """The state dict and architecture dict of a tiny seeded ResNet, as train_torch saves them."""
    import torch

    from fkd.models.resnet.network import architecture, build

    config = architecture(tiny_params("resnet"))
    torch.manual_seed(0)
    return build(config).state_dict(), config


def test_save_checkpoint_gives_the_same_bytes_under_any_file_name(tmp_path):
    from fkd.models.resnet.network import load_model_fn
    from fkd.nn.torch_nn import save_checkpoint

    state, config = tiny_resnet_checkpoint()
    a, b = tmp_path / "a" / "resnet.safetensors", tmp_path / "b" / "other_name.safetensors"
    save_checkpoint(a, state, config)
    time.sleep(1.1)  # a timestamp, if any, would differ
    save_checkpoint(b, state, config)
    assert_same_bytes(a, b)

    images = np.random.default_rng(0).integers(0, 256, (3, 96, 96), dtype=np.uint8)
    np.testing.assert_array_equal(load_model_fn(a)(images), load_model_fn(b)(images))
    assert not list(a.parent.glob(".*.tmp*")), "save_checkpoint left its temporary file behind"


# --- keras ------------------------------------------------------------------------------------


def tiny_cnn(seed: int = 0):
    import keras

    from fkd.models.cnn.network import build_model, n_outputs

    p = tiny_params("cnn")
    keras.utils.set_random_seed(seed)
    return build_model(p, n_outputs(p.scheme_heads))


def test_save_model_gives_the_same_bytes_and_still_loads_and_predicts(tmp_path):
    from fkd.models.cnn.network import EVAL_BATCH, load_model_fn, save_model
    from fkd.core.keypoints import N_EXTENDED, widen_to_extended

    model = tiny_cnn()
    a, b = tmp_path / "a" / "cnn.keras", tmp_path / "b" / "other_name.keras"
    save_model(model, a)
    time.sleep(2.1)  # Keras records the save time (metadata.json, 1 s steps) and zip timestamps (2 s steps)
    save_model(model, b)
    assert_same_bytes(a, b)

    images = np.random.default_rng(0).integers(0, 256, (5, 96, 96), dtype=np.uint8)
    expected = model.predict(images[..., None].astype(np.float32), batch_size=EVAL_BATCH, verbose=0)
    if expected.shape[1] != 2 * N_EXTENDED:
        expected = widen_to_extended(expected)
    got_a, got_b = load_model_fn(a)(images), load_model_fn(b)(images)
    np.testing.assert_array_equal(got_a, got_b)
    np.testing.assert_allclose(got_a, expected, rtol=0, atol=1e-4)


def save_both_ways(model, folder: Path) -> list[Path]:
    """``model`` saved by :func:`fkd.models.cnn.network.save_model` (a bare clone: its config has no shared objects) and by
    Keras's own ``model.save`` rewritten by :func:`fkd.models.cnn.network.stable_keras_archive` (the built model's
    config carries ``shared_object_id`` = Python object addresses)."""
    from fkd.models.cnn.network import save_model, stable_keras_archive

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / "save_model.keras")
    model.save(folder / "raw.keras")
    (folder / "stable.keras").write_bytes(stable_keras_archive((folder / "raw.keras").read_bytes()))
    return [folder / "save_model.keras", folder / "stable.keras"]


def test_two_models_built_alike_in_one_process_save_alike(tmp_path):
    """Two model objects built alike save alike. (In one process they share Keras's global dtype policy, the
    object behind ``shared_object_id``; the next test, across processes, is the one where its address differs.)"""
    first, second = tiny_cnn(), tiny_cnn()  # both alive: their layers have different addresses
    for a, b in zip(save_both_ways(first, tmp_path / "first"), save_both_ways(second, tmp_path / "second")):
        assert_same_bytes(a, b)


BUILD_AND_SAVE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from tests.test_reproducible import save_both_ways, tiny_cnn
    save_both_ways(tiny_cnn(seed=0), Path(sys.argv[1]))
""")


def test_two_processes_save_the_same_seeded_model_to_the_same_bytes(tmp_path):
    """This process and a fresh one (other object addresses) build, seed and save alike."""
    folders = [tmp_path / "here", tmp_path / "subprocess"]
    save_both_ways(tiny_cnn(seed=0), folders[0])
    run([sys.executable, "-c", BUILD_AND_SAVE, str(folders[1])], cwd=ROOT, env=project_env())
    for name in ("save_model.keras", "stable.keras"):
        assert_same_bytes(folders[0] / name, folders[1] / name)


# --- the pipeline -----------------------------------------------------------------------------


def git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd=cwd, env=project_env()).stdout


def assert_clean(project: Path, when: str) -> None:
    """``git status`` is clean; else say which tracked files changed and how dvc.lock moved."""
    status = git("status", "--porcelain", "--untracked-files=all", cwd=project)
    if status:
        lock_diff = git("diff", "--", "dvc.lock", cwd=project)
        stat = git("diff", "--stat", cwd=project)
        pytest.fail(f"{when}: the workspace is not as committed\ngit status --porcelain:\n{status}\n"
                    f"git diff --stat:\n{stat}\ngit diff dvc.lock:\n{lock_diff[:4000]}")


def find_keys(obj, keys: set[str], path: str = "") -> list[str]:
    """JSON paths of every key in ``keys`` anywhere in ``obj``."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in keys:
                found.append(f"{path}/{k}")
            found += find_keys(v, keys, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += find_keys(v, keys, f"{path}[{i}]")
    return found


@pytest.mark.slow
def test_committed_metrics_carry_no_run_timings(trained_project):
    """Timings live in the untracked speed.json beside each training stage's metrics."""
    committed = git("ls-files", cwd=trained_project).split()
    metric_files = [f for f in committed if f.startswith("metrics/") and f.endswith(".json")]
    assert {"metrics/train_resnet/0/metrics.json", "metrics/train_cnn_adam/0/metrics.json",
            "metrics/train_cnn_sgd/0/metrics.json"} <= set(metric_files), committed
    timings = {f: keys for f in metric_files if (keys := find_keys(json.loads((trained_project / f).read_text()), TIMING_KEYS))}
    assert not timings, f"committed metrics carry run timings (they differ every run): {timings}"
    for stage in ("train_resnet", "train_cnn_adam", "train_cnn_sgd"):
        speed = f"metrics/{stage}/0/speed.json"
        assert (trained_project / speed).exists() and speed not in committed, f"{speed} should exist and stay out of git"
        assert set(json.loads((trained_project / speed).read_text())) == TIMING_KEYS


@pytest.mark.slow
def test_a_second_repro_runs_nothing_and_moves_nothing(trained_project):
    """After ``dvc repro`` and a commit, nothing changed: nothing runs, nothing moves. (A from-scratch reproduction
    compared byte for byte with this project: tests/test_fanout.py, whose machines train it again from an empty cache.)"""
    all_stages = set(resolved_stages(trained_project))
    out = dvc_log("repro", cwd=trained_project)
    assert stages_run(out) == set(), f"a repro of an unchanged pipeline ran stages:\n{out}"
    skipped = {s for s in all_stages if f"Stage '{s}' didn't change, skipping" in out}
    assert skipped == all_stages, f"DVC did not report every stage unchanged (missing {all_stages - skipped}):\n{out}"
    assert_clean(trained_project, "after a second dvc repro")
