"""Look-alike grouping of the split (``split.near_duplicate_corr``): how many rows each threshold groups, what it
costs, and how alike the hold-out's faces then are to the training part, next to the test images' likeness.

For each threshold (1 = only pixel-identical copies, the default) the rows are grouped as the split stage groups
them (``fkd.core.data.similar_groups``), the seeded hold-out of ``split.val_fraction`` is drawn, and each
held-out face's likeness to the training part is taken as ``benchmarks.val_twins`` takes it (its highest
correlation with a training face at 48x48): the median and the share in each of val_twins' bands, beside the
same for the test images (whose people never appear in training in Kaggle's data). Time and peak memory
(tracemalloc) are of the grouping alone. With ``--val-twins`` (that benchmark's file for a model on the default
hold-out), each row also gets the model's RMSE re-weighted to the row's shares: on the test images' row, an
estimate of its error on new people.

    python -m benchmarks.near_duplicates PREPARED_DIR [--corr 1 0.9 0.8 0.7] [--val-twins JSON] [--json PATH]
    python -m benchmarks.near_duplicates --rows 7049 [--corr 0.8]   # Kaggle-sized drawn faces: the time and memory

PREPARED_DIR is the parse stage's output (``data/prepared``).
"""
from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.cluster.hierarchy  # noqa: F401  (imported before the first timing, which would count it)

from benchmarks.report import read_json, save_benchmark
from benchmarks.val_twins import BANDS, nearest_similarity, similarity_bands
from fkd.core.cli import StageError, run_stage
from fkd.core.config import load_params
from fkd.core.data import duplicate_groups, fold_assignment, near_duplicate_counts, similar_groups


def _inputs(args) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
    if args.prepared_dir:
        prepared = Path(args.prepared_dir)
        test = prepared / "test_images.npy"
        return (np.load(prepared / "train_images.npy"), np.load(prepared / "train_keypoints.npy"),
                np.load(test) if test.is_file() else None, str(prepared))
    from fkd.sources.synthetic import draw_face

    rng = np.random.default_rng(0)
    faces = [draw_face(rng) for _ in range(args.rows)]
    return (np.stack([image for image, _ in faces]), np.stack([kp for _, kp in faces]).astype(np.float32), None,
            f"{args.rows} drawn faces")


def _likeness(nearest: np.ndarray) -> dict:
    """The median of the faces' highest correlations with a training face, and the share of faces in each of
    benchmarks.val_twins' default bands."""
    return {"nearest_train_corr_median": round(float(np.median(nearest)), 3),
            **{f"share {name}": round(float(((nearest >= lo) & (nearest < hi)).mean()), 3)
               for name, lo, hi in similarity_bands(BANDS)}}


def read_band_errors(path: str) -> dict[str, dict[str, float]]:
    """A ``benchmarks.val_twins --json`` file's RMSE per band, ``{band: {column: rmse}}``, for its default bands."""
    rows = read_json(Path(path)).get("rows")
    if not isinstance(rows, list) or not all(isinstance(row, dict) and "similarity" in row for row in rows):
        raise StageError(f"{path}: not a benchmarks.val_twins --json file (no rows with a 'similarity' band)")
    bands = {row["similarity"]: {k: v for k, v in row.items() if k.endswith("_rmse")} for row in rows}
    names = [name for name, _, _ in similarity_bands(BANDS)]
    missing = [name for name in names if name not in bands]
    if missing:
        raise StageError(f"{path}: has no band {missing[0]!r}; run benchmarks.val_twins with --bands {' '.join(map(str, BANDS))}")
    return {name: bands[name] for name in names}


def at_mix(row: dict, band_errors: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each model's RMSE re-weighted to ``row``'s shares of the bands (mean squared error per band, weighted)."""
    columns = next(iter(band_errors.values()))
    return {f"{column} at this mix": round(float(np.sqrt(sum(row[f"share {band}"] * errors[column] ** 2
                                                            for band, errors in band_errors.items()))), 3)
            for column in columns}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared_dir", nargs="?", help="the parse stage's output folder (data/prepared)")
    ap.add_argument("--rows", type=int, default=7049, help="without PREPARED_DIR: this many drawn faces")
    ap.add_argument("--corr", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7], help="thresholds to try")
    ap.add_argument("--val-twins", metavar="JSON", help="a benchmarks.val_twins --json file of a model on the hold-out at 1: "
                    "its RMSE per band, re-weighted to each row's shares")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    split = load_params("split").split
    band_errors = read_band_errors(args.val_twins) if args.val_twins else None
    images, keypoints, test_images, source = _inputs(args)
    print(f"{source}: {len(images)} training rows", flush=True)
    copies = duplicate_groups(images)
    rows = []
    if test_images is not None:
        nearest = nearest_similarity(test_images, images)
        rows.append({"near_duplicate_corr": "test images", "faces": len(test_images), **_likeness(nearest)})
        if band_errors:
            rows[0].update(at_mix(rows[0], band_errors))
        print("  ".join(f"{k} {v}" for k, v in rows[0].items()), flush=True)
    for corr in args.corr:
        tracemalloc.start()
        start = time.perf_counter()
        groups = similar_groups(images, copies, corr)
        seconds = time.perf_counter() - start
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        counts = near_duplicate_counts(copies, groups)
        fold = fold_assignment(keypoints, 1, split.val_fraction, split.seed, groups)
        val, train = fold == 0, fold != 0
        nearest = nearest_similarity(images[val], images[train])
        row = {"near_duplicate_corr": f"{corr:g}", **counts, "largest_group": int(np.bincount(groups).max()),
               "faces": int(val.sum()), **_likeness(nearest),
               "seconds": round(seconds, 2), "peak_mb": round(peak_mb)}
        if band_errors:
            row.update(at_mix(row, band_errors))
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        rows.append(row)
    save_benchmark(args.json, "near_duplicates", rows)


if __name__ == "__main__":
    run_stage(main)
