"""Validation metrics of the trained models, their ensemble and a mean-shape baseline.

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

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fkd.core.config import EnsembleParams, EvaluateParams
from fkd.core.data import DataError, Part
from fkd.evaluation.ensemble import combine
from fkd.core.errors import FkdError
from fkd.evaluation.inference import ModelFn, ensemble_weights, flip_average
from fkd.core.io import atomic_path, save_json, staged_dir
from fkd.core.keypoints import (EXTENDED_NAMES, N_COORDS, complete_mask, finite_rmse, from_extended, index, masked_rmse, to_extended,
                           widen_to_extended)
from fkd.models.registry import MODEL_NAMES, check_predictions

log = logging.getLogger("fkd.evaluation.evaluate")

#: The keys of every metrics file, in the order they are written.
METRIC_KEYS: tuple[str, ...] = ("rmse", "rmse_complete", "rmse_partial", "mae", "nme", "pck_05", "pck_10")
#: Keys that must be numbers; the others may be null when nothing was there to score.
REQUIRED_KEYS: tuple[str, ...] = ("rmse", "mae")
PCK_FRACTIONS = {"pck_05": 0.05, "pck_10": 0.10}
MEAN_SHAPE = "mean_shape"
#: Variants drawn on face grids and shown in the per-keypoint chart (TTA twins and the baseline are in the files).
MODEL_VARIANTS: tuple[str, ...] = (*MODEL_NAMES, "ensemble")
#: Folds of the cross-fitting that scores a fitted ensemble honestly.
ENSEMBLE_FOLDS = 5

_LEFT_EYE, _RIGHT_EYE = index("left_eye_center", EXTENDED_NAMES), index("right_eye_center", EXTENDED_NAMES)


class MetricsSchemaError(FkdError, ValueError):
    """A metrics mapping that does not have the agreed keys and value ranges."""


# --- metrics on arrays -------------------------------------------------------------------------


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


# --- model variants ------------------------------------------------------------------------------


def mean_shape_fn(train_keypoints: np.ndarray) -> ModelFn:
    """Baseline model function: the training set's mean of each extended coordinate, for every face."""
    targets = to_extended(train_keypoints)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column without labels has no mean
        mean = np.nanmean(targets, axis=0)
    # a scheme without training rows borrows the other scheme's points, like a 30-output model
    mean = np.where(np.isfinite(mean), mean, widen_to_extended(mean[None, :N_COORDS])[0]).astype(np.float32)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.repeat(mean[None], len(images), axis=0)

    return predict


def model_predictions(model_fn: ModelFn, images: np.ndarray, tta_flip: bool) -> dict[str, np.ndarray]:
    """One model's predictions, computed once: ``direct`` and, with ``tta_flip``, ``tta`` (see :func:`flip_average`)."""
    direct = np.asarray(model_fn(images), dtype=np.float64)
    out = {"direct": direct}
    if tta_flip:
        mirrored = np.asarray(model_fn(np.ascontiguousarray(images[:, :, ::-1])), dtype=np.float64)
        out["tta"] = flip_average(direct, mirrored, images.shape[2])
    return out


def out_of_fold_predictions(fold_fns: list[ModelFn], parts: list[tuple[Part, Part]], tta_flip: bool) -> dict[str, np.ndarray]:
    """One model's :func:`model_predictions` on every fold's validation part, by that fold's model
    (``fold_fns[k]`` was trained on ``parts[k]``'s training part), concatenated in fold order."""
    per_fold = [model_predictions(fn, val.images, tta_flip) for fn, (_, val) in zip(fold_fns, parts, strict=True)]
    return {kind: np.concatenate([pred[kind] for pred in per_fold]) for kind in per_fold[0]}


def variant_predictions(base: dict[str, dict[str, np.ndarray]], keypoints: np.ndarray, p: EnsembleParams,
                        tta_flip: bool) -> tuple[dict[str, np.ndarray], dict | None]:
    """Predictions (N, 34) of every scored variant from each model's :func:`model_predictions` ``base``:
    each model, ``<model>_tta`` with flip TTA, and ``ensemble``/``ensemble_tta`` when every member of
    ``p.members`` is among them.

    With ``p.weights: fitted`` the ensemble's weights are fitted on these rows (:func:`fkd.evaluation.ensemble.fit_weights`,
    on the TTA predictions when ``tta_flip``, as submit uses them) and its scored predictions are the
    cross-fitted ones (each fold combined with weights fitted on the other folds), so its metrics stay honest.
    Returns the predictions and, when fitted, ``{"members", "weights", ...}`` for :func:`fkd.evaluation.ensemble.save_weights`.
    """
    variants = {name: pred["direct"] for name, pred in base.items()}
    if tta_flip:
        variants.update({f"{name}_tta": pred["tta"] for name, pred in base.items()})
    fitted = None
    if all(m in base for m in p.members):
        kinds = ["direct", "tta"] if tta_flip else ["direct"]
        if p.weights == "fitted":
            from fkd.evaluation.ensemble import cross_fitted, fit_weights

            used = "tta" if tta_flip else "direct"
            members, targets = [base[m][used] for m in p.members], to_extended(keypoints)
            weights = fit_weights(members, targets, p.per_keypoint)
            in_sample = masked_rmse(combine(members, weights), targets)
            for kind in kinds:
                oof, _ = cross_fitted([base[m][kind] for m in p.members], targets, p.per_keypoint, ENSEMBLE_FOLDS)
                variants["ensemble" + ("_tta" if kind == "tta" else "")] = oof
            fitted = {"members": list(p.members), "weights": weights, "fitted_on": f"out-of-fold validation, {'flip TTA' if tta_flip else 'direct'}",
                      "rmse_in_sample": round(in_sample, 5), "cross_fit_folds": ENSEMBLE_FOLDS}
        else:
            weights = ensemble_weights(p)
            for kind in kinds:
                variants["ensemble" + ("_tta" if kind == "tta" else "")] = combine([base[m][kind] for m in p.members], weights)
    return variants, fitted


# --- the evaluation ------------------------------------------------------------------------------


@dataclass
class VariantResult:
    """What one variant scored on the validation split."""

    metrics: dict[str, float | None]
    per_keypoint: list[dict]
    image_errors: np.ndarray  # (N,) mean point error per face, pixels
    predictions: np.ndarray  # (N, 34) extended layout


def evaluate_models(models: dict[str, list[ModelFn]], parts: list[tuple[Part, Part]], p: EnsembleParams,
                    tta_flip: bool) -> tuple[dict[str, VariantResult], dict | None]:
    """Score every variant of :func:`variant_predictions` (plus the mean-shape baseline) out of fold:
    ``models[name][k]`` predicts fold k's validation part ``parts[k][1]``, and the scores are over all
    validation parts together (:func:`validation_rows`; with one fold, the hold-out). Returns the results
    and the fitted ensemble weights (or None)."""
    _check_not_empty(parts)  # before any model is asked to predict nothing
    base = {name: out_of_fold_predictions(fns, parts, tta_flip) for name, fns in models.items()}
    return evaluate_predictions(base, parts, p, tta_flip)


def _check_not_empty(parts: list[tuple[Part, Part]]) -> None:
    if not any(len(val.rows) for _, val in parts):
        raise DataError("the validation split is empty: nothing to evaluate")


def evaluate_predictions(base: dict[str, dict[str, np.ndarray]], parts: list[tuple[Part, Part]], p: EnsembleParams,
                         tta_flip: bool) -> tuple[dict[str, VariantResult], dict | None]:
    """:func:`evaluate_models` from each model's out-of-fold predictions ``base[name]``
    (:func:`out_of_fold_predictions`), computed already."""
    _check_not_empty(parts)
    val = validation_rows(parts)
    predictions, fitted = variant_predictions(base, val.keypoints, p, tta_flip)
    predictions[MEAN_SHAPE] = np.concatenate([mean_shape_fn(train.keypoints)(part.images) for train, part in parts])
    results = {}
    for name, pred in predictions.items():
        pred = check_predictions(pred, len(val.images), f"model '{name}'")
        metrics = check_metrics(score(pred, val.keypoints), name)
        results[name] = VariantResult(metrics, per_keypoint(pred, val.keypoints), per_image_error(pred, val.keypoints), pred)
    return results, fitted


def validation_rows(parts: list[tuple[Part, Part]]) -> Part:
    """Every fold's validation part, concatenated in fold order (the rows :func:`evaluate_models` scores)."""
    vals = [val for _, val in parts]
    return Part(np.concatenate([v.images for v in vals]), np.concatenate([v.keypoints for v in vals]),
                np.concatenate([v.rows for v in vals]))


def pick_grid_faces(errors: np.ndarray, n_faces: int, n_worst: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``n_faces`` faces to draw: the ``n_worst`` worst, and the rest spread evenly over the
    error ranking of the others (from the best to the typical). Returns (typical, worst)."""
    order = np.argsort(-np.nan_to_num(errors, nan=-1.0), kind="stable")  # worst first
    n_faces = min(n_faces, len(errors))
    n_worst = min(n_worst, n_faces)
    worst, rest = order[:n_worst], order[n_worst:][::-1]  # rest: best first
    n_typical = n_faces - n_worst
    typical = rest[np.linspace(0, len(rest) - 1, n_typical).round().astype(int)] if n_typical and len(rest) else rest[:0]
    return typical, worst


def write_per_keypoint_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        lines = ["keypoint,rmse,mean_error,labelled"]
        lines += [f"{r['keypoint']},{r['rmse']:.4f},{r['mean_error']:.4f},{r['labelled']}" for r in rows]
        tmp.write_text("\n".join(lines) + "\n")


def _rounded(metrics: dict) -> dict:
    return {k: (None if v is None else round(v, 5)) for k, v in metrics.items()}


def write_outputs(results: dict[str, VariantResult], val: Part, p: EvaluateParams, metrics_dir: str | Path, plots_dir: str | Path) -> None:
    """Write ``metrics_dir/<variant>.json`` and, under ``plots_dir``, ``per_keypoint/<variant>.csv``,
    ``faces/<model>.png`` (validation faces, true vs predicted) and ``error_histogram.png``.

    Each folder is built aside and swapped in whole (:func:`fkd.core.io.staged_dir`), so no stale variant survives a re-run.
    """
    from fkd.evaluation import plots

    metrics_dir, plots_dir = Path(metrics_dir), Path(plots_dir)
    with staged_dir(metrics_dir) as staged_metrics, staged_dir(plots_dir) as staged_plots:
        for name, result in results.items():
            save_json(staged_metrics / f"{name}.json", check_metrics(_rounded(result.metrics), name))
            write_per_keypoint_csv(staged_plots / "per_keypoint" / f"{name}.csv", result.per_keypoint)
        scheme_b = ~complete_mask(val.keypoints)
        for name in MODEL_VARIANTS:
            if name not in results:
                continue
            result = results[name]
            typical, worst = pick_grid_faces(result.image_errors, p.grid_faces, p.worst_faces)
            faces = np.concatenate([typical, worst])
            plots.face_grid(
                staged_plots / "faces" / f"{name}.png",
                val.images[faces],
                val.keypoints[faces],
                from_extended(result.predictions[faces], scheme_b[faces]),
                [f"val row {val.rows[i]}: {result.image_errors[i]:.1f} px" for i in faces],
                worst=np.arange(len(faces)) >= len(typical),
                title=f"{name}: validation faces (true o, predicted x); last {len(worst)} are the worst",
            )
        shown = [n for n in (*MODEL_VARIANTS, "ensemble_tta", MEAN_SHAPE) if n in results]
        plots.error_histogram(staged_plots / "error_histogram.png", {n: results[n].image_errors for n in shown})


def summary_table(results: dict[str, VariantResult]) -> str:
    """The metrics as an aligned text table (variant × metric) for the log."""
    width = max(len(n) for n in results)
    lines = [f"{'variant':<{width}}  " + "  ".join(f"{k:>13}" for k in METRIC_KEYS)]
    for name, r in results.items():
        cells = ["-" if r.metrics[k] is None else f"{r.metrics[k]:.4f}" for k in METRIC_KEYS]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)
