"""CPU training speed of the torch models in fp32 and with bfloat16 autocast / channels-last.

Each variant runs the project's training step (forward, masked loss, backward, AdamW) on random
uint8 faces for the same number of images, interleaved over ``--rounds`` so that load from other
processes hits every variant alike; the median img/s per variant and its ratio to fp32 are printed.

    python -m benchmarks.cpu_precision [--images 256] [--rounds 3] [--threads 0] [--json PATH]

With ``--train SPLIT_DIR`` it measures accuracy instead: each torch model is trained with the
project's loop (params.yaml's recipe, ``--epochs`` epochs) once in fp32 and once with ``bf16``
(bfloat16 autocast + channels-last, where :func:`fkd.nn.torch_train.use_bf16` allows it), and the best
validation RMSE, the best epoch and the training img/s of each are printed.

    python -m benchmarks.cpu_precision --train data/split --epochs 20 [--models resnet heatmap] [--json PATH]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks import accuracy_line, accuracy_row, cpu_bf16_label
from benchmarks.report import save_benchmark
from fkd.core.cli import run_stage
from fkd.core.config import load_params
from fkd.models.heatmap import network as heatmap
from fkd.models.resnet import network as resnet
from fkd.nn.torch_nn import masked_mse

#: arch -> the function that builds its network from an architecture dict
BUILD = {resnet.ARCH: resnet.build, heatmap.ARCH: heatmap.build}

VARIANTS = {  # name -> (bf16 autocast, channels_last)
    "fp32": (False, False),
    "fp32 + channels_last": (False, True),
    "bf16 autocast": (True, False),
    "bf16 autocast + channels_last": (True, True),
}


def speed(config: dict, bf16: bool, channels_last: bool, images: int, batch: int) -> float:
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = BUILD[config["arch"]](config).to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = (torch.randint(0, 256, (batch, 1, 96, 96)).float() / 255).contiguous(memory_format=fmt)
    y = torch.rand(batch, config["n_outputs"]) * 2 - 1
    steps, start = 0, None
    while steps * batch < images + 2 * batch:
        if steps == 2:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = masked_mse(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return (steps - 2) * batch / (time.perf_counter() - start)


def accuracy(split_dir: str, epochs: int, names: list[str], threads: int) -> list[dict]:
    """Train each model of ``names`` in fp32 and in bf16 on the split's fold 0; print val RMSE and speed."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from fkd.core.data import load_fold
    from fkd.models.registry import MODELS

    train, val = load_fold(split_dir)
    params = load_params("resnet", "heatmap")
    print(f"CPU (bf16 instructions: {cpu_bf16_label()}), {len(train.images)} train / {len(val.images)} val faces, {epochs} epochs")
    rows = []
    for name in names:
        for bf16 in (False, True):
            p = dataclasses.replace(getattr(params, name), epochs=epochs, cpu_bf16=bf16, device="cpu", threads=threads)
            with tempfile.TemporaryDirectory() as tmp:
                result = MODELS[name].fit(train, val, dataclasses.replace(params, **{name: p}), Path(tmp) / f"m{MODELS[name].suffix}")
            print(accuracy_line(f"{name:8s} {'bf16' if bf16 else 'fp32'}", result), flush=True)
            rows.append({"model": name, **accuracy_row("bf16" if bf16 else "fp32", result)})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", metavar="SPLIT_DIR", help="measure accuracy: train in fp32 and bf16 on this split")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=["resnet", "heatmap"], choices=["resnet", "heatmap"])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: all cores)")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    import os

    if args.train:
        return save_benchmark(args.json, "cpu_precision", accuracy(args.train, args.epochs, args.models, args.threads))
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    p = load_params("resnet", "heatmap")
    models = {"resnet": (resnet.architecture(p.resnet), p.resnet.batch_size), "heatmap": (heatmap.architecture(p.heatmap), p.heatmap.batch_size)}
    cpu = cpu_bf16_label()
    print(f"CPU (bf16 instructions: {cpu}), {torch.get_num_threads()} threads, {args.images} images per variant and round, "
          f"median of {args.rounds} rounds")
    rows = []
    for name, (config, batch) in models.items():
        runs = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant, (bf16, cl) in VARIANTS.items():
                runs[variant].append(speed(config, bf16, cl, args.images, batch))
        base = statistics.median(runs["fp32"])
        for variant, values in runs.items():
            median = statistics.median(values)
            print(f"{name:8s} {variant:30s} {median:7.1f} img/s  {median / base:4.2f}x")
            rows.append({"model": name, "variant": variant, "cpu_bf16": cpu, "threads": torch.get_num_threads(), "img_s": round(median, 1),
                         "ratio": round(median / base, 2)})
    save_benchmark(args.json, "cpu_precision", rows)


if __name__ == "__main__":
    run_stage(main)
