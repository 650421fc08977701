"""train_resnet: data/split -> models/resnet.pt + dvclive metrics.

Usage: python -m stages.train_resnet SPLIT_DIR MODEL_PATH METRICS_DIR
"""
from fkd.cli import log, run_stage
from fkd.config import load_params
from fkd.train_result import run_training


def main(argv: list[str]) -> None:
    split_dir, model_path, metrics_dir = argv
    p = load_params().resnet
    from fkd.torch_train import train_resnet

    result = run_training(train_resnet, split_dir, metrics_dir, p, model_path)
    log.info("best val RMSE %.3f px at epoch %d (%.0f s, %.1f img/s on %s)", result.best_val_rmse, result.best_epoch,
             result.train_seconds, result.images_per_second, result.device)


if __name__ == "__main__":
    run_stage(main)
