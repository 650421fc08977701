"""k-fold cross-validation: the split's folds, each fold's two parts, out-of-fold evaluation, fold
averaging for submit, and the per-fold stages DVC generates from ``split.folds``."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from fkd.core.config import ParamsError, load_params, parse_params, to_dict
from fkd.core.data import DataError, Part, fold_assignment, load_fold, split_indices, write_split
from fkd.core.keypoints import N_EXTENDED, complete_mask, to_extended
from fkd.models.registry import MODELS
from tests.conftest import ROOT, commit_all, copy_project, dvc, dvc_log, project_env, run, stages_run


def _keypoints(n: int, seed: int = 0) -> np.ndarray:
    """``n`` label rows, about 70 % of them partial (only the 4 scheme-B points), like Kaggle's."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(10, 80, (n, 30)).astype(np.float32)
    partial = rng.random(n) < 0.7
    keep = np.zeros(30, bool)
    keep[[0, 1, 2, 3, 20, 21, 28, 29]] = True  # eye centres, nose tip, bottom lip
    kp[np.ix_(partial, ~keep)] = np.nan
    return kp


def _prepared(tmp_path, n: int = 23):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    rng = np.random.default_rng(1)
    np.save(prepared / "train_images.npy", rng.integers(0, 255, (n, 96, 96), dtype=np.uint8))
    np.save(prepared / "train_keypoints.npy", _keypoints(n))
    return prepared


def test_k_folds_cover_every_row_once_balanced_and_stratified():
    kp = _keypoints(103)
    fold = fold_assignment(kp, 5, 0.2, seed=1)
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]  # no row is training-only
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 1
    complete = np.bincount(fold[complete_mask(kp)], minlength=5)
    assert complete.max() - complete.min() <= 1  # complete rows spread evenly too
    assert np.array_equal(fold, fold_assignment(kp, 5, 0.2, seed=1))
    assert not np.array_equal(fold, fold_assignment(kp, 5, 0.2, seed=2))


def test_one_fold_is_the_hold_out_of_val_fraction():
    kp = _keypoints(40)
    fold = fold_assignment(kp, 1, 0.25, seed=3)
    train_rows, val_rows = split_indices(kp, 0.25, seed=3)
    assert np.array_equal(np.flatnonzero(fold == 0), val_rows)
    assert np.array_equal(np.flatnonzero(fold == -1), train_rows)


def test_each_folds_parts_are_disjoint_and_the_val_parts_tile_the_rows(tmp_path):
    prepared = _prepared(tmp_path)
    counts = write_split(prepared, tmp_path / "split", 0.2, seed=0, folds=3)
    assert [c["train"] + c["val"] for c in counts["folds"]] == [23, 23, 23]
    images, kp = np.load(prepared / "train_images.npy"), np.load(prepared / "train_keypoints.npy")
    val_rows = []
    for k in range(3):
        train, val = load_fold(tmp_path / "split", k)
        assert not set(train.rows) & set(val.rows)
        assert len(train.rows) + len(val.rows) == 23
        assert np.array_equal(val.images, images[val.rows])
        assert np.array_equal(train.images, images[train.rows])
        np.testing.assert_array_equal(train.keypoints, kp[train.rows])
        labels_only, same_val = load_fold(tmp_path / "split", k, train_images=False)
        assert labels_only.images.shape == (0, 96, 96)  # the mean-shape baseline needs only the labels
        np.testing.assert_array_equal(labels_only.keypoints, train.keypoints)
        assert np.array_equal(same_val.images, val.images)
        val_rows.extend(val.rows.tolist())
    assert sorted(val_rows) == list(range(23))
    with pytest.raises(DataError, match="no fold 3"):
        load_fold(tmp_path / "split", 3)


def test_a_folder_that_is_not_a_split_is_named_with_the_stage_that_makes_it(tmp_path):
    with pytest.raises(DataError, match=r"nowhere/val_fold.npy: not found; .*nowhere must be .*which does not exist.*dvc repro split"):
        load_fold(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError, match=r"a_file must be the split stage's output folder, not a file"):
        load_fold(tmp_path / "a_file")
    write_split(_prepared(tmp_path), tmp_path / "split", 0.2, seed=0, folds=1)
    (tmp_path / "split" / "images.npy").unlink()
    with pytest.raises(DataError, match=r"split/images.npy: not found; .*split must be the split stage's output folder \("):
        load_fold(tmp_path / "split")


def test_too_few_rows_for_the_folds_is_a_clear_error_and_writes_nothing(tmp_path):
    prepared = _prepared(tmp_path, n=7)
    with pytest.raises(DataError, match=r"7 rows cannot make 4 folds"):
        write_split(prepared, tmp_path / "split", 0.2, seed=0, folds=4)
    assert not (tmp_path / "split").exists()


@pytest.mark.parametrize("folds, match", [
    ([0, 2], r"split.folds.*\[0, 1\]"),
    ([1], r"split.folds.*\[0\]"),
    (5, r"split.folds' must be a list"),
    ([], r"split.folds' must have"),
])
def test_folds_param_lists_the_fold_numbers_from_zero(folds, match):
    raw = to_dict(load_params(ROOT / "params.yaml"))
    raw["split"]["folds"] = folds
    with pytest.raises(ParamsError, match=match):
        parse_params(raw)


def test_out_of_fold_evaluation_scores_every_row_once_with_its_own_folds_model():
    from fkd.core.config import EnsembleParams
    from fkd.evaluation.evaluate import evaluate_models

    kp = _keypoints(30, seed=4)
    fold = fold_assignment(kp, 3, 0.2, seed=0)
    images = np.zeros((30, 96, 96), np.uint8)
    parts = [(Part(images[fold != k], kp[fold != k], np.flatnonzero(fold != k)),
              Part(images[fold == k], kp[fold == k], np.flatnonzero(fold == k))) for k in range(3)]

    def constant(value):
        return lambda x: np.full((len(x), 2 * N_EXTENDED), value, np.float32)

    models = {"resnet": [constant(10.0 + k) for k in range(3)]}  # fold k's model predicts 10 + k everywhere
    p = EnsembleParams(members=("resnet",), weights=(1.0,), per_keypoint=False)
    results, _ = evaluate_models(models, parts, p, tta_flip=False)
    rows = np.concatenate([val.rows for _, val in parts])
    assert sorted(rows.tolist()) == list(range(30))  # every row exactly once
    pred = results["resnet"].predictions
    assert pred.shape == (30, 2 * N_EXTENDED)
    np.testing.assert_array_equal(pred[:, 0], 10.0 + fold[rows])  # each row scored by the model that did not train on it
    # the mean-shape baseline is fitted per fold on that fold's training rows only
    for k, (train, _) in enumerate(parts):
        expected = np.nanmean(to_extended(train.keypoints)[:, 0])
        np.testing.assert_allclose(results["mean_shape"].predictions[fold[rows] == k, 0], expected, rtol=1e-6)


def test_fold_models_are_averaged_for_submit(tmp_path):
    from fkd.evaluation.inference import fold_average

    fns = [lambda x, v=v: np.full((len(x), 2 * N_EXTENDED), v, np.float32) for v in (1.0, 2.0, 6.0)]
    np.testing.assert_allclose(fold_average(fns)(np.zeros((2, 96, 96), np.uint8)), 3.0)
    assert fold_average(fns[:1]) is fns[0]


# --- the pipeline with two folds ---------------------------------------------------------------

FOLDS = (0, 1)  # two folds: the least that shows out-of-fold scoring (the suite must stay short)
TRAINERS = ("train@resnet-{}", "train@heatmap-{}", "train_cnn_adam@{}", "train_cnn_sgd@{}")  # each fold's stage


@pytest.fixture(scope="module")
def fold_project(trained_project, tmp_path_factory):
    """A copy of the session's trained project (one fold) switched to two folds, reproduced and committed."""
    repo = copy_project(trained_project, tmp_path_factory.mktemp("folds") / "project")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["split"]["folds"] = list(FOLDS)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = dvc_log("repro", cwd=repo)
    commit_all(repo, "folds")
    return repo, output


@pytest.mark.slow
def test_every_training_stage_runs_once_per_fold_and_evaluate_is_out_of_fold(fold_project):
    repo, output = fold_project
    # the data stages ran in the trained project; the new split re-runs split and everything after it
    assert stages_run(output) == ({"split", "evaluate", "submit"} | {stage.format(k) for stage in TRAINERS for k in FOLDS}), output
    for k in FOLDS:
        for model in (*(MODELS[m].file(k) for m in MODELS), f"cnn_adam/{k}.keras"):
            assert (repo / "models" / model).is_file(), model
    # out-of-fold: every labelled coordinate of every training row is scored exactly once
    labelled = to_extended(np.load(repo / "data/prepared/train_keypoints.npy"))
    per_point = pd.read_csv(repo / "plots/per_keypoint/resnet.csv")
    assert per_point["labelled"].sum() == int(np.isfinite(labelled[:, ::2]).sum())
    weights = json.loads((repo / "models/ensemble.json").read_text())
    assert weights["members"] == ["resnet", "heatmap", "cnn"]
    submission = pd.read_csv(repo / "submission.csv")
    assert submission.Location.between(0, 96).all()


@pytest.mark.slow
def test_a_models_params_rerun_only_its_folds(fold_project):
    repo, _ = fold_project
    output = dvc_log("exp", "run", "--temp", "-S", "resnet.lr=0.002", cwd=repo)
    assert stages_run(output) == {f"train@resnet-{k}" for k in FOLDS} | {"evaluate", "submit"}, output
    # a glob addresses every fold of one model
    output = dvc_log("repro", "--force", "--single-item", "--glob", "train@heatmap-*", cwd=repo)
    assert stages_run(output) == {f"train@heatmap-{k}" for k in FOLDS}, output
    assert dvc("status", cwd=repo, check=False).returncode == 0


def test_a_model_of_a_fold_no_longer_trained_is_refused_naming_it(tmp_path):
    from fkd.core.errors import ModelFileError
    from fkd.evaluation.inference import check_fold_models

    for spec in MODELS.values():
        (tmp_path / spec.folder).mkdir()
        (tmp_path / spec.folder / ".gitignore").write_text("/0\n")  # DVC's own, in git
        for k in FOLDS:
            (tmp_path / spec.file(k)).write_bytes(b"model")
    check_fold_models(tmp_path, list(FOLDS))  # every file is a fold's model
    with pytest.raises(ModelFileError) as err:
        check_fold_models(tmp_path, [0])
    message = str(err.value)
    assert "\n" not in message and "no stage of split.folds [0] writes" in message
    for spec in MODELS.values():
        assert str(tmp_path / spec.file(1)) in message and str(tmp_path / spec.file(0)) not in message
    (tmp_path / MODELS["resnet"].folder / "notes.txt").write_text("mine")
    with pytest.raises(ModelFileError, match="notes.txt"):
        check_fold_models(tmp_path, list(FOLDS))


@pytest.mark.slow
def test_shrinking_the_folds_keeps_dvc_lock_true_for_a_fresh_clone(fold_project, tmp_path):
    repo = copy_project(fold_project[0], tmp_path / "project")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["split"]["folds"] = [0]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lock_before = (repo / "dvc.lock").read_text()
    proc = dvc("repro", cwd=repo, check=False)
    stale = [repo / "models" / spec.file(1) for spec in MODELS.values()]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(str(path.relative_to(repo)) in errors[0] for path in stale), proc.stdout + proc.stderr
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["evaluate"] == yaml.safe_load(lock_before)["stages"]["evaluate"]
    for path in stale + [repo / "models/cnn_adam/1.keras"]:
        path.unlink()
    dvc_log("repro", cwd=repo)
    remote = tmp_path / "remote"
    dvc("remote", "add", "-d", "shared", str(remote), cwd=repo)
    commit_all(repo, "one fold")
    dvc("push", cwd=repo)
    clone, env = tmp_path / "clone", project_env()
    run(["git", "clone", "-q", str(repo), str(clone)], cwd=tmp_path, env=env)
    dvc("pull", cwd=clone)
    status = dvc("status", cwd=clone)
    assert "up to date" in status.stdout, status.stdout
    output = dvc_log("repro", cwd=clone)
    assert stages_run(output) == set(), output
    assert run(["git", "status", "--porcelain"], cwd=clone, env=env).stdout == ""
