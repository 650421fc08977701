"""Training throughput of the ResNet on this device: the project's loop against a plain baseline.

Baseline: fp32, a torch DataLoader over a TensorDataset, batch 16, no augmentation (the
published recipe's loop). Ours: the data set resident on the device as uint8, batched
on-device augmentation, the configured batch size, and on CUDA bf16 autocast + channels_last.
Both train the same architecture from params.yaml for the same number of images, in one run.

    python -m benchmarks.train_speed [--images 1024] [--batch 32] [--device auto] [--json PATH]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.report import save_benchmark
from fkd.core.cli import run_stage
from fkd.nn.augment import augment_batch
from fkd.core.config import load_params
from fkd.models.resnet.network import KeypointResNet
from fkd.nn.torch_nn import masked_mse
from fkd.nn.torch_train import device_label, memory_format, pick_device, seed_everything


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def baseline(model, images, targets, device, n_images) -> float:
    loader = DataLoader(TensorDataset(torch.from_numpy(images).unsqueeze(1).float() / 255, torch.from_numpy(targets)),
                        batch_size=16, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    model.train()
    seen, start = 0, None
    while seen < n_images:
        for x, y in loader:
            if start is None and seen >= 64:  # warm-up excluded
                sync(device)
                start, seen = time.perf_counter(), 0
            x, y = x.to(device), y.to(device)
            loss = masked_mse(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(x)
            if start is not None and seen >= n_images:
                break
    sync(device)
    return seen / (time.perf_counter() - start)


def ours(model, images, targets, device, n_images, batch, p) -> float:
    cuda = device.type == "cuda"
    fmt = memory_format(p, device, cuda and p.bf16)
    model = model.to(memory_format=fmt)
    x_all = torch.from_numpy(images).unsqueeze(1).to(device)
    y_all = torch.from_numpy(targets).to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    model.train()
    seen, start = 0, None
    while seen < n_images:
        if start is None and seen >= 64:
            sync(device)
            start, seen = time.perf_counter(), 0
        idx = torch.randint(len(x_all), (batch,), device=device, generator=gen)
        x, y = augment_batch(x_all[idx].float() / 255, y_all[idx], p.augment, gen)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda and p.bf16):
            out = model(x.contiguous(memory_format=fmt))
        loss = masked_mse(out.float(), (y - 48) / 48)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += batch
    sync(device)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024, help="images timed per variant (after warm-up)")
    ap.add_argument("--batch", type=int, default=None, help="our batch size (default: resnet.batch_size)")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | mps (default: resnet.device)")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    p = load_params("resnet").resnet
    seed_everything(0, p.threads)
    device = pick_device(args.device or p.device, "resnet.device")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2048, 96, 96), dtype=np.uint8)
    targets = rng.uniform(10, 86, (2048, 34)).astype(np.float32)

    def net():
        return KeypointResNet(34, p.stem_channels, p.widths, p.blocks_per_stage).to(device)

    base = baseline(net(), images, targets, device, args.images)
    mine = ours(net(), images, targets, device, args.images, args.batch or p.batch_size, p)
    ours_label = f"fkd loop (batch {args.batch or p.batch_size}{', bf16, channels_last' if device.type == 'cuda' and p.bf16 else ''})"
    print(f"device: {device_label(device)}, threads: {torch.get_num_threads()}")
    print(f"baseline (fp32, DataLoader, batch 16): {base:8.1f} img/s")
    print(f"{ours_label}: {mine:8.1f} img/s")
    print(f"ratio: {mine / base:.2f}x")
    where = {"device": device_label(device), "threads": torch.get_num_threads(), "images": args.images}
    save_benchmark(args.json, "train_speed", [
        {"loop": "baseline (fp32, DataLoader, batch 16)", **where, "img_s": round(base, 1), "ratio": 1.0},
        {"loop": ours_label, **where, "img_s": round(mine, 1), "ratio": round(mine / base, 2)}])


if __name__ == "__main__":
    run_stage(main)
