"""evaluate: every model, the ensemble, TTA (flip, plus params tta) and a mean-shape baseline, out of fold: each fold's
validation rows scored by the models of that fold (with one fold, the hold-out).

Usage: python -m stages.evaluate SPLIT_DIR MODELS_DIR METRICS_DIR PLOTS_DIR
Writes METRICS_DIR/<variant>.json (DVC metrics), MODELS_DIR/ensemble.json (the ensemble's weights:
fitted on the out-of-fold predictions, or the fixed ones of params) and
PLOTS_DIR/{per_keypoint/*.csv, faces/*.png, error_histogram.png}.
"""
from pathlib import Path

import numpy as np

from fkd.core.cli import log, run_stage
from fkd.core.config import load_params
from fkd.core.data import load_fold


def main(argv: list[str]) -> None:
    split_dir, models_dir, metrics_dir, plots_dir = argv
    p = load_params("split", "ensemble", "tta", "evaluate")
    from fkd.evaluation.ensemble import save_weights
    from fkd.evaluation.evaluate import evaluate_models, summary_table, validation_rows
    from fkd.evaluation.inference import check_fold_models, ensemble_weights, load_model_fn, transforms_of
    from fkd.evaluation.outputs import write_outputs
    from fkd.models.registry import ENSEMBLE_FILE, MODEL_NAMES

    check_fold_models(models_dir, p.split.folds)
    parts = [load_fold(split_dir, k, train_images=False) for k in p.split.folds]  # training labels only: the mean shape
    models = {kind: [load_model_fn(kind, models_dir, k) for k in p.split.folds] for kind in MODEL_NAMES}
    results, fitted = evaluate_models(models, parts, p.ensemble, p.evaluate.tta_flip, transforms_of(p.tta))
    val = validation_rows(parts)
    if fitted is None:
        fitted = {"members": list(p.ensemble.members), "weights": ensemble_weights(p.ensemble), "fitted_on": "params (fixed weights)"}
    members, weights = fitted.pop("members"), np.asarray(fitted.pop("weights"))
    # flat numbers too, so that `dvc metrics show` lists them: per keypoint, each member's mean over the points
    flat = weights if weights.ndim == 1 else weights.mean(axis=1)
    fitted.update({f"weight_{m}": round(float(w), 6) for m, w in zip(members, flat)})
    write_outputs(results, val, p.evaluate, metrics_dir, plots_dir)
    save_weights(Path(models_dir) / ENSEMBLE_FILE, members, weights, **fitted)
    log.info("%s: %d faces\n%s", "validation split" if len(parts) == 1 else f"out of fold, {len(parts)} folds", len(val.images),
             summary_table(results))
    log.info("ensemble weights (%s): %s", fitted["fitted_on"], (Path(models_dir) / ENSEMBLE_FILE).read_text().strip())


if __name__ == "__main__":
    run_stage(main)
