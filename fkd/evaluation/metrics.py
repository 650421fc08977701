"""The metrics on arrays: predictions in the extended layout against Kaggle rows, and their schema.

Every row is scored in its own marking scheme (see :mod:`fkd.core.keypoints`): the targets are
``to_extended(keypoints)`` (N, 34) and only finite targets count, so complete rows are compared
with the scheme-A outputs and partial rows with the scheme-B nose tip and bottom lip.

Metrics of one model variant (the flat keys of ``metrics/evaluate/<variant>.json``):

- ``rmse``: root mean squared error over all labelled coordinates, pixels (Kaggle's score);
  ``rmse_complete`` / ``rmse_partial``: the same over rows with all 30 labels / with only the 4;
- ``mae``: mean absolute coordinate error, pixels;
- ``nme``: per face, the mean point-to-point (Euclidean) error over its labelled points divided by
  the face's true inter-ocular distance (left to right eye centre), averaged over the faces with
  both eye centres labelled;
- ``pck_05`` / ``pck_10``: over the labelled points of those faces, the fraction whose error is at
  most 0.05 / 0.10 of the face's inter-ocular distance.

A value that has no rows to average over (e.g. ``rmse_complete`` of a split without complete
rows) is ``null``.
"""
from __future__ import annotations

import math

import numpy as np

from fkd.core.errors import FkdError
from fkd.core.keypoints import EXTENDED_NAMES, complete_mask, finite_rmse, index, to_extended

#: The keys of every metrics file, in the order they are written.
METRIC_KEYS: tuple[str, ...] = ("rmse", "rmse_complete", "rmse_partial", "mae", "nme", "pck_05", "pck_10")
#: Keys that must be numbers; the others may be null when nothing was there to score.
REQUIRED_KEYS: tuple[str, ...] = ("rmse", "mae")
PCK_FRACTIONS = {"pck_05": 0.05, "pck_10": 0.10}

_LEFT_EYE, _RIGHT_EYE = index("left_eye_center", EXTENDED_NAMES), index("right_eye_center", EXTENDED_NAMES)


class MetricsSchemaError(FkdError, ValueError):
    """A metrics mapping that does not have the agreed keys and value ranges."""


def _points(coords: np.ndarray) -> np.ndarray:
    return np.asarray(coords, dtype=np.float64).reshape(len(coords), -1, 2)


def point_errors(pred: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Euclidean error (N, K) of each point; NaN where the target point is not labelled (x or y missing)."""
    diff = _points(pred) - _points(targets)
    return np.hypot(diff[..., 0], diff[..., 1])  # NaN propagates from missing targets


def inter_ocular(targets: np.ndarray) -> np.ndarray:
    """True distance (N,) between the left and right eye centres of extended targets; NaN where either is missing."""
    pts = _points(targets)
    return np.hypot(*(pts[:, _LEFT_EYE] - pts[:, _RIGHT_EYE]).T)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if values.size else None


def score(pred: np.ndarray, keypoints: np.ndarray) -> dict[str, float | None]:
    """The metrics of :data:`METRIC_KEYS` for extended predictions (N, 34) against Kaggle rows (N, 30)."""
    pred = np.asarray(pred, dtype=np.float64)
    targets = to_extended(keypoints).astype(np.float64)
    if pred.shape != targets.shape:
        raise ValueError(f"predictions have shape {pred.shape}, expected {targets.shape} (extended layout)")
    diff = pred - targets  # NaN where not labelled
    complete = complete_mask(keypoints)
    errors = point_errors(pred, targets)
    iod = inter_ocular(targets)
    faces = np.isfinite(iod) & (iod > 0)
    with np.errstate(invalid="ignore"):
        per_face_nme = np.nanmean(errors[faces], axis=1) / iod[faces] if faces.any() else np.zeros(0)
    labelled = np.isfinite(errors[faces])
    ratios = (errors[faces] / iod[faces, None])[labelled]
    out = {
        "rmse": finite_rmse(diff),
        "rmse_complete": finite_rmse(diff[complete]),
        "rmse_partial": finite_rmse(diff[~complete]),
        "mae": _mean_or_none(np.abs(diff[np.isfinite(diff)])),
        "nme": _mean_or_none(per_face_nme[np.isfinite(per_face_nme)]),
    }
    for key, fraction in PCK_FRACTIONS.items():
        out[key] = _mean_or_none((ratios <= fraction).astype(np.float64))
    return out


def per_keypoint(pred: np.ndarray, keypoints: np.ndarray) -> list[dict]:
    """Per extended point: RMSE over its labelled coordinates, mean Euclidean error, labelled count (points without labels are left out)."""
    targets = to_extended(keypoints).astype(np.float64)
    diff = _points(pred) - _points(targets)
    errors = point_errors(pred, targets)
    rows = []
    for k, name in enumerate(EXTENDED_NAMES):
        present = np.isfinite(errors[:, k])
        if not present.any():
            continue
        rows.append({
            "keypoint": name,
            "rmse": float(np.sqrt(np.mean(diff[present, k] ** 2))),
            "mean_error": float(errors[present, k].mean()),
            "labelled": int(present.sum()),
        })
    return rows


def per_image_error(pred: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Mean point-to-point error (N,) of each face over its labelled points, pixels (NaN for a face without any)."""
    errors = point_errors(pred, to_extended(keypoints))
    counts = np.isfinite(errors).sum(axis=1)
    return np.where(counts > 0, np.nansum(errors, axis=1) / np.maximum(counts, 1), np.nan)


def check_metrics(metrics: dict, name: str = "metrics") -> dict:
    """Raise :class:`MetricsSchemaError` unless ``metrics`` has exactly :data:`METRIC_KEYS` with valid values."""
    if not isinstance(metrics, dict):
        raise MetricsSchemaError(f"{name}: expected a mapping, got {type(metrics).__name__}")
    keys = tuple(metrics)
    if set(keys) != set(METRIC_KEYS):
        missing = [k for k in METRIC_KEYS if k not in metrics]
        extra = [k for k in keys if k not in METRIC_KEYS]
        raise MetricsSchemaError(f"{name}: keys must be {', '.join(METRIC_KEYS)}; missing {missing}, unexpected {extra}")
    for key in METRIC_KEYS:
        value = metrics[key]
        if value is None and key not in REQUIRED_KEYS:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise MetricsSchemaError(f"{name}: '{key}' must be a finite number{'' if key in REQUIRED_KEYS else ' or null'}, got {value!r}")
        if value < 0:
            raise MetricsSchemaError(f"{name}: '{key}' must not be negative, got {value!r}")
        if key in PCK_FRACTIONS and value > 1:
            raise MetricsSchemaError(f"{name}: '{key}' is a fraction and must be at most 1, got {value!r}")
    return metrics
