"""split: data/prepared -> data/split/{images,keypoints,val_fold}.npy (each row's validation fold).

Usage: python -m stages.split PREPARED_DIR OUT_DIR
"""
from fkd.cli import log, run_stage
from fkd.config import load_params
from fkd.data import write_split


def main(argv: list[str]) -> None:
    prepared_dir, out_dir = argv
    p = load_params().split
    counts = write_split(prepared_dir, out_dir, p.val_fraction, p.seed, folds=len(p.folds))
    for k, fold in enumerate(counts["folds"]):
        log.info("split: fold %d of %d: %d train, %d validation rows", k, len(p.folds), fold["train"], fold["val"])


if __name__ == "__main__":
    run_stage(main)
