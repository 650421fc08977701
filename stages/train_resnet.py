"""train_resnet: data/split, fold K -> models/resnet/K.safetensors + dvclive metrics.

Usage: python -m stages.train_resnet SPLIT_DIR FOLD MODEL_PATH METRICS_DIR
"""
from fkd.cli import run_stage
from fkd.config import load_params
from fkd.train_result import run_training


def main(argv: list[str]) -> None:
    split_dir, fold, model_path, metrics_dir = argv
    from fkd.models.resnet.train import train

    run_training(train, split_dir, int(fold), metrics_dir, load_params("resnet").resnet, model_path)


if __name__ == "__main__":
    run_stage(main)
