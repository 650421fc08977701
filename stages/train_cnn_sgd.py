"""train_cnn_sgd: fold K's phase-1 model -> models/cnn_sgd/K.keras + dvclive metrics (CNN phase 2, SGD fine-tuning).

Usage: python -m stages.train_cnn_sgd SPLIT_DIR FOLD START_MODEL MODEL_PATH METRICS_DIR
"""
from pathlib import Path

from fkd.cli import StageError, log, run_stage
from fkd.config import load_params
from fkd.train_result import run_training


def main(argv: list[str]) -> None:
    split_dir, fold, start_model, model_path, metrics_dir = argv
    p = load_params("cnn").cnn
    if not Path(start_model).exists():
        raise StageError(f"{start_model} not found: run the train_cnn_adam stage first")
    from fkd.models.cnn.train import train_sgd

    result = run_training(train_sgd, split_dir, int(fold), metrics_dir, p, start_model, model_path)
    log.info("phase 2 (SGD) against phase 1's %.3f px: %s", result.adam_val_rmse,
             "improved" if result.improved_on_adam else "no improvement, kept phase 1's weights")


if __name__ == "__main__":
    run_stage(main)
