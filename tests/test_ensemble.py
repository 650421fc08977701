"""Fitted ensemble weights: exact simplex least squares, per keypoint, honest cross-fitting, weights file."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from fkd.evaluation.ensemble import EnsembleWeightsError, combine, cross_fitted, fit_weights, fold_ids, load_weights, save_weights
from fkd.core.keypoints import EXTENDED_NAMES, N_EXTENDED, index, to_extended
from fkd.core.keypoints import masked_rmse as rmse

N_OUT = 2 * N_EXTENDED


def faces(n: int = 300, seed: int = 0) -> np.ndarray:
    """Fully labelled extended targets (n, 34) around the image centre."""
    rng = np.random.default_rng(seed)
    return 48 + 15 * rng.standard_normal((n, N_OUT))


def noisy(y: np.ndarray, scale: float, seed: int) -> np.ndarray:
    return y + scale * np.random.default_rng(seed).standard_normal(y.shape)


def objective(preds, y, w) -> float:
    diff = combine(preds, w) - y
    return float(np.nansum(diff**2))


def brute_force(preds, y) -> float:
    """Best squared error over the simplex: every support, equality-constrained QP via KKT."""
    labelled = np.isfinite(y)
    d = np.stack([p[labelled] - y[labelled] for p in preds], axis=1)
    q, m = d.T @ d, d.shape[1]
    best = np.inf
    for k in range(1, m + 1):
        for support in map(list, itertools.combinations(range(m), k)):
            kkt = np.block([[2 * q[np.ix_(support, support)], np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
            sol = np.linalg.lstsq(kkt, np.r_[np.zeros(k), 1.0], rcond=None)[0][:k]
            if (sol >= -1e-12).all():
                w = np.zeros(m)
                w[support] = sol
                best = min(best, float(w @ q @ w))
    return best


# ----------------------------------------------------------------------------- fit_weights


def test_weights_recover_a_known_mixture():
    a, b = faces(seed=1), faces(seed=2)
    y = 0.7 * a + 0.3 * b
    w = fit_weights([a, b], y)
    assert w.shape == (2,)
    np.testing.assert_allclose(w, [0.7, 0.3], atol=1e-9)
    np.testing.assert_allclose(combine([a, b], w), y, atol=1e-6)


def test_a_pure_noise_member_gets_no_weight():
    y = faces()
    good = noisy(y, 1.0, seed=3)
    junk = 48 + 30 * np.random.default_rng(4).standard_normal(y.shape)
    w = fit_weights([good, junk], y)
    assert w[1] < 0.01 and w[0] > 0.99
    assert rmse(combine([good, junk], w), y) <= rmse(good, y) + 1e-9


def test_weights_stay_on_the_simplex_when_the_unconstrained_fit_goes_negative():
    y = faces()
    shared = 3.0 * np.random.default_rng(5).standard_normal(y.shape)
    a = y + shared + noisy(np.zeros_like(y), 0.5, seed=6)  # good member
    b = y + 2 * shared  # same error direction, larger: unconstrained fit wants b < 0
    c = noisy(y, 8.0, seed=7)  # poor but independent member
    labelled = np.isfinite(y)
    free = np.linalg.lstsq(np.stack([a[labelled], b[labelled]], 1), y[labelled], rcond=None)[0]
    assert free.min() < 0  # the premise: unconstrained least squares wants a negative weight
    w = fit_weights([a, b, c], y)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w[1] == pytest.approx(0.0, abs=1e-9)
    assert objective([a, b, c], y, w) == pytest.approx(brute_force([a, b, c], y), rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_fit_is_the_exact_simplex_optimum(seed):
    rng = np.random.default_rng(seed)
    y = faces(60, seed=seed)
    y[rng.random(y.shape) < 0.3] = np.nan
    m = int(rng.integers(2, 6))
    preds = [noisy(y, rng.uniform(0.5, 6), seed=100 + seed * 10 + k) + rng.uniform(-2, 2) for k in range(m)]
    preds = [np.nan_to_num(p, nan=48.0) for p in preds]
    if seed % 2:
        preds.append(preds[0].copy())  # duplicate member: still an optimum, still on the simplex
    w = fit_weights(preds, y)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert objective(preds, y, w) == pytest.approx(brute_force(preds, y), rel=1e-9)
    np.testing.assert_array_equal(w, fit_weights(preds, y))  # deterministic


def test_identical_members_give_their_weight_to_the_first():
    y = faces(50)
    a, b = noisy(y, 1, 1), noisy(y, 2, 2)
    pair = fit_weights([a, b], y)
    np.testing.assert_allclose(fit_weights([a, b, a.copy()], y), [pair[0], pair[1], 0.0], atol=1e-12)
    np.testing.assert_allclose(fit_weights([b, a, a.copy()], y), [pair[1], pair[0], 0.0], atol=1e-12)


def test_single_member_and_exact_member():
    y = faces(20)
    np.testing.assert_array_equal(fit_weights([noisy(y, 1, 1)], y), [1.0])
    np.testing.assert_array_equal(fit_weights([noisy(y, 1, 1), y.copy()], y), [0.0, 1.0])


def test_nan_targets_are_ignored():
    y = faces()
    a, b = noisy(y, 1.0, 1), noisy(y, 3.0, 2)
    holes = y.copy()
    holes[::2, :10] = np.nan
    holes[1::2, 20:] = np.nan
    garbage = holes.copy()
    # Wherever the target is NaN, the members' values must not matter.
    a2, b2 = a.copy(), b.copy()
    a2[np.isnan(holes)] += 1000.0
    b2[np.isnan(holes)] -= 500.0
    w = fit_weights([a, b], holes)
    np.testing.assert_allclose(fit_weights([a2, b2], garbage), w, atol=1e-12)
    np.testing.assert_allclose(fit_weights([a2, b2], holes, per_keypoint=True),
                               fit_weights([a, b], holes, per_keypoint=True), atol=1e-12)
    assert np.isfinite(w).all()


def test_kaggle_rows_through_to_extended():
    rng = np.random.default_rng(0)
    kaggle = 48 + 10 * rng.standard_normal((200, 30))
    kaggle[100:] = np.nan  # partial rows: four keypoints only
    for name in ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip"):
        i = index(name)
        kaggle[100:, 2 * i:2 * i + 2] = 48 + 10 * rng.standard_normal((100, 2))
    y = to_extended(kaggle)
    a = np.where(np.isfinite(y), y, 48.0) + rng.standard_normal(y.shape)
    b = np.where(np.isfinite(y), y, 48.0) + 2 * rng.standard_normal(y.shape)
    w = fit_weights([a, b], y, per_keypoint=True)
    assert w.shape == (2, N_EXTENDED) and np.isfinite(w).all()


# ----------------------------------------------------------------------------- per keypoint


def test_per_keypoint_weights_follow_each_members_strength():
    y = faces(400)
    eyes = [index(n, EXTENDED_NAMES) for n in EXTENDED_NAMES if "eye" in n]
    eye_cols = np.zeros(N_OUT, dtype=bool)
    for p in eyes:
        eye_cols[2 * p:2 * p + 2] = True
    rng = np.random.default_rng(8)
    # a is good at eyes and poor elsewhere; b the other way round
    a = y + np.where(eye_cols, 0.5, 6.0) * rng.standard_normal(y.shape)
    b = y + np.where(eye_cols, 6.0, 0.5) * rng.standard_normal(y.shape)
    w = fit_weights([a, b], y, per_keypoint=True)
    assert w.shape == (2, N_EXTENDED)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    assert (w >= 0).all()
    others = [p for p in range(N_EXTENDED) if p not in eyes]
    assert (w[0, eyes] > 0.9).all() and (w[1, others] > 0.9).all()
    per_point = rmse(combine([a, b], w), y)
    global_w = fit_weights([a, b], y)
    assert per_point < rmse(combine([a, b], global_w), y)
    # each point's weights are the member-level fit restricted to that point
    p = eyes[0]
    cols = slice(2 * p, 2 * p + 2)
    np.testing.assert_allclose(w[:, p], fit_weights([a[:, cols].repeat(17, 1), b[:, cols].repeat(17, 1)],
                                                    y[:, cols].repeat(17, 1)), atol=1e-9)


def test_unlabelled_point_falls_back_to_member_weights():
    y = faces()
    y[:, 2 * 15:] = np.nan  # no scheme-B labels at all
    a, b = noisy(y, 1, 1), noisy(y, 2, 2)
    a, b = np.nan_to_num(a, nan=48.0), np.nan_to_num(b, nan=48.0)
    w = fit_weights([a, b], y, per_keypoint=True)
    overall = fit_weights([a, b], y)
    np.testing.assert_array_equal(w[:, 15], overall)
    np.testing.assert_array_equal(w[:, 16], overall)


def test_combine_weighted_mean_both_shapes():
    a, b = np.zeros((3, N_OUT)), np.ones((3, N_OUT), dtype=np.float32)
    np.testing.assert_allclose(combine([a, b], np.array([0.25, 0.75])), 0.75)
    np.testing.assert_allclose(combine([a, b], np.array([1.0, 3.0])), 0.75)  # normalised
    w = np.zeros((2, N_EXTENDED))
    w[0, :] = 1.0
    w[:, 4] = [0.0, 1.0]
    out = combine([a, b], w)
    assert out.shape == (3, N_OUT)
    expected = np.zeros(N_OUT)
    expected[8:10] = 1.0
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape))


# ----------------------------------------------------------------------------- cross-fitting


@pytest.mark.parametrize("per_keypoint", [False, True])
def test_cross_fitted_never_uses_weights_fitted_on_its_own_rows(per_keypoint):
    y = faces(101)
    y[np.random.default_rng(9).random(y.shape) < 0.2] = np.nan
    preds = [np.nan_to_num(noisy(y, s, k), nan=48.0) for k, s in enumerate((1.0, 2.0, 4.0))]
    out, used = cross_fitted(preds, y, per_keypoint=per_keypoint, folds=4, seed=3)
    ids = fold_ids(len(y), 4, seed=3)
    assert sorted(np.bincount(ids)) == [25, 25, 25, 26]
    assert used.shape == ((4, 3) if not per_keypoint else (4, 3, N_EXTENDED))
    for k in range(4):
        rest, held = ids != k, ids == k
        expected_w = fit_weights([p[rest] for p in preds], y[rest], per_keypoint=per_keypoint)
        np.testing.assert_array_equal(used[k], expected_w)
        np.testing.assert_allclose(out[held], combine([p[held] for p in preds], expected_w), atol=1e-12)
        own = fit_weights([p[held] for p in preds], y[held], per_keypoint=per_keypoint)
        assert not np.allclose(used[k], own)  # the fold's own fit differs, and was not used
    out2, used2 = cross_fitted(preds, y, per_keypoint=per_keypoint, folds=4, seed=3)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(used, used2)
    assert not np.array_equal(fold_ids(len(y), 4, seed=4), ids)


def test_cross_fitted_rmse_is_not_better_than_in_sample():
    y = faces(60)
    rng = np.random.default_rng(10)
    # many noisy members, few rows: in-sample weights overfit the noise
    preds = [y + rng.uniform(2, 4) * rng.standard_normal(y.shape) for _ in range(6)]
    in_sample = rmse(combine(preds, fit_weights(preds, y, per_keypoint=True)), y)
    honest = rmse(cross_fitted(preds, y, per_keypoint=True, folds=5)[0], y)
    assert honest > in_sample
    in_sample_m = rmse(combine(preds, fit_weights(preds, y)), y)
    honest_m = rmse(cross_fitted(preds, y, folds=5)[0], y)
    assert honest_m >= in_sample_m


def test_fold_ids_reject_bad_folds():
    with pytest.raises(ValueError, match="at least 2"):
        fold_ids(10, 1)
    with pytest.raises(ValueError, match="one row per fold"):
        fold_ids(3, 5)
    y = faces(10)
    with pytest.raises(ValueError, match="folds"):
        cross_fitted([y, y], y, folds=20)


def test_cross_fitted_needs_labels_outside_each_fold():
    y = np.full((4, N_OUT), np.nan)
    ids = fold_ids(4, 2, seed=0)
    y[ids == 0, 0] = 1.0  # only fold 0's rows are labelled, so fitting for fold 0 has nothing to fit on
    p = np.zeros((4, N_OUT))
    with pytest.raises(ValueError, match="fold 0.*no labelled"):
        cross_fitted([p, p + 1], y, folds=2, seed=0)


# ----------------------------------------------------------------------------- input validation


@pytest.mark.parametrize("preds, targets, match", [
    ([], np.zeros((3, N_OUT)), "at least one member"),
    (np.zeros((2, 3, N_OUT)), np.zeros((3, N_OUT)), "list of"),
    ([np.zeros((3, 30)), np.zeros((3, 30))], np.zeros((3, 30)), r"shape \(3, 30\).*extended layout"),
    ([np.zeros((3, N_OUT)), np.zeros((4, N_OUT))], np.zeros((3, N_OUT)), "member 1.*same rows"),
    ([np.zeros((3, N_OUT)), np.full((3, N_OUT), np.nan)], np.zeros((3, N_OUT)), "member 1.*not finite in 3 rows"),
    ([np.zeros((3, N_OUT))], np.zeros((4, N_OUT)), r"keypoints have shape \(4, 34\)"),
    ([np.zeros((3, N_OUT))], np.full((3, N_OUT), np.nan), "no labelled"),
    ([np.zeros((3, N_OUT))], np.full((3, N_OUT), np.inf), "infinite"),
])
def test_bad_inputs_name_the_problem(preds, targets, match):
    with pytest.raises(ValueError, match=match):
        fit_weights(preds, targets)
    if isinstance(preds, list) and len(preds) and len(targets) == len(preds[0]) and len(preds[0]) >= 2:
        with pytest.raises(ValueError, match=match):
            cross_fitted(preds, targets, folds=2)


@pytest.mark.parametrize("weights, match", [
    (np.array([1.0]), r"shape \(1,\)"),
    (np.ones((2, 15)), r"shape \(2, 15\)"),
    (np.array([1.0, np.nan]), "finite"),
    (np.array([1.2, -0.2]), "non-negative"),
    (np.array([0.0, 0.0]), "positive sum"),
])
def test_combine_rejects_bad_weights(weights, match):
    p = np.zeros((3, N_OUT))
    with pytest.raises(ValueError, match=match):
        combine([p, p], weights)


# ----------------------------------------------------------------------------- weights file


@pytest.mark.parametrize("per_keypoint", [False, True])
def test_save_load_round_trip(tmp_path, per_keypoint):
    y = faces()
    preds = [noisy(y, 1, 1), noisy(y, 2, 2), noisy(y, 3, 3)]
    w = fit_weights(preds, y, per_keypoint=per_keypoint)
    path = tmp_path / "metrics" / "ensemble.json"
    save_weights(path, ["resnet", "cnn", "hrnet"], w, rmse_cv=1.234, folds=5)
    doc = json.loads(path.read_text())
    assert doc["members"] == ["resnet", "cnn", "hrnet"] and doc["rmse_cv"] == 1.234 and doc["folds"] == 5
    assert ("points" in doc) == per_keypoint
    members, loaded = load_weights(path, expected_members=["resnet", "cnn", "hrnet"])
    assert members == ["resnet", "cnn", "hrnet"]
    assert loaded.shape == w.shape
    np.testing.assert_allclose(loaded, w, atol=5e-7)
    np.testing.assert_allclose(combine(preds, loaded), combine(preds, w), atol=1e-4)
    before = path.read_bytes()
    save_weights(path, ["resnet", "cnn", "hrnet"], w, rmse_cv=1.234, folds=5)
    assert path.read_bytes() == before  # same content, same bytes
    assert [p.name for p in path.parent.iterdir()] == ["ensemble.json"]  # no temporary left behind


def test_save_rejects_bad_arguments(tmp_path):
    path = tmp_path / "w.json"
    with pytest.raises(ValueError, match="shape"):
        save_weights(path, ["a", "b", "c"], np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="distinct"):
        save_weights(path, ["a", "a"], np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="non-negative"):
        save_weights(path, ["a", "b"], np.array([1.5, -0.5]))
    with pytest.raises(ValueError, match="overwrite"):
        save_weights(path, ["a", "b"], np.full((2, N_EXTENDED), 0.5), points=["x"])
    with pytest.raises(ValueError, match="sum to 1"):
        save_weights(path, ["a", "b"], np.array([1.0, 1.0]))
    assert not path.exists()


def _write(path, doc) -> None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[0.5, 0.5]", "JSON object"),
    ({"weights": [0.5, 0.5]}, "missing 'members'"),
    ({"members": ["a", "b"]}, "missing 'weights'"),
    ({"members": "ab", "weights": [0.5, 0.5]}, "list of names"),
    ({"members": ["a", "a"], "weights": [0.5, 0.5]}, "not distinct"),
    ({"members": ["a", "b"], "weights": [1.0]}, r"shape \(1,\)"),
    ({"members": ["a", "b"], "weights": [[0.5] * 17, [0.5] * 16]}, "weights"),
    ({"members": ["a", "b"], "weights": [[0.5] * 15, [0.5] * 15]}, r"shape \(2, 15\)"),
    ({"members": ["a", "b"], "weights": ["x", 0.5]}, "weights"),
    ({"members": ["a", "b"], "weights": [True, False]}, "not true/false"),
    ('{"members": ["a", "b"], "weights": [NaN, 1.0]}', "not all finite"),
    ('{"members": ["a", "b"], "weights": [Infinity, 1.0]}', "not all finite"),
    ({"members": ["a", "b"], "weights": [1.5, -0.5]}, "non-negative"),
    ({"members": ["a", "b"], "weights": [1.0, 1.0]}, "sum to 1"),
    ({"members": ["a", "b"], "weights": [[0.5] * 17, [0.5] * 17], "points": ["x"] * 17}, "extended layout"),
])
def test_load_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "ensemble.json"
    _write(path, content)
    with pytest.raises(EnsembleWeightsError, match=match) as err:
        load_weights(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_load_missing_file_and_wrong_members(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(EnsembleWeightsError, match="not found") as err:
        load_weights(path)
    assert str(path) in str(err.value)
    save_weights(path, ["resnet", "cnn"], np.array([0.6, 0.4]))
    with pytest.raises(EnsembleWeightsError, match=r"\['resnet', 'cnn'\].*\['cnn', 'resnet'\]"):
        load_weights(path, expected_members=["cnn", "resnet"])
    with pytest.raises(EnsembleWeightsError, match="members"):
        load_weights(path, expected_members=["resnet"])
    assert load_weights(path, expected_members=("resnet", "cnn"))[0] == ["resnet", "cnn"]
