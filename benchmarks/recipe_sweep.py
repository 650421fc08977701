"""Train several torch recipes on one split and print their validation RMSE, with and without flip TTA.

Usage: python -m benchmarks.recipe_sweep SPLIT_DIR [--only NAME ...] [--epochs-scale F] [--speed-only] [--json PATH]
A development tool for choosing the shipped defaults by measurement (see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.report import save_benchmark
from fkd.core.config import load_params, parse_params, to_dict
from fkd.core.data import load_fold
from fkd.evaluation.metrics import score
from fkd.evaluation.inference import with_tta
from fkd.core.keypoints import N_EXTENDED
from fkd.models.heatmap import network as heatmap
from fkd.models.resnet import network as resnet
from fkd.nn.torch_train import train_torch

#: arch -> its network module (``build`` from an architecture dict, ``load_model_fn`` of a saved file)
NETWORKS = {resnet.ARCH: resnet, heatmap.ARCH: heatmap}


def heatmap_config(widths=(32, 64, 128, 256), blocks=1, decoder=64, stride=2) -> dict:
    return {"arch": heatmap.ARCH, "n_outputs": 2 * N_EXTENDED, "widths": list(widths), "blocks_per_stage": blocks,
            "decoder_channels": decoder, "heatmap_stride": stride, "normalize_targets": True}


#: name -> (resnet param overrides, architecture dict or None for the ResNet of those params)
VARIANTS = {
    "resnet_e40": ({"epochs": 40}, None),
    "resnet_e80": ({"epochs": 80}, None),
    "resnet_e40_lr6e-3": ({"epochs": 40, "lr": 0.006}, None),
    "heat_s2_b1_e40": ({"epochs": 40}, heatmap_config()),
    "heat_s4_b1_e40": ({"epochs": 40}, heatmap_config(stride=4)),
    "heat_s2_b2_e40": ({"epochs": 40}, heatmap_config(blocks=2)),
    "heat_s2_b1_e80": ({"epochs": 80}, heatmap_config()),
    "heat_s4_b1_e80": ({"epochs": 80}, heatmap_config(stride=4)),
    "heat_s4_b2_e60": ({"epochs": 60}, heatmap_config(stride=4, blocks=2)),
    "heat_s4_w48_e80": ({"epochs": 80}, heatmap_config(widths=(48, 96, 192, 384), stride=4)),
    "heat_s2_w24_e60": ({"epochs": 60}, heatmap_config(widths=(24, 48, 96, 192), decoder=48)),
}


def params_with(overrides: dict):
    raw = to_dict(load_params("resnet"))
    raw["resnet"].update(overrides)
    return parse_params(raw, "resnet").resnet


def speed(config: dict, threads: int, steps: int = 6, batch: int = 32) -> float:
    """Training img/s of one architecture (forward + backward + AdamW step) on the CPU."""
    torch.set_num_threads(threads)
    model = NETWORKS[config["arch"]].build(config)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(batch, 1, 96, 96), torch.rand(batch, config["n_outputs"])
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("split_dir")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--speed-only", action="store_true", help="only time a training step of each architecture on the CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="append one JSON line per variant here")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names, rows = args.only or list(VARIANTS), []
    if args.speed_only:
        for name in names:
            overrides, config = VARIANTS[name]
            config = config or resnet.architecture(params_with(overrides))
            img_s = speed(config, args.threads)
            print(f"{name:24s} {img_s:7.1f} img/s (CPU, {args.threads} threads)", flush=True)
            rows.append({"name": name, "img_s": round(img_s, 1), "device": "cpu", "threads": args.threads})
        return save_benchmark(args.json, "recipe_sweep", rows)
    train, val = load_fold(args.split_dir)
    for name in names:
        overrides, config = VARIANTS[name]
        overrides = {**overrides, "epochs": max(1, round(overrides["epochs"] * args.epochs_scale)), "threads": args.threads}
        p = params_with(overrides)
        config = config or resnet.architecture(p)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.safetensors"
            start = time.perf_counter()
            result = train_torch(train, val, p, config, NETWORKS[config["arch"]].build, path, None)
            seconds = time.perf_counter() - start
            fn = NETWORKS[config["arch"]].load_model_fn(path, "cuda" if torch.cuda.is_available() else "cpu")
            tta = score(with_tta(fn)(val.images), val.keypoints)["rmse"]
        row = {"name": name, "val_rmse": round(result.best_val_rmse, 4), "val_rmse_tta": round(tta, 4), "best_epoch": result.best_epoch,
               "epochs": p.epochs, "seconds": round(seconds, 1), "img_s": round(result.images_per_second, 1), "device": result.device}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    save_benchmark(args.json, "recipe_sweep", rows)


if __name__ == "__main__":
    main()
