"""parse: data/raw/*.csv -> data/prepared/*.npy.  Usage: python -m stages.parse RAW_DIR OUT_DIR"""
from fkd.core.cli import log, run_stage
from fkd.core.data import parse_raw


def main(argv: list[str]) -> None:
    raw_dir, out_dir = argv
    counts = parse_raw(raw_dir, out_dir)
    log.info("parsed %(train_rows)d training rows (%(complete_rows)d complete) and %(test_rows)d test images", counts)
    log.info("%(duplicate_groups)d training images occur more than once, in %(duplicate_rows)d rows "
             "(the split keeps each image's copies in one fold)", counts)


if __name__ == "__main__":
    run_stage(main)
