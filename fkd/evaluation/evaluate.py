"""The evaluation of the trained models, their ensemble, flip TTA and a mean-shape baseline, out of fold.

Each model predicts its fold's validation rows once (:func:`out_of_fold_predictions`); the variants
are built from those predictions (:func:`variant_predictions`) and scored with :mod:`fkd.evaluation.metrics`.
The files are written by :mod:`fkd.evaluation.outputs`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from fkd.core.config import EnsembleParams
from fkd.core.data import DataError, Part
from fkd.core.keypoints import N_COORDS, masked_rmse, to_extended, widen_to_extended
from fkd.evaluation.ensemble import combine, cross_fitted, fit_weights
from fkd.evaluation.inference import ModelFn, Transform, ensemble_weights, tta_average
from fkd.evaluation.metrics import METRIC_KEYS, check_metrics, per_image_error, per_keypoint, score
from fkd.models.registry import check_predictions

MEAN_SHAPE = "mean_shape"
#: Folds of the cross-fitting that scores a fitted ensemble honestly.
ENSEMBLE_FOLDS = 5


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


def model_predictions(model_fn: ModelFn, images: np.ndarray, tta_flip: bool, transforms: list[Transform] = ()) -> dict[str, np.ndarray]:
    """One model's predictions, computed once: ``direct`` and, with ``tta_flip``, ``tta`` (flip, plus ``transforms``:
    :func:`fkd.evaluation.inference.tta_average`)."""
    direct = np.asarray(model_fn(images), dtype=np.float64)
    out = {"direct": direct}
    if tta_flip:
        out["tta"] = tta_average(model_fn, images, transforms, direct)
    return out


def out_of_fold_predictions(fold_fns: list[ModelFn], parts: list[tuple[Part, Part]], tta_flip: bool,
                            transforms: list[Transform] = ()) -> dict[str, np.ndarray]:
    """One model's :func:`model_predictions` on every fold's validation part, by that fold's model
    (``fold_fns[k]`` was trained on ``parts[k]``'s training part), concatenated in fold order."""
    per_fold = [model_predictions(fn, val.images, tta_flip, transforms) for fn, (_, val) in zip(fold_fns, parts, strict=True)]
    return {kind: np.concatenate([pred[kind] for pred in per_fold]) for kind in per_fold[0]}


def variant_predictions(base: dict[str, dict[str, np.ndarray]], keypoints: np.ndarray, p: EnsembleParams,
                        tta_flip: bool, tta_label: str = "flip TTA") -> tuple[dict[str, np.ndarray], dict | None]:
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
            used = "tta" if tta_flip else "direct"
            members, targets = [base[m][used] for m in p.members], to_extended(keypoints)
            weights = fit_weights(members, targets, p.per_keypoint)
            in_sample = masked_rmse(combine(members, weights), targets)
            for kind in kinds:
                oof, _ = cross_fitted([base[m][kind] for m in p.members], targets, p.per_keypoint, ENSEMBLE_FOLDS)
                variants["ensemble" + ("_tta" if kind == "tta" else "")] = oof
            fitted = {"members": list(p.members), "weights": weights, "fitted_on": f"out-of-fold validation, {tta_label if tta_flip else 'direct'}",
                      "rmse_in_sample": round(in_sample, 5), "cross_fit_folds": ENSEMBLE_FOLDS}
        else:
            weights = ensemble_weights(p)
            for kind in kinds:
                variants["ensemble" + ("_tta" if kind == "tta" else "")] = combine([base[m][kind] for m in p.members], weights)
    return variants, fitted


@dataclass
class VariantResult:
    """What one variant scored on the validation split."""

    metrics: dict[str, float | None]
    per_keypoint: list[dict]
    image_errors: np.ndarray  # (N,) mean point error per face, pixels
    predictions: np.ndarray  # (N, 34) extended layout


def evaluate_models(models: dict[str, list[ModelFn]], parts: list[tuple[Part, Part]], p: EnsembleParams,
                    tta_flip: bool, transforms: list[Transform] = ()) -> tuple[dict[str, VariantResult], dict | None]:
    """Score every variant of :func:`variant_predictions` (plus the mean-shape baseline) out of fold:
    ``models[name][k]`` predicts fold k's validation part ``parts[k][1]``, and the scores are over all
    validation parts together (:func:`validation_rows`; with one fold, the hold-out). Returns the results
    and the fitted ensemble weights (or None)."""
    _check_not_empty(parts)  # before any model is asked to predict nothing
    base = {name: out_of_fold_predictions(fns, parts, tta_flip, transforms) for name, fns in models.items()}
    return evaluate_predictions(base, parts, p, tta_flip, tta_label(transforms))


def tta_label(transforms: list[Transform]) -> str:
    """What the TTA predictions are, in words: ``flip TTA``, or ``TTA: flip, turns [-5, 5], scales [0.95]``."""
    turns = [d for s, d in transforms if s == 1.0]
    scales = [s for s, d in transforms if d == 0.0 and s != 1.0]
    return "flip TTA" if not transforms else f"TTA: flip, turns {turns}, scales {scales}"


def _check_not_empty(parts: list[tuple[Part, Part]]) -> None:
    if not any(len(val.rows) for _, val in parts):
        raise DataError("the validation split is empty: nothing to evaluate")


def evaluate_predictions(base: dict[str, dict[str, np.ndarray]], parts: list[tuple[Part, Part]], p: EnsembleParams,
                         tta_flip: bool, tta_label: str = "flip TTA") -> tuple[dict[str, VariantResult], dict | None]:
    """:func:`evaluate_models` from each model's out-of-fold predictions ``base[name]``
    (:func:`out_of_fold_predictions`), computed already."""
    _check_not_empty(parts)
    val = validation_rows(parts)
    predictions, fitted = variant_predictions(base, val.keypoints, p, tta_flip, tta_label)
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


def summary_table(results: dict[str, VariantResult]) -> str:
    """The metrics as an aligned text table (variant × metric) for the log."""
    width = max(len(n) for n in results)
    lines = [f"{'variant':<{width}}  " + "  ".join(f"{k:>13}" for k in METRIC_KEYS)]
    for name, r in results.items():
        cells = ["-" if r.metrics[k] is None else f"{r.metrics[k]:.4f}" for k in METRIC_KEYS]
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)
