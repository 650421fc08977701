"""CPU training speed of the Keras CNN in float32 and with Keras mixed precision (``mixed_bfloat16``).

Each policy builds the project's CNN (params.yaml's ``cnn`` section; under mixed precision its output is
cast back to float32, as Keras advises, so the project's masked Huber loss stays in float32) and times
``train_on_batch`` with Adam on random uint8 faces for the same number of images, interleaved over
``--rounds`` so that load from other processes hits both alike; the median img/s per policy and its ratio
to float32 are printed.

    python -m benchmarks.cnn_precision [--images 512] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fkd.tf_env  # noqa: F401  (before keras)
import keras

from fkd.config import load_params
from fkd.models.cnn.network import MaskedHuber, build_model, n_outputs

POLICIES = ("float32", "mixed_bfloat16")


def speed(policy: str, p, images: int) -> float:
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = build_model(p, n_outputs(p.scheme_heads))
        out = keras.layers.Activation("linear", dtype="float32", name="float32_out")(model.output)
        model = keras.Model(model.input, out)
        model.compile(optimizer=keras.optimizers.Adam(p.adam.lr), loss=MaskedHuber(p.huber_delta, p.target_scale))
    finally:
        keras.mixed_precision.set_global_policy("float32")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    p = load_params().cnn
    runs = {policy: [] for policy in POLICIES}
    for _ in range(args.rounds):
        for policy in POLICIES:
            runs[policy].append(speed(policy, p, args.images))
    base = statistics.median(runs["float32"])
    print(f"CNN (batch {p.batch_size}), {args.images} images per policy and round, median of {args.rounds} rounds")
    for policy, values in runs.items():
        median = statistics.median(values)
        print(f"{policy:16s} {median:7.1f} img/s  {median / base:4.2f}x")


if __name__ == "__main__":
    main()
