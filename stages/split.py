"""split: data/prepared -> data/split/{train,val}_*.npy.  Usage: python -m stages.split PREPARED_DIR OUT_DIR"""
from fkd.cli import log, run_stage
from fkd.config import load_params
from fkd.data import write_split


def main(argv: list[str]) -> None:
    prepared_dir, out_dir = argv
    p = load_params().split
    counts = write_split(prepared_dir, out_dir, p.val_fraction, p.seed)
    log.info("split: %(train)d train, %(val)d validation rows", counts)


if __name__ == "__main__":
    run_stage(main)
