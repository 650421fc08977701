"""How much a validation figure owes to near-twins of its faces in the training part.

Each validation face's similarity to the training part is its highest correlation with a training face (both
downsampled to 48x48, mean removed); frames of one video score far above two different people. The models'
flip-TTA RMSE is printed per similarity band: a model that is much better on faces with a twin in training is
partly recognising them, and a split that keeps such faces apart would score it higher.

Usage: python -m benchmarks.val_twins SPLIT_DIR MODEL[:LABEL]=PATH ... [--fold K] [--bands 0.7 0.8 0.9] [--json PATH]
MODEL is a registered model name (its loader reads PATH), e.g. ``heatmap=models/heatmap/0.safetensors``.
"""
from __future__ import annotations

import argparse

import numpy as np

from benchmarks.report import named_models, save_benchmark
from fkd.core.cli import run_stage
from fkd.core.data import load_fold, thumbnail_correlation
from fkd.evaluation.inference import with_tta
from fkd.evaluation.metrics import score


#: The default similarity band edges.
BANDS = (0.7, 0.8, 0.9)


def similarity_bands(edges) -> list[tuple[str, float, float]]:
    """(name, lo, hi) of each band between the sorted ``edges`` ('< 0.7', '0.7-0.8', ..., '>= 0.9'): a face is in the
    band where lo <= its similarity < hi."""
    bounds = [-1.0, *sorted(edges), 1.01]
    return [(f"< {hi:g}" if lo == -1.0 else f">= {lo:g}" if hi == 1.01 else f"{lo:g}-{hi:g}", lo, hi)
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def nearest_similarity(val_images: np.ndarray, train_images: np.ndarray) -> np.ndarray:
    """Each validation face's highest correlation with any training face (N_val,), on 48x48 thumbnails."""
    return thumbnail_correlation(val_images, train_images, block=2).max(axis=1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split_dir")
    ap.add_argument("models", nargs="+", metavar="MODEL[:LABEL]=PATH")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--bands", type=float, nargs="+", default=list(BANDS), help="similarity band edges")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    models = [(name, with_tta(fn)) for name, fn in named_models(ap, args.models)]
    train, val = load_fold(args.split_dir, args.fold)
    similarity = nearest_similarity(val.images, train.images)
    predictions = {name: fn(val.images) for name, fn in models}
    rows = []
    for band, lo, hi in [("all", -1.0, 1.01), *similarity_bands(args.bands)]:
        rows_in = (similarity >= lo) & (similarity < hi)
        row = {"similarity": band, "faces": int(rows_in.sum())}
        for name, pred in predictions.items():
            row[f"{name}_tta_rmse"] = round(score(pred[rows_in], val.keypoints[rows_in])["rmse"], 4) if rows_in.any() else None
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        rows.append(row)
    save_benchmark(args.json, "val_twins", rows)


if __name__ == "__main__":
    run_stage(main)
