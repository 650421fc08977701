"""Which test-time views pay: each model's validation RMSE with no TTA, flip TTA, and flip plus turns and scales.

The views are the ``tta`` section's (:func:`fkd.evaluation.inference.tta_average`); nothing is trained.

Usage: python -m benchmarks.tta_views SPLIT_DIR MODEL[:LABEL]=PATH ... [--fold K] [--json PATH]
MODEL is a registered model name (its loader reads PATH), e.g. ``heatmap=models/heatmap/0.safetensors``; a LABEL names
the rows of one file, to compare two files of one model (``heatmap:map_loss=...``).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.report import named_models, save_benchmark
from fkd.core.cli import run_stage
from fkd.core.data import load_fold
from fkd.evaluation.inference import tta_average
from fkd.evaluation.metrics import score

#: name -> the views beyond the flip, (scale, degrees) as :func:`fkd.evaluation.inference.transforms_of` makes them
VIEWS = {
    "flip": [],
    "flip, turns ±5": [(1.0, -5.0), (1.0, 5.0)],
    "flip, turns ±10": [(1.0, -10.0), (1.0, 10.0)],
    "flip, scales 0.95/1.05": [(0.95, 0.0), (1.05, 0.0)],
    "flip, turns ±5, scales 0.95/1.05": [(1.0, -5.0), (1.0, 5.0), (0.95, 0.0), (1.05, 0.0)],
    "flip, turns ±5/±10, scales 0.95/1.05": [(1.0, -10.0), (1.0, -5.0), (1.0, 5.0), (1.0, 10.0), (0.95, 0.0), (1.05, 0.0)],
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("split_dir")
    ap.add_argument("models", nargs="+", metavar="MODEL[:LABEL]=PATH")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    models = named_models(ap, args.models)
    _, val = load_fold(args.split_dir, args.fold, train_images=False)
    rows = []
    for name, fn in models:
        start = time.perf_counter()
        direct = np.asarray(fn(val.images), dtype=np.float64)
        one_view = time.perf_counter() - start
        rows.append({"model": name, "views": "none", "predictions per face": 1, "val_rmse": round(score(direct, val.keypoints)["rmse"], 4)})
        for label, transforms in VIEWS.items():
            pred = tta_average(fn, val.images, transforms, direct)
            rows.append({"model": name, "views": label, "predictions per face": 2 * (1 + len(transforms)),
                         "val_rmse": round(score(pred, val.keypoints)["rmse"], 4)})
        for row in rows[-1 - len(VIEWS):]:
            print(f"{row['model']:12s} {row['views']:38s} x{row['predictions per face']:<3d} RMSE {row['val_rmse']:.4f} px", flush=True)
        print(f"{name}: {len(val.images)} faces, one prediction of all of them {one_view:.1f} s", flush=True)
    save_benchmark(args.json, "tta_views", rows)


if __name__ == "__main__":
    run_stage(main)
