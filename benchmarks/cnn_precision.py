"""CPU training speed and accuracy of the Keras CNN in float32 and with ``cnn.bf16`` (Keras ``mixed_bfloat16``
for the conv blocks and hidden dense layers, the head in float32: :func:`fkd.models.cnn.network.build_model`).

Speed: each precision builds the project's CNN (params.yaml's ``cnn`` section) and times ``train_on_batch``
with Adam on random uint8 faces for the same number of images, interleaved over ``--rounds`` so that load from
other processes hits both alike; the median img/s per precision and its ratio to float32 are printed.

    python -m benchmarks.cnn_precision [--images 512] [--rounds 3] [--json PATH]

With ``--train SPLIT_DIR`` it measures accuracy instead: phase 1 (Adam, params.yaml's recipe with ``--epochs``
epochs) on the split's fold 0, once in float32 and once with ``cnn.bf16``; the best validation RMSE, its epoch
and the training img/s of each are printed.

    python -m benchmarks.cnn_precision --train data/split --epochs 20 [--json PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import fkd.nn.tf_env  # noqa: F401  (before keras)
import keras

from benchmarks import accuracy_line, accuracy_row, cpu_bf16_label
from benchmarks.report import save_benchmark
from fkd.core.cli import run_stage
from fkd.core.config import load_params
from fkd.models.cnn.network import MaskedHuber, build_model, n_outputs

PRECISIONS = {"float32": False, "mixed_bfloat16": True}


def speed(bf16: bool, p, images: int) -> float:
    keras.utils.set_random_seed(0)
    model = build_model(p, n_outputs(p.scheme_heads), bf16=bf16)
    model.compile(optimizer=keras.optimizers.Adam(p.adam.lr), loss=MaskedHuber(p.huber_delta, p.target_scale))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (p.batch_size, 96, 96, 1)).astype(np.float32)
    y = rng.uniform(10, 86, (p.batch_size, model.output_shape[-1])).astype(np.float32)
    steps, start = 0, None
    while steps * p.batch_size < images + 2 * p.batch_size:
        if steps == 2:
            start = time.perf_counter()
        model.train_on_batch(x, y)
        steps += 1
    return (steps - 2) * p.batch_size / (time.perf_counter() - start)


def accuracy(split_dir: str, epochs: int) -> list[dict]:
    """Phase 1 in float32 and with ``cnn.bf16`` on the split's fold 0; print val RMSE and speed."""
    from fkd.core.data import load_fold
    from fkd.models.cnn.train import train_adam

    train, val = load_fold(split_dir)
    p = load_params("cnn").cnn
    print(f"CPU (bf16 instructions: {cpu_bf16_label()}), {len(train.images)} train / {len(val.images)} val faces, "
          f"phase 1 (Adam, {p.adam.schedule}), {epochs} epochs")
    rows = []
    for bf16 in (False, True):
        q = dataclasses.replace(p, bf16=bf16, adam=dataclasses.replace(p.adam, epochs=epochs))
        with tempfile.TemporaryDirectory() as tmp:
            result = train_adam(train, val, q, Path(tmp) / "m.keras")
        print(accuracy_line(f"cnn {result.precision}", result), flush=True)
        rows.append(accuracy_row(result.precision, result))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", metavar="SPLIT_DIR", help="measure accuracy: train in float32 and bf16 on this split")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    if args.train:
        return save_benchmark(args.json, "cnn_precision", accuracy(args.train, args.epochs))
    p = load_params("cnn").cnn
    runs = {name: [] for name in PRECISIONS}
    for _ in range(args.rounds):
        for name, bf16 in PRECISIONS.items():
            runs[name].append(speed(bf16, p, args.images))
    base = statistics.median(runs["float32"])
    cpu = cpu_bf16_label()
    print(f"CNN (batch {p.batch_size}), {args.images} images per precision and round, median of {args.rounds} rounds; "
          f"CPU bf16 instructions: {cpu}")
    rows = []
    for name, values in runs.items():
        median = statistics.median(values)
        print(f"{name:16s} {median:7.1f} img/s  {median / base:4.2f}x")
        rows.append({"precision": name, "cpu_bf16": cpu, "images": args.images, "img_s": round(median, 1),
                     "ratio": round(median / base, 2)})
    save_benchmark(args.json, "cnn_precision", rows)


if __name__ == "__main__":
    run_stage(main)
