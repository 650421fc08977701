"""submit: the Kaggle submission CSV from the test images (params submit, ensemble, data.competition; the
predictions moved back into the labels' frame by the label offset the split stage used, see fkd/core/label_offset.py).

Usage: python -m stages.submit LOOKUP_CSV PREPARED_DIR MODELS_DIR SPLIT_METRICS SUBMISSION_CSV
With ``submit.upload: true`` the file is then sent to Kaggle with the official client.
"""
from pathlib import Path

import numpy as np

from fkd.core.cli import log, run_stage
from fkd.core.config import load_params


def main(argv: list[str]) -> None:
    lookup_csv, prepared_dir, models_dir, split_metrics, out_csv = argv
    p = load_params("data", "split", "ensemble", "tta", "submit")
    from fkd.evaluation.inference import check_fold_models, load_predictor, transforms_of
    from fkd.core.data import read_lookup
    from fkd.core.label_offset import read_offset
    from fkd.evaluation.evaluate import tta_label
    from fkd.evaluation.submit import experiment_message, predict_locations, scheme_b_images, write_submission

    check_fold_models(models_dir, p.split.folds)
    label_offset_x = read_offset(split_metrics)
    lookup = read_lookup(lookup_csv)
    test_images = np.load(Path(prepared_dir) / "test_images.npy")
    test_ids = np.load(Path(prepared_dir) / "test_ids.npy")
    predict = load_predictor(p.submit.model, models_dir, p.ensemble, p.submit.tta_flip, p.split.folds, transforms_of(p.tta))
    locations = predict_locations(lookup, test_images, test_ids, predict, label_offset_x)
    write_submission(out_csv, lookup, locations)
    schemes = scheme_b_images(lookup)
    log.info("wrote %s: %d rows for %d test images (%d in scheme B, 8 features; %d in scheme A), model %s%s, "
             "label offset %+.2f px", out_csv, len(lookup), len(schemes), sum(schemes.values()),
             len(schemes) - sum(schemes.values()), p.submit.model, f" + {tta_label(transforms_of(p.tta))}" if p.submit.tta_flip else "", label_offset_x)
    if p.submit.upload:
        from fkd.sources.kaggle_client import submit_to_kaggle

        message = experiment_message(p.submit.message, p.submit.model, p.submit.tta_flip)
        submit_to_kaggle(out_csv, p.data.competition, message)
    else:
        log.info("not uploaded (submit.upload is false); to send it: dvc exp run -S submit.upload=true")


if __name__ == "__main__":
    run_stage(main)
