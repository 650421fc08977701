"""The ensemble's NNLS is scipy.optimize.nnls; the weights files it leads to are those of the hand-written
Lawson-Hanson solver it replaced (measured on 1000 ensemble-shaped fits: weights within 1e-14, every written
value the same)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fkd.evaluation import ensemble
from fkd.core.keypoints import index, masked_rmse, to_extended

#: sha256 of the files below as written with the Lawson-Hanson solver (before the switch).
LAWSON_HANSON_FILES = {False: "17e5deff4d2ac68d200b97d38d5a6084b73185d3c7cb2112f37f70f40072722c", True: "16b9dc216d75318e67545e870221b2f3b68b474d168abbfc1664be26e0155552"}


def ensemble_problem(seed: int = 7, n: int = 400) -> tuple[list[np.ndarray], np.ndarray]:
    """Three members' float32 predictions of Kaggle-like rows: most label only 4 of the 15 points."""
    rng = np.random.default_rng(seed)
    kp = rng.uniform(10, 86, (n, 30)).astype(np.float32)
    keep = np.zeros(30, bool)
    for name in ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip"):
        keep[2 * index(name) : 2 * index(name) + 2] = True
    kp[np.ix_(rng.random(n) < 0.7, ~keep)] = np.nan
    truth = np.nan_to_num(to_extended(kp).astype(np.float64), nan=48.0)
    shared = rng.normal(0, 1.0, truth.shape)
    preds = [(truth + 0.6 * shared + rng.normal(0, s, truth.shape)).astype(np.float32) for s in (1.2, 1.8, 2.6)]
    preds[2] = (preds[0] + rng.normal(0, 3, truth.shape)).astype(np.float32)  # a noisier copy of member 0
    return preds, to_extended(kp)


def written(tmp_path, per_keypoint: bool) -> bytes:
    preds, y = ensemble_problem()
    w = ensemble.fit_weights(preds, y, per_keypoint)
    path = tmp_path / f"ensemble_{per_keypoint}.json"
    ensemble.save_weights(path, ["resnet", "heatmap", "cnn"], w, rmse_in_sample=round(masked_rmse(ensemble.combine(preds, w), y), 5))
    return path.read_bytes()


def test_fit_weights_solves_with_scipy_nnls(monkeypatch):
    calls = []
    real = ensemble.nnls
    monkeypatch.setattr(ensemble, "nnls", lambda a, b: calls.append(a.shape) or real(a, b))
    preds, y = ensemble_problem()
    w = ensemble.fit_weights(preds, y)
    assert calls == [(3, 3)]  # the QR-compressed system
    assert (w >= 0).all() and w.sum() == pytest.approx(1, abs=1e-12)
    ensemble.fit_weights(preds, y, per_keypoint=True)
    assert len(calls) == 1 + 1 + 17  # overall, then each extended point (all labelled somewhere)


@pytest.mark.parametrize("per_keypoint", [False, True])
def test_weights_file_is_byte_identical_to_the_lawson_hanson_one(tmp_path, per_keypoint):
    assert hashlib.sha256(written(tmp_path, per_keypoint)).hexdigest() == LAWSON_HANSON_FILES[per_keypoint]
