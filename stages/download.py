"""download: the competition files -> data/raw (params data, synthetic).  Usage: python -m stages.download RAW_DIR"""
from fkd.core.cli import run_stage
from fkd.core.config import load_params
from fkd.sources.download import fetch_raw


def main(argv: list[str]) -> None:
    (out_dir,) = argv
    p = load_params("data", "synthetic")
    fetch_raw(p.data, p.synthetic, out_dir)


if __name__ == "__main__":
    run_stage(main)
