"""One RMSE over labelled coordinates: fkd.core.keypoints.finite_rmse, behind masked_rmse and the evaluate metrics."""
from __future__ import annotations

import numpy as np
import pytest

from fkd.evaluation.metrics import score
from fkd.core.keypoints import finite_rmse, masked_rmse, to_extended


def test_finite_rmse_skips_unlabelled_and_is_none_without_any():
    assert finite_rmse(np.array([3.0, np.nan, -4.0, np.nan])) == pytest.approx(np.sqrt(12.5))
    assert finite_rmse(np.array([np.nan, np.nan])) is None
    with pytest.raises(ValueError, match="no labelled coordinate"):
        masked_rmse(np.zeros(2), np.array([np.nan, np.nan]))


def test_evaluate_rmse_is_masked_rmse_to_the_bit():
    rng = np.random.default_rng(3)
    kp = rng.uniform(0, 95, (300, 30)).astype(np.float32)
    kp[rng.random((300, 30)) < 0.4] = np.nan
    kp[:, :4] = rng.uniform(0, 95, (300, 4))  # every row keeps its eyes
    pred = to_extended(kp) + rng.normal(0, 2, (300, 34)).astype(np.float32)
    pred = np.nan_to_num(pred, nan=48.0)
    assert score(pred, kp)["rmse"] == masked_rmse(pred, to_extended(kp))
