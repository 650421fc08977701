"""train_cnn_adam: data/split -> models/cnn_adam.keras + dvclive metrics (CNN phase 1, Adam).

Usage: python -m stages.train_cnn_adam SPLIT_DIR MODEL_PATH METRICS_DIR
"""

from fkd.cli import log, run_stage
from fkd.config import load_params
from fkd.train_result import run_training


def main(argv: list[str]) -> None:
    split_dir, model_path, metrics_dir = argv
    p = load_params().cnn
    from fkd.cnn import train_adam

    result = run_training(train_adam, split_dir, metrics_dir, p, model_path)
    log.info("phase 1 (Adam): best val RMSE %.3f px at epoch %d of %d (%.0f s, %.1f img/s on %s)", result.best_val_rmse,
             result.best_epoch, result.epochs_run, result.train_seconds, result.images_per_second, result.device)


if __name__ == "__main__":
    run_stage(main)
