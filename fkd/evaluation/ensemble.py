"""Ensemble weights fitted on data, not guessed: non-negative, summing to 1, per member or per keypoint.

Every member predicts (N, 34) keypoints in the extended layout of :mod:`fkd.core.keypoints`; targets are
(N, 34) with NaN where a coordinate is not labelled (``to_extended`` of Kaggle rows). The weights
minimise the squared error of the weighted mean over the labelled coordinates, which is the RMSE
the project scores.

Weights fitted on rows and then scored on the same rows look better than they are. Report the RMSE
of :func:`cross_fitted` (each row combined with weights fitted on the other folds); ship the weights
of :func:`fit_weights` on all rows.

The fit is exact: the simplex-constrained least squares ``min ||A w - y||`` (``w >= 0``,
``sum(w) = 1``) equals ``min ||D w||`` with ``D = A - y`` (column-wise), and the non-negative least
squares ``min_v ||D v||^2 + s^2 (1 - sum v)^2`` (``v >= 0``, any ``s > 0``) has ``v = t w*`` with
``t = s^2 / (s^2 + ||D w*||^2) > 0``, so ``w* = v / sum(v)``. The NNLS is :func:`scipy.optimize.nnls`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from fkd.core.errors import EnsembleWeightsError
from fkd.core.io import save_json
from fkd.core.keypoints import EXTENDED_NAMES, N_EXTENDED

N_OUTPUTS = 2 * N_EXTENDED


# ----------------------------------------------------------------------------- validation


def _check_predictions(predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Members' predictions stacked as float64 (M, N, 34), or ValueError naming the problem."""
    if isinstance(predictions, np.ndarray) or not isinstance(predictions, (list, tuple)):
        raise ValueError(f"predictions must be a list of (N, {N_OUTPUTS}) arrays, one per member, got {type(predictions).__name__}")
    if not predictions:
        raise ValueError("predictions is empty: an ensemble needs at least one member")
    arrays = [np.asarray(p) for p in predictions]
    for m, p in enumerate(arrays):
        if p.ndim != 2 or p.shape[1] != N_OUTPUTS:
            raise ValueError(f"member {m} predictions have shape {p.shape}, expected (N, {N_OUTPUTS}) (the extended layout)")
        if p.shape != arrays[0].shape:
            raise ValueError(f"member {m} predictions have shape {p.shape}, member 0 has {arrays[0].shape}: all members must predict the same rows")
        if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating):
            raise ValueError(f"member {m} predictions have dtype {p.dtype}, expected real numbers")
        bad = ~np.isfinite(p)
        if bad.any():
            raise ValueError(f"member {m} predictions are not finite in {int(bad.any(axis=1).sum())} rows")
    return np.stack(arrays).astype(np.float64)


def _check_keypoints(keypoints: np.ndarray, n_rows: int) -> np.ndarray:
    """Targets as float64 (N, 34) with NaN for unlabelled, or ValueError naming the problem."""
    y = np.asarray(keypoints)
    if y.shape != (n_rows, N_OUTPUTS):
        raise ValueError(f"keypoints have shape {y.shape}, expected ({n_rows}, {N_OUTPUTS}) like the predictions "
                         "(use fkd.core.keypoints.to_extended on Kaggle rows)")
    y = y.astype(np.float64)
    if np.isinf(y).any():
        raise ValueError(f"keypoints contain {int(np.isinf(y).sum())} infinite values: mark unlabelled coordinates with NaN")
    if not np.isfinite(y).any():
        raise ValueError("keypoints have no labelled (finite) coordinate to fit or score on")
    return y


def _check_weights(weights: np.ndarray, n_members: int) -> np.ndarray:
    """Weights as float64 (M,) or (M, 17), finite, non-negative, positive sum per point."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape not in ((n_members,), (n_members, N_EXTENDED)):
        raise ValueError(f"weights have shape {w.shape}, expected ({n_members},) or ({n_members}, {N_EXTENDED}) for {n_members} members")
    if not np.isfinite(w).all():
        raise ValueError("weights are not all finite")
    if (w < 0).any():
        raise ValueError(f"weights must be non-negative, got minimum {w.min():g}")
    if (w.sum(axis=0) <= 0).any():
        raise ValueError("weights must have a positive sum (for every point, when per keypoint)")
    return w


# ----------------------------------------------------------------------------- solver


def _simplex_lstsq(columns: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Weights w >= 0, sum 1 minimising ||columns @ w - target|| (columns (K, M), target (K,))."""
    n_members = columns.shape[1]
    if n_members == 1:
        return np.ones(1)
    # Members with identical predictions are one member: its weight goes to the first of them.
    first = [m for m in range(n_members) if not any(np.array_equal(columns[:, m], columns[:, k]) for k in range(m))]
    if len(first) < n_members:
        w = np.zeros(n_members)
        w[first] = _simplex_lstsq(columns[:, first], target)
        return w
    d = columns - target[:, None]  # the residual of each member alone
    norms = (d**2).sum(axis=0)
    if norms.min() == 0.0:  # a member is exact on these coordinates
        w = np.zeros(n_members)
        w[int(np.argmin(norms))] = 1.0
        return w
    # Scale the sum row like the smallest residual so that t = s^2 / (s^2 + r^2) lies in [1/2, 1).
    s = math.sqrt(norms.min())
    aug = np.vstack([d, np.full((1, n_members), s)])
    rhs = np.zeros(len(aug))
    rhs[-1] = s
    # Compress the tall system to (M, M) by QR: same minimiser, tiny NNLS.
    q, r = np.linalg.qr(aug)
    v = nnls(r, q.T @ rhs)[0]
    total = v.sum()
    if total <= 0:  # cannot happen in exact arithmetic (t > 0); fall back to the best single member
        v = np.zeros(n_members)
        v[int(np.argmin(norms))] = 1.0
        total = 1.0
    return v / total


# ----------------------------------------------------------------------------- public API


def fit_weights(predictions: list[np.ndarray], keypoints: np.ndarray, per_keypoint: bool = False) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the squared error of the weighted mean.

    Only labelled (finite) target coordinates count. Returns (M,) weights, or (M, 17) with one weight
    vector per extended point when ``per_keypoint``; a point without labelled coordinates gets the
    per-member weights. Exact and deterministic (ties between identical members go to the first).
    """
    stacked = _check_predictions(predictions)
    y = _check_keypoints(keypoints, stacked.shape[1])
    labelled = np.isfinite(y)
    overall = _simplex_lstsq(stacked[:, labelled].T, y[labelled])
    if not per_keypoint:
        return overall
    weights = np.repeat(overall[:, None], N_EXTENDED, axis=1)
    for p in range(N_EXTENDED):
        cols = slice(2 * p, 2 * p + 2)
        mask = labelled[:, cols]
        if mask.any():
            weights[:, p] = _simplex_lstsq(stacked[:, :, cols][:, mask].T, y[:, cols][mask])
    return weights


def combine(predictions: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Weighted mean (N, 34) of the members' predictions with (M,) or (M, 17) weights.

    Weights are normalised to sum to 1 (per point for per-keypoint weights), so rounded saved
    weights combine exactly as a mean.
    """
    stacked = _check_predictions(predictions)
    w = _check_weights(weights, len(stacked))
    w = w / w.sum(axis=0)
    if w.ndim == 1:
        out = np.tensordot(w, stacked, axes=1)
    else:
        out = (np.repeat(w, 2, axis=1)[:, None, :] * stacked).sum(axis=0)
    dtypes = [np.asarray(p).dtype for p in predictions]
    dtype = np.result_type(*dtypes)
    return out.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)


def fold_ids(n_rows: int, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold (0..folds-1) of each of ``n_rows`` rows: a seeded shuffle split into near-equal groups."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer of at least 2, got {folds!r}")
    if n_rows < folds:
        raise ValueError(f"cannot split {n_rows} rows into {folds} folds: need at least one row per fold")
    order = np.random.default_rng(seed).permutation(n_rows)
    ids = np.empty(n_rows, dtype=np.int64)
    for k, rows in enumerate(np.array_split(order, folds)):
        ids[rows] = k
    return ids


def cross_fitted(predictions: list[np.ndarray], keypoints: np.ndarray, per_keypoint: bool = False,
                 folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold ensemble predictions (N, 34) and the weights used, (folds, M) or (folds, M, 17).

    Rows are split by :func:`fold_ids`; each fold is combined with weights fitted on the other
    folds only, so the RMSE of the result is an honest estimate of the fitted ensemble's error.
    """
    stacked = _check_predictions(predictions)
    y = _check_keypoints(keypoints, stacked.shape[1])
    ids = fold_ids(stacked.shape[1], folds, seed)
    out = np.empty(stacked.shape[1:], dtype=np.float64)
    used = []
    for k in range(folds):
        held, rest = ids == k, ids != k
        if not np.isfinite(y[rest]).any():
            raise ValueError(f"fold {k}: the other folds have no labelled coordinate to fit weights on")
        w = fit_weights(list(stacked[:, rest]), y[rest], per_keypoint=per_keypoint)
        out[held] = combine(list(stacked[:, held]), w)
        used.append(w)
    return out, np.stack(used)


# ----------------------------------------------------------------------------- weights file


def save_weights(path: str | Path, members: list[str], weights: np.ndarray, **extra) -> None:
    """Write ``{"members": [...], "weights": ..., **extra}`` atomically (weights rounded to 6 decimals).

    Per-keypoint weights are nested lists ``weights[member][point]`` and the file also records
    ``"points"`` (the extended point names) so it reads on its own.
    """
    members = list(members)
    if not members or not all(isinstance(m, str) and m for m in members):
        raise ValueError(f"members must be a non-empty list of names, got {members!r}")
    if len(set(members)) != len(members):
        raise ValueError(f"members must be distinct, got {members!r}")
    w = _check_weights(weights, len(members))
    if not np.allclose(w.sum(axis=0), 1.0, rtol=0, atol=1e-6):
        raise ValueError("weights must sum to 1 (per point when per keypoint), as fit_weights returns them")
    clash = {"members", "weights"} & extra.keys() | ({"points"} & extra.keys() if w.ndim == 2 else set())
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite the weights file's own fields")
    doc: dict = {"members": members, "weights": np.round(w, 6).tolist()}
    if w.ndim == 2:
        doc["points"] = list(EXTENDED_NAMES)
    doc.update(extra)
    save_json(path, doc)


def _not_a_number(value, where: str, depth: int = 0) -> str | None:
    """The first entry of a weights value (a number, or lists of them two deep) that is not a real number
    (a string, true/false, null, ...), said as a problem; None if there is none. Shapes are checked later."""
    if isinstance(value, list) and depth < 2:
        return next((p for i, v in enumerate(value) if (p := _not_a_number(v, f"{where}[{i}]", depth + 1))), None)
    if isinstance(value, bool):
        return f"'{where}' is {json.dumps(value)}: weights must be numbers, not true/false"
    if isinstance(value, (int, float)):
        return None
    shown = f"the string {json.dumps(value)}" if isinstance(value, str) else "null" if value is None else f"a {type(value).__name__}"
    return f"'{where}' is {shown:.80}, not a number"


def load_weights(path: str | Path, expected_members: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Members and weights ((M,) or (M, 17)) from a file of :func:`save_weights`.

    Raises :class:`EnsembleWeightsError` naming the file and the problem: missing file, bad JSON,
    missing fields, wrong shapes, negative or non-finite weights, weights not summing to 1, or
    members other than ``expected_members`` (in that order) when given.
    """
    path = Path(path)

    def fail(problem: str) -> EnsembleWeightsError:
        return EnsembleWeightsError(f"{path}: {problem}")

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise fail("ensemble weights file not found: fit the ensemble first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read the ensemble weights file ({exc})") from exc
    try:
        doc = json.loads(text, parse_constant=lambda c: float("nan"))
    except json.JSONDecodeError as exc:
        raise fail(f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise fail(f"expected a JSON object with 'members' and 'weights', got {type(doc).__name__}")
    for key in ("members", "weights"):
        if key not in doc:
            raise fail(f"missing '{key}'")
    members = doc["members"]
    if not isinstance(members, list) or not members or not all(isinstance(m, str) and m for m in members):
        raise fail(f"'members' must be a non-empty list of names, got {members!r}")
    if len(set(members)) != len(members):
        raise fail(f"'members' are not distinct: {members!r}")
    if expected_members is not None and list(members) != list(expected_members):
        raise fail(f"weights are for members {members}, but the ensemble has {list(expected_members)}: refit the weights")
    raw = doc["weights"]
    problem = _not_a_number(raw, "weights")
    if problem:
        raise fail(problem)
    try:
        w = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(f"'weights' must be a list of numbers or of {N_EXTENDED}-number lists, got {raw!r:.200}") from None
    try:
        w = _check_weights(w, len(members))
    except ValueError as exc:
        raise fail(f"{exc} (members {members})") from None
    sums = w.sum(axis=0)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-4):
        worst = float(np.atleast_1d(sums)[np.argmax(np.abs(np.atleast_1d(sums) - 1.0))])
        raise fail(f"'weights' must sum to 1 (per point when per keypoint), got a sum of {worst:g}")
    if w.ndim == 2 and "points" in doc and doc["points"] != list(EXTENDED_NAMES):
        raise fail(f"'points' {doc['points']!r} are not the extended layout {list(EXTENDED_NAMES)}")
    return list(members), w
