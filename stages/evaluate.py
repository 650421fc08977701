"""evaluate: both models, their ensemble, flip TTA and a mean-shape baseline on the validation split.

Usage: python -m stages.evaluate SPLIT_DIR MODELS_DIR METRICS_DIR PLOTS_DIR
Writes METRICS_DIR/<variant>.json (DVC metrics) and PLOTS_DIR/{per_keypoint/*.csv, faces/*.png, error_histogram.png}.
"""
from fkd.cli import StageError, log, run_stage
from fkd.config import load_params
from fkd.data import load_part


def main(argv: list[str]) -> None:
    split_dir, models_dir, metrics_dir, plots_dir = argv
    p = load_params()
    from fkd.evaluate import ENSEMBLE_MEMBERS, check_evaluate_params, evaluate_models, summary_table, write_outputs
    from fkd.inference import load_model_fn

    check_evaluate_params(p.evaluate)
    train, val = load_part(split_dir, "train"), load_part(split_dir, "val")
    try:
        models = {kind: load_model_fn(kind, models_dir) for kind in ENSEMBLE_MEMBERS}
        results = evaluate_models(models, train, val, p.ensemble.weights, p.evaluate.tta_flip)
    except (FileNotFoundError, ValueError) as exc:
        raise StageError(str(exc)) from None
    write_outputs(results, val, p.evaluate, metrics_dir, plots_dir)
    log.info("validation split: %d faces\n%s", len(val.images), summary_table(results))


if __name__ == "__main__":
    run_stage(main)
