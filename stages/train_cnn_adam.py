"""train_cnn_adam: data/split, fold K -> models/cnn_adam/K.keras + dvclive metrics (CNN phase 1, Adam).

Usage: python -m stages.train_cnn_adam SPLIT_DIR FOLD MODEL_PATH METRICS_DIR
"""
from fkd.cli import run_stage
from fkd.config import load_params
from fkd.train_result import run_training


def main(argv: list[str]) -> None:
    split_dir, fold, model_path, metrics_dir = argv
    from fkd.models.cnn.train import train_adam

    run_training(train_adam, split_dir, int(fold), metrics_dir, load_params("cnn").cnn, model_path)


if __name__ == "__main__":
    run_stage(main)
