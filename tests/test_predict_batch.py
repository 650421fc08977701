"""fkd.predict.chain.locate_each: the photos of a batch go through the chain together, and a photo that
makes the chain raise fails alone."""
from __future__ import annotations

import numpy as np

from fkd.core.keypoints import N_EXTENDED
from fkd.predict.chain import locate_each
from fkd.predict.geometry import Box


def _counting_predictor(calls: list[int]):
    def predict(crops: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        calls.append(len(crops))
        return np.full((len(crops), 2 * N_EXTENDED), 48.0)

    return predict


def test_a_batch_goes_through_the_model_in_one_call_per_pass():
    calls: list[int] = []
    photos = [np.full((120, 120), 128, np.uint8)] * 3
    found = locate_each(photos, _counting_predictor(calls), [[Box(10, 10, 100, 100)]] * 3, passes=2)
    assert [len(faces) for faces in found] == [1, 1, 1]
    assert calls == [3, 3]


def test_a_photo_that_makes_the_chain_raise_fails_alone():
    calls: list[int] = []
    good, bad = np.full((120, 120), 128, np.uint8), np.zeros((120, 120, 5), np.uint8)  # 5 channels: no photo
    found = locate_each([good, bad, good], _counting_predictor(calls), [[Box(10, 10, 100, 100)]] * 3, passes=1)
    assert isinstance(found[0], list) and isinstance(found[2], list) and len(found[0]) == len(found[2]) == 1
    assert isinstance(found[1], ValueError)  # scikit-image refuses 5 channels
    assert calls == [1, 1]  # the batch failed before the model ran; then each good photo alone


def test_one_photo_that_raises_is_its_own_exception():
    found = locate_each([np.zeros((120, 120, 5), np.uint8)], _counting_predictor([]), None, passes=1)
    assert len(found) == 1 and isinstance(found[0], ValueError)
