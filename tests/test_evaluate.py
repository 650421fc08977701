"""evaluate: metrics on hand-made arrays, flip TTA, the metrics file schema, and the stage on tiny real models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from fkd.core.config import EnsembleParams, ParamsError, load_params, parse_params, to_dict
from fkd.core.data import DataError, Part, load_fold
from fkd.evaluation.evaluate import evaluate_models, evaluate_predictions, mean_shape_fn, model_predictions, variant_predictions
from fkd.evaluation.metrics import METRIC_KEYS, MetricsSchemaError, check_metrics, inter_ocular, per_image_error, per_keypoint, score
from fkd.evaluation.outputs import pick_grid_faces
from fkd.evaluation.inference import with_tta
from fkd.core.keypoints import EXTENDED_NAMES, N_EXTENDED, flip_coords, index, to_extended, widen_to_extended
from fkd.sources.synthetic import MEAN_SHAPE
from tests.conftest import ROOT, TINY_PARAMS, deep_update

EYE_L, EYE_R = index("left_eye_center"), index("right_eye_center")
NOSE, LIP = index("nose_tip"), index("mouth_center_bottom_lip")
NOSE_B, LIP_B = index("nose_tip_b", EXTENDED_NAMES), index("mouth_center_bottom_lip_b", EXTENDED_NAMES)


def mean_face() -> np.ndarray:
    """Kaggle's mean shape (30,) in scheme A."""
    return np.array([MEAN_SHAPE[n] for n in MEAN_SHAPE], dtype=np.float64).reshape(-1)


def partial_row(face: np.ndarray) -> np.ndarray:
    """Only the four partial keypoints of ``face`` (30,), the rest NaN."""
    row = np.full(30, np.nan)
    for k in (EYE_L, EYE_R, NOSE, LIP):
        row[2 * k : 2 * k + 2] = face[2 * k : 2 * k + 2]
    return row


def set_point(out34: np.ndarray, k: int, xy) -> None:
    out34[2 * k : 2 * k + 2] = xy


# -- metrics on hand-made arrays ---------------------------------------------------------------------
def test_perfect_predictions_score_zero_and_full_pck():
    face = mean_face()
    keypoints = np.stack([face, partial_row(face)])
    # unlabelled slots of the targets are never compared: fill them with anything finite, as a model would
    pred = np.nan_to_num(to_extended(keypoints), nan=7.0)
    m = score(pred, keypoints)
    assert m == {"rmse": 0.0, "rmse_complete": 0.0, "rmse_partial": 0.0, "mae": 0.0, "nme": 0.0, "pck_05": 1.0, "pck_10": 1.0}


def test_known_errors_give_known_rmse_mae_nme_pck():
    face = mean_face()
    keypoints = np.stack([face, partial_row(face)])
    iod = np.hypot(*(face[2 * EYE_L : 2 * EYE_L + 2] - face[2 * EYE_R : 2 * EYE_R + 2]))  # 36.1 px
    pred = np.nan_to_num(to_extended(keypoints), nan=0.0)
    # complete row: every point 3 px right and 4 px down -> each coordinate off by 3 or 4, each point by 5 px
    pred[0, :30] += np.tile([3.0, 4.0], 15)
    pred[0, 30:] = -100.0  # the scheme-B outputs of a complete row are not scored
    # partial row: only the scheme-B nose is off, by 2 px in x; its scheme-A nose/lip outputs are not scored
    set_point(pred[1], NOSE_B, pred[1, 2 * NOSE_B : 2 * NOSE_B + 2] + [2.0, 0.0])
    set_point(pred[1], NOSE, [-50.0, -50.0])
    m = score(pred, keypoints)
    assert m["rmse_complete"] == pytest.approx(np.sqrt((9 + 16) / 2))
    assert m["rmse_partial"] == pytest.approx(np.sqrt(4 / 8))  # 8 labelled coordinates, one off by 2
    assert m["rmse"] == pytest.approx(np.sqrt((15 * 25 + 4) / 38))
    assert m["mae"] == pytest.approx((15 * 7 + 2) / 38)
    assert m["nme"] == pytest.approx((5 / iod + (2 / 4) / iod) / 2)
    # thresholds: 0.05 * 36.1 = 1.8 px, 0.10 * 36.1 = 3.6 px; 15 points at 5 px, 1 at 2 px, 3 at 0 px
    assert m["pck_05"] == pytest.approx(3 / 19)
    assert m["pck_10"] == pytest.approx(4 / 19)
    assert inter_ocular(to_extended(keypoints)) == pytest.approx([iod, iod])


def test_nme_and_pck_skip_faces_without_both_eyes_and_subsets_can_be_empty():
    face = mean_face()
    no_eye = partial_row(face)
    no_eye[2 * EYE_R : 2 * EYE_R + 2] = np.nan
    keypoints = no_eye[None]
    pred = np.nan_to_num(to_extended(keypoints), nan=0.0) + 1.0
    m = score(pred, keypoints)
    assert m["rmse"] == pytest.approx(1.0) and m["rmse_partial"] == pytest.approx(1.0)
    assert m["rmse_complete"] is None and m["nme"] is None and m["pck_05"] is None
    check_metrics(m)  # nulls are allowed where there is nothing to score


def test_per_keypoint_and_per_image_errors():
    face = mean_face()
    keypoints = np.stack([face, face, partial_row(face)])
    pred = np.nan_to_num(to_extended(keypoints), nan=0.0)
    set_point(pred[0], EYE_L, pred[0, 2 * EYE_L : 2 * EYE_L + 2] + [6.0, 8.0])  # 10 px
    set_point(pred[2], LIP_B, pred[2, 2 * LIP_B : 2 * LIP_B + 2] + [0.0, 4.0])  # 4 px
    rows = {r["keypoint"]: r for r in per_keypoint(pred, keypoints)}
    assert set(rows) == set(EXTENDED_NAMES)
    assert rows["left_eye_center"] == {"keypoint": "left_eye_center", "rmse": pytest.approx(np.sqrt(100 / 6)),
                                       "mean_error": pytest.approx(10 / 3), "labelled": 3}
    assert rows["mouth_center_bottom_lip_b"]["labelled"] == 1 and rows["mouth_center_bottom_lip_b"]["mean_error"] == pytest.approx(4)
    assert rows["mouth_center_bottom_lip"]["labelled"] == 2 and rows["mouth_center_bottom_lip"]["rmse"] == 0
    assert per_image_error(pred, keypoints) == pytest.approx([10 / 15, 0.0, 1.0])
    # a split without partial rows has no scheme-B points: they are left out, not NaN
    assert "nose_tip_b" not in {r["keypoint"] for r in per_keypoint(pred[:2], keypoints[:2])}


def test_pick_grid_faces_takes_the_worst_and_a_spread_of_the_rest():
    errors = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, np.nan])
    typical, worst = pick_grid_faces(errors, 5, 2)
    assert worst.tolist() == [2, 4]
    assert len(typical) == 3 and typical[0] == 6 and not set(typical) & set(worst)  # best first (no labels counts as best)
    typical, worst = pick_grid_faces(errors, 50, 3)  # capped at the number of faces
    assert len(typical) + len(worst) == 7


def test_grid_params_are_checked():
    raw = to_dict(load_params(ROOT / "params.yaml"))
    raw["evaluate"].update(grid_faces=4, worst_faces=4)
    parse_params(raw)
    raw["evaluate"]["worst_faces"] = 5
    with pytest.raises(ParamsError, match="evaluate.worst_faces"):
        parse_params(raw)
    raw["evaluate"].update(grid_faces=0, worst_faces=0)
    with pytest.raises(ParamsError, match="evaluate.grid_faces"):
        parse_params(raw)


# -- the metrics file schema ---------------------------------------------------------------------------
def test_metrics_schema():
    good = {"rmse": 2.0, "rmse_complete": 2.5, "rmse_partial": None, "mae": 1.2, "nme": 0.05, "pck_05": 0.4, "pck_10": 0.9}
    assert check_metrics(good) is good
    bad = {
        "missing key": {k: v for k, v in good.items() if k != "nme"},
        "extra key": {**good, "rmse_tta": 1.0},
        "string": {**good, "mae": "1.2"},
        "bool": {**good, "nme": True},
        "nan": {**good, "rmse_complete": float("nan")},
        "null rmse": {**good, "rmse": None},
        "negative": {**good, "mae": -0.1},
        "pck over 1": {**good, "pck_10": 1.5},
    }
    for case, metrics in bad.items():
        with pytest.raises(MetricsSchemaError):
            check_metrics(metrics, case)
    with pytest.raises(MetricsSchemaError, match="cnn.json: keys must be"):
        check_metrics({"rmse": 1.0}, "cnn.json")


# -- flip test-time augmentation -----------------------------------------------------------------------
SYMMETRIC_SHAPE = widen_to_extended((mean_face() + flip_coords(mean_face()))[None] / 2)[0]


def equivariant_fn(images: np.ndarray) -> np.ndarray:
    """Exactly flip-equivariant: a left/right-symmetric shape moved to each image's brightest pixel."""
    flat = images.reshape(len(images), -1).argmax(axis=1)
    y, x = np.divmod(flat, images.shape[2])
    shift = np.stack([x - 47.5, y - 40.0], axis=1)
    return SYMMETRIC_SHAPE[None] + np.tile(shift, N_EXTENDED)


def spot_images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 100, size=(n, 96, 96), dtype=np.uint8)
    images[np.arange(n), rng.integers(10, 86, n), rng.integers(10, 86, n)] = 255
    return images


def test_tta_leaves_an_equivariant_model_unchanged():
    images = spot_images(5)
    assert np.allclose(with_tta(equivariant_fn)(images), equivariant_fn(images))
    assert not np.allclose(equivariant_fn(images), equivariant_fn(images[:, :, ::-1]))  # the test can tell a flip


def test_tta_cancels_a_left_right_bias():
    images = spot_images(5, seed=1)
    biased = lambda im: equivariant_fn(im) + np.tile([2.0, 0.0], N_EXTENDED)  # noqa: E731  everything 2 px too far right
    assert np.abs(biased(images) - equivariant_fn(images)).max() == pytest.approx(2.0)
    assert np.allclose(with_tta(biased)(images), equivariant_fn(images))


# -- the evaluation with fake model functions ------------------------------------------------------------
def oracle_fn(part: Part, noise: float, seed: int):
    """A fake model that knows the answers of ``part`` (looked up by image), plus Gaussian noise."""
    targets = np.nan_to_num(to_extended(part.keypoints), nan=48.0)
    by_image = {img.tobytes(): i for i, img in enumerate(part.images)}
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, noise, targets.shape)

    def predict(images: np.ndarray) -> np.ndarray:
        idx = [by_image.get(img.tobytes()) for img in images]
        return np.stack([targets[i] + offsets[i] if i is not None else np.full(34, 48.0) for i in idx])

    return predict


FIXED = EnsembleParams(members=("resnet", "cnn"), weights=(0.5, 0.5), per_keypoint=False)
FITTED = EnsembleParams(members=("resnet", "cnn"), weights="fitted", per_keypoint=False)


def test_evaluate_models_scores_every_variant(split_dir):
    train, val = load_fold(split_dir)
    models = {"resnet": oracle_fn(val, 1.0, 0), "cnn": oracle_fn(val, 2.0, 1)}
    results, fitted = evaluate_models({k: [fn] for k, fn in models.items()}, [(train, val)], FIXED, tta_flip=True)
    assert fitted is None
    assert list(results) == ["resnet", "cnn", "resnet_tta", "cnn_tta", "ensemble", "ensemble_tta", "mean_shape"]
    for name, r in results.items():
        assert tuple(r.metrics) == METRIC_KEYS and r.predictions.shape == (len(val.images), 34)
    rmse = {name: r.metrics["rmse"] for name, r in results.items()}
    assert rmse["resnet"] == pytest.approx(1.0, rel=0.15) and rmse["cnn"] == pytest.approx(2.0, rel=0.15)
    assert rmse["ensemble"] == pytest.approx(np.sqrt(1 + 4) / 2, rel=0.15)  # the mean of independent errors
    assert rmse["mean_shape"] > 2 * rmse["cnn"]
    np.testing.assert_allclose(results["ensemble"].predictions,
                               (results["resnet"].predictions + results["cnn"].predictions) / 2)
    mean = mean_shape_fn(train.keypoints)(val.images[:1])[0]
    np.testing.assert_allclose(results["mean_shape"].predictions[3], mean, rtol=1e-6)
    only, _ = variant_predictions({"resnet": model_predictions(models["resnet"], val.images, False)}, val.keypoints, FIXED,
                                  tta_flip=False)
    assert list(only) == ["resnet"]


def test_fitted_ensemble_is_scored_cross_fitted(split_dir):
    """Fitted weights favour the better model; the ensemble's scored predictions are out-of-fold, not in-sample."""
    from fkd.evaluation.ensemble import combine, cross_fitted, fit_weights

    train, val = load_fold(split_dir)
    models = {"resnet": [oracle_fn(val, 1.0, 0)], "cnn": [oracle_fn(val, 3.0, 1)]}
    results, fitted = evaluate_models(models, [(train, val)], FITTED, tta_flip=False)
    members = [results["resnet"].predictions, results["cnn"].predictions]
    weights = fit_weights(members, to_extended(val.keypoints))
    np.testing.assert_allclose(fitted["weights"], weights)
    assert fitted["members"] == ["resnet", "cnn"] and weights[0] > 0.8
    oof, _ = cross_fitted(members, to_extended(val.keypoints), folds=fitted["cross_fit_folds"])
    np.testing.assert_allclose(results["ensemble"].predictions, oof)
    assert not np.allclose(results["ensemble"].predictions, combine(members, weights))


# -- the stage, on tiny real models ------------------------------------------------------------------------
def tiny_params_file(dest: Path, overrides: dict | None = None) -> Path:
    """params.yaml with TINY_PARAMS (and ``overrides``) in ``dest``; returns the parsed params' raw dict path."""
    raw = to_dict(load_params(ROOT / "params.yaml"))
    deep_update(raw, TINY_PARAMS)
    deep_update(raw, overrides or {})
    parse_params(raw)  # fail here, not in the stage, if the overrides are wrong
    path = dest / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_tiny_models(split_dir: Path, models_dir: Path, cnn: bool = True) -> Path:
    """Fold 0's models/resnet/0.safetensors and heatmap/0.safetensors (one tiny epoch each) and, with ``cnn``, an untrained tiny
    models/cnn_sgd/0.keras."""
    from fkd.models.heatmap import fit as train_heatmap
    from fkd.models.resnet import fit as train_resnet

    p = load_params(ROOT / "params.yaml", overrides=TINY_PARAMS)
    train_resnet(*load_fold(split_dir), p.resnet, models_dir / "resnet/0.safetensors")
    train_heatmap(*load_fold(split_dir), p.heatmap, models_dir / "heatmap/0.safetensors")
    if cnn:
        from fkd.models.cnn.network import build_model, n_outputs, save_model

        save_model(build_model(p.cnn, n_outputs(p.cnn.scheme_heads)), models_dir / "cnn_sgd/0.keras")
    return models_dir


@pytest.fixture(scope="module")
def tiny_models(split_dir, tmp_path_factory) -> Path:
    return make_tiny_models(split_dir, tmp_path_factory.mktemp("models"))


def test_stage_writes_metrics_and_plots(split_dir, tiny_models, tmp_path, monkeypatch):
    from stages.evaluate import main

    monkeypatch.chdir(tmp_path)
    tiny_params_file(tmp_path, {"evaluate": {"tta_flip": True, "grid_faces": 5, "worst_faces": 2}})
    stale = tmp_path / "metrics" / "evaluate" / "old_model.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    main([str(split_dir), str(tiny_models), "metrics/evaluate", "plots"])

    variants = ["cnn", "cnn_tta", "ensemble", "ensemble_tta", "heatmap", "heatmap_tta", "mean_shape", "resnet", "resnet_tta"]
    files = sorted((tmp_path / "metrics" / "evaluate").iterdir())
    assert [f.name for f in files] == [f"{v}.json" for v in variants]  # the stale file is gone
    for f in files:
        metrics = json.loads(f.read_text())
        assert list(metrics) == list(METRIC_KEYS)
        check_metrics(metrics, f.name)
    plots = tmp_path / "plots"
    assert sorted(p.name for p in (plots / "per_keypoint").iterdir()) == [f"{v}.csv" for v in variants]
    header, *rows = (plots / "per_keypoint" / "resnet.csv").read_text().splitlines()
    assert header == "keypoint,rmse,mean_error,labelled" and len(rows) == N_EXTENDED
    for name in ("faces/resnet.png", "faces/heatmap.png", "faces/cnn.png", "faces/ensemble.png", "error_histogram.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p for p in tmp_path.rglob(".*")]  # no staging folders or temporary files left


def test_stage_without_tta_and_missing_model(split_dir, tiny_models, tmp_path, monkeypatch):
    from fkd.core.errors import ModelFileError
    from stages.evaluate import main

    monkeypatch.chdir(tmp_path)
    tiny_params_file(tmp_path, {"evaluate": {"tta_flip": False}})
    main([str(split_dir), str(tiny_models), "metrics/evaluate", "plots"])
    assert sorted(f.stem for f in (tmp_path / "metrics" / "evaluate").iterdir()) == ["cnn", "ensemble", "heatmap", "mean_shape", "resnet"]
    only_resnet = tmp_path / "only_resnet"
    shutil.copytree(tiny_models / "resnet", only_resnet / "resnet")
    shutil.copytree(tiny_models / "heatmap", only_resnet / "heatmap")
    with pytest.raises(ModelFileError, match=r"only_resnet/cnn_sgd/0.keras not found: run `dvc repro`"):
        main([str(split_dir), str(only_resnet), "metrics/evaluate", "plots"])
    assert sorted(f.stem for f in (tmp_path / "metrics" / "evaluate").iterdir()) == ["cnn", "ensemble", "heatmap", "mean_shape", "resnet"]


def test_an_empty_validation_split_is_an_error_before_any_model_predicts():
    empty = Part(np.zeros((0, 96, 96), np.uint8), np.zeros((0, 30), np.float32), np.zeros(0, np.int64))
    train = Part(np.zeros((2, 96, 96), np.uint8), np.full((2, 30), 40.0, np.float32), np.arange(2))
    asked = []
    with pytest.raises(DataError, match="the validation split is empty: nothing to evaluate"):
        evaluate_models({"resnet": [lambda im: asked.append(im) or np.zeros((len(im), 34))]}, [(train, empty)],
                        load_params(ROOT / "params.yaml").ensemble, tta_flip=True)
    assert not asked
    with pytest.raises(DataError, match="the validation split is empty"):
        evaluate_predictions({}, [(train, empty)], load_params(ROOT / "params.yaml").ensemble, tta_flip=True)
