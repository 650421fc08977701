"""Parse speed: fkd.core.data.parse_training_csv against the per-row np.fromstring loop of public notebooks.

Builds a Kaggle-sized training.csv (7,049 rows, ~230 MB) from synthetic faces, times both
readers in the same run (best of --repeat), checks they agree, and prints the figures and the ratio.

    python -m benchmarks.parse_speed [--rows 7049] [--repeat 3] [--json PATH]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import save_benchmark
from fkd.core.cli import run_stage
from fkd.core.data import parse_training_csv
from fkd.core.keypoints import COLUMNS
from fkd.sources.synthetic import make_dataset


def notebook_reader(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """What most public notebooks do: pandas, then np.fromstring per row."""
    df = pd.read_csv(path)
    images = np.vstack(df["Image"].apply(lambda s: np.fromstring(s, sep=" ")).to_numpy()).reshape(-1, 96, 96)
    return images, df[list(COLUMNS)].to_numpy()


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=7049)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training.csv"
        # draw a few hundred faces and repeat them: the parser's cost depends on size, not content
        training = make_dataset(n_train=min(args.rows, 300), n_test=1, partial_fraction=0.7, seed=0)[0]
        training = training.iloc[np.arange(args.rows) % len(training)]
        training.to_csv(path, index=False)
        size_mb = path.stat().st_size / 1e6
        ours_img, ours_kp = parse_training_csv(path)
        base_img, base_kp = notebook_reader(path)
        assert np.array_equal(ours_img, base_img) and np.allclose(ours_kp, base_kp, equal_nan=True, atol=1e-3)
        ours = best_of(lambda: parse_training_csv(path), args.repeat)
        base = best_of(lambda: notebook_reader(path), args.repeat)
    print(f"training.csv: {args.rows} rows, {size_mb:.0f} MB")
    print(f"fkd.core.data.parse_training_csv: {ours:.2f} s ({args.rows / ours:,.0f} rows/s)")
    print(f"per-row np.fromstring loop:  {base:.2f} s ({args.rows / base:,.0f} rows/s)")
    print(f"speed-up: {base / ours:.1f}x")
    save_benchmark(args.json, "parse_speed", [
        {"reader": "fkd.core.data.parse_training_csv", "rows": args.rows, "MB": round(size_mb), "seconds": round(ours, 2), "speed_up": round(base / ours, 1)},
        {"reader": "per-row np.fromstring loop", "rows": args.rows, "MB": round(size_mb), "seconds": round(base, 2), "speed_up": 1.0}])


if __name__ == "__main__":
    run_stage(main)
