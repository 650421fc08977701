"""Train several recipes of the torch models on one split and print their validation RMSE, with and without flip TTA.

Usage: python -m benchmarks.recipe_sweep SPLIT_DIR [--only NAME ...] [--epochs-scale F] [--models-dir DIR] [--speed-only] [--json PATH]
A development tool for choosing the shipped defaults by measurement (see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.report import save_benchmark
from fkd.core.cli import run_stage
from fkd.core.config import load_params
from fkd.core.data import load_fold
from fkd.evaluation.metrics import score
from fkd.evaluation.inference import with_tta
from fkd.models.registry import MODELS

#: name -> (model, overrides of its params.yaml section). Every variant trains as its pipeline stage does
#: (the model's own ``fit``: its loss terms, teacher and schedule), only with these values changed.
VARIANTS = {
    "resnet_e40": ("resnet", {"epochs": 40}),
    "resnet_e80": ("resnet", {"epochs": 80}),
    "resnet_e40_lr6e-3": ("resnet", {"epochs": 40, "lr": 0.006}),
    "heat_s4_b1_e50": ("heatmap", {"epochs": 50}),
    "heat_s4_b1_e50_no_map_loss": ("heatmap", {"epochs": 50, "map_loss_weight": 0.0}),
    "heat_s4_b2_e50": ("heatmap", {"epochs": 50, "blocks_per_stage": 2}),
    "heat_s4_b1_e50_seed1": ("heatmap", {"epochs": 50, "seed": 1}),
    "heat_s4_b1_e80": ("heatmap", {"epochs": 80}),
    "heat_s2_b1_e50": ("heatmap", {"epochs": 50, "heatmap_stride": 2, "map_sigma_px": 2.0}),
    "heat_s4_w48_e80": ("heatmap", {"epochs": 80, "widths": [48, 96, 192, 384]}),
}


def params_with(model: str, overrides: dict, path="params.yaml"):
    """The params of ``model``'s section in ``path`` with ``overrides`` applied, checked like the file's own."""
    return load_params(model, path=path, overrides={model: overrides})


def speed(model: str, p, threads: int, steps: int = 6, batch: int = 32) -> float:
    """Training img/s of a torch model's network (forward + backward + AdamW step) on the CPU."""
    torch.set_num_threads(threads)
    net = MODELS[model].module.build(getattr(p, model))
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.rand(batch, 1, 96, 96)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = (net(x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("split_dir")
    ap.add_argument("--only", nargs="*", choices=list(VARIANTS), metavar="NAME")
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--speed-only", action="store_true", help="only time a training step of each architecture on the CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="append one JSON line per variant here")
    ap.add_argument("--models-dir", metavar="DIR", help="keep each variant's model here as NAME<suffix> (default: deleted after scoring)")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    names, rows = args.only or list(VARIANTS), []
    if args.speed_only:
        for name in names:
            model, overrides = VARIANTS[name]
            img_s = speed(model, params_with(model, overrides), args.threads)
            print(f"{name:28s} {img_s:7.1f} img/s (CPU, {args.threads} threads)", flush=True)
            rows.append({"name": name, "img_s": round(img_s, 1), "device": "cpu", "threads": args.threads})
        return save_benchmark(args.json, "recipe_sweep", rows)
    train, val = load_fold(args.split_dir)
    for name in names:
        model, overrides = VARIANTS[name]
        spec = MODELS[model]
        epochs = max(1, round(getattr(params_with(model, overrides), model).epochs * args.epochs_scale))
        p = params_with(model, {**overrides, "epochs": epochs, "threads": args.threads})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(args.models_dir or tmp) / f"{name}{spec.suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            result = spec.fit(train, val, p, path)
            seconds = time.perf_counter() - start
            tta = score(with_tta(spec.load(path))(val.images), val.keypoints)["rmse"]
        row = {"name": name, "val_rmse": round(result.best_val_rmse, 4), "val_rmse_tta": round(tta, 4), "best_epoch": result.best_epoch,
               "model": model, "epochs": epochs, "seconds": round(seconds, 1), "img_s": round(result.images_per_second, 1), "device": result.device}
        print(json.dumps(row), flush=True)
        rows.append(row)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    save_benchmark(args.json, "recipe_sweep", rows)


if __name__ == "__main__":
    run_stage(main)
