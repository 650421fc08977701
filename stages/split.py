"""split: data/prepared -> data/split/{images,keypoints,val_fold}.npy (each row's validation fold, copies of one
image, and look-alikes with split.near_duplicate_corr below 1, in one fold; the labels moved onto the image
features by data.label_offset_x, see fkd/core/label_offset.py) + METRICS_JSON (the offset used, how many images
occur more than once and in how many rows, and the look-alike groups).

Usage: python -m stages.split PREPARED_DIR OUT_DIR METRICS_JSON
"""
from fkd.core.cli import log, run_stage
from fkd.core.config import load_params
from fkd.core.data import write_split
from fkd.core.io import save_json
from fkd.core.label_offset import resolve_offset


def main(argv: list[str]) -> None:
    prepared_dir, out_dir, metrics_json = argv
    params = load_params("data", "split")
    p = params.split
    offset, faces = resolve_offset(params.data.label_offset_x, prepared_dir)
    counts = write_split(prepared_dir, out_dir, p.val_fraction, p.seed, folds=len(p.folds), label_offset_x=offset,
                         near_duplicate_corr=p.near_duplicate_corr)
    save_json(metrics_json, {"label_offset_x": offset, "label_offset_faces": faces,
                             **{key: counts[key] for key in ("duplicate_groups", "duplicate_rows",
                                                             "near_duplicate_groups", "near_duplicate_rows")}})
    log.info("split: the labels sit %+.2f px in x from the image features (%s); moved onto them", offset,
             f"estimated from the eye centres of {faces} faces" if faces else "data.label_offset_x")
    log.info("split: %d images occur more than once, in %d rows; each image's copies are in one fold",
             counts["duplicate_groups"], counts["duplicate_rows"])
    if p.near_duplicate_corr < 1:
        log.info("split: %d groups of look-alikes (thumbnail correlation >= %g), in %d rows; each group in one fold",
                 counts["near_duplicate_groups"], p.near_duplicate_corr, counts["near_duplicate_rows"])
    for k, fold in enumerate(counts["folds"]):
        log.info("split: fold %d of %d: %d train, %d validation rows", k, len(p.folds), fold["train"], fold["val"])


if __name__ == "__main__":
    run_stage(main)
