"""The training loop every torch model shares: data kept on the device, batched augmentation, masked
loss, early stopping on val RMSE, dvclive logging, the best epoch saved byte-stably (safetensors)."""
from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fkd.nn.augment import augment_batch
from fkd.core.data import Part
from fkd.core.keypoints import flip_coords, point_names, training_targets
from fkd.core.schema import ParamsError
from fkd.nn.torch_nn import CENTRE, masked_mse, save_checkpoint, to_pixels
from fkd.nn.torch_params import TorchTrainParams
from fkd.nn.train_result import TrainResult, bf16_here, cpu_threads

log = logging.getLogger("fkd.train_torch")

#: A model's own loss term: (the model after its training forward, the batch's labels) -> a scalar.
ExtraLoss = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def pick_device(name: str, key: str) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; otherwise the named device (a ParamsError naming ``key`` if it is not there)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"params: '{key}' is cuda but no CUDA device is available (set it to auto or cpu)")
    return torch.device(name)


def use_bf16(p: TorchTrainParams, device: torch.device) -> bool:
    """Whether to train in bfloat16 autocast: ``bf16`` on CUDA, ``cpu_bf16`` on a CPU of :func:`fkd.nn.train_result.bf16_here`."""
    if device.type == "cuda":
        return p.bf16
    return device.type == "cpu" and bf16_here(p.cpu_bf16, True, "cpu_bf16")


def memory_format(p: TorchTrainParams, device: torch.device, bf16: bool) -> torch.memory_format:
    """Channels-last on CUDA, with bf16 autocast, or where ``channels_last`` asks for it in CPU fp32; else contiguous."""
    return torch.channels_last if device.type == "cuda" or bf16 or p.channels_last else torch.contiguous_format


#: oneDNN (3.12, in torch 2.13) computes the CPU weight gradient of a strided 1x1 convolution in channels-last wrong
#: when it has fewer input channels than its register block (8 with AVX2, 16 with AVX-512); with AVX2 it also writes
#: past its buffer and the process crashes (uxlfoundation/oneDNN#6035). Narrower networks train contiguous.
CHANNELS_LAST_MIN_CHANNELS = 16


def check_channels_last(model: torch.nn.Module, arch: str, p: TorchTrainParams, bf16: bool) -> None:
    """:class:`ParamsError` if ``model`` trains channels-last on the CPU with a strided 1x1 convolution narrower than
    :data:`CHANNELS_LAST_MIN_CHANNELS`, naming the keys that ask for channels-last and what to do."""
    narrow = sorted({m.in_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
                     and max(m.stride) > 1 and m.in_channels < CHANNELS_LAST_MIN_CHANNELS})
    if narrow:
        keys = [f"'{arch}.{key}'" for key, on in (("channels_last", p.channels_last), ("cpu_bf16", bf16)) if on]
        raise ParamsError(f"params: {' and '.join(keys)} (channels-last on the CPU) needs every strided 1x1 convolution to "
                          f"have at least {CHANNELS_LAST_MIN_CHANNELS} input channels (oneDNN computes their gradient wrong "
                          f"below that: uxlfoundation/oneDNN#6035), and this network has some with {narrow}: set "
                          f"{' and '.join(keys)} to false, or make {arch}'s widths at least {CHANNELS_LAST_MIN_CHANNELS}")


def device_label(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def seed_everything(seed: int, threads: int) -> None:
    """Seed torch and numpy, make CPU kernels deterministic, and set the CPU thread count (0 = all cores)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(cpu_threads(threads))


def make_scheduler(opt: torch.optim.Optimizer, p: TorchTrainParams, steps_per_epoch: int):
    """A per-step LR scheduler for ``resnet.schedule``."""
    total = p.epochs * steps_per_epoch
    if p.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=max(total, 1), pct_start=p.warmup_fraction)
    if p.schedule == "cosine":
        warm = max(int(p.warmup_fraction * total), 1)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(total - warm, 1)))
        )
    if p.schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: p.step_gamma ** ((s // steps_per_epoch) // p.step_size))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def make_optimizer(model: torch.nn.Module, p: TorchTrainParams) -> torch.optim.Optimizer:
    if p.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    if p.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=0.9, nesterov=True, weight_decay=p.weight_decay)


@torch.no_grad()
def predict_pixels(model: torch.nn.Module, images: torch.Tensor, normalized: bool, batch_size: int = 256) -> torch.Tensor:
    """Pixel predictions for uint8 images (N, 1, 96, 96) already on the model's device."""
    model.eval()
    out = [to_pixels(model(images[i : i + batch_size].float() / 255).float(), normalized) for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def masked_rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """RMSE in pixels over finite targets."""
    mask = torch.isfinite(target)
    return float(torch.sqrt(((pred - torch.nan_to_num(target))[mask] ** 2).mean()))


def fit_torch(train: Part, val: Part, p: TorchTrainParams, config: dict, build: Callable[[dict], torch.nn.Module],
              model_path: str | Path, live=None, extra_loss: ExtraLoss | None = None) -> TrainResult:
    """:func:`train_torch`; with ``pseudo_label_weight`` > 0, first a teacher with the same params, whose flip-averaged
    predictions label what each training row lacks for the student (:func:`pseudo_labels`). Validation rows are never labelled."""
    if p.pseudo_label_weight == 0 or p.pseudo_label_from_epoch > 0:  # off, or the network labels its own rows (train_torch)
        return train_torch(train, val, p, config, build, model_path, live, extra_loss=extra_loss)
    from safetensors.torch import load_file

    log.info("pseudo-labels: training the teacher")
    teacher = build(config)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_torch(train, val, p, config, build, Path(tmp) / "teacher.safetensors", extra_loss=extra_loss)
        teacher.load_state_dict(load_file(Path(tmp) / "teacher.safetensors"))
    log.info("pseudo-labels: the teacher's val RMSE is %.3f px", result.best_val_rmse)
    log.info("pseudo-labels: training the student, the teacher's points weighted %g", p.pseudo_label_weight)
    return train_torch(train, val, p, config, build, model_path, live, pseudo_labels(teacher, train, p.normalize_targets), extra_loss)


def pseudo_labels(model: torch.nn.Module, part: Part, normalized: bool) -> np.ndarray:
    """``model``'s flip-averaged pixel predictions (N, outputs) where ``part``'s training targets are missing, NaN where labelled."""
    images = torch.from_numpy(part.images).unsqueeze(1).to(next(model.parameters()).device)
    direct = predict_pixels(model, images, normalized).cpu().numpy()
    mirrored = predict_pixels(model, images.flip(-1), normalized).cpu().numpy()
    names = point_names(direct.shape[1])
    pred = (direct + flip_coords(mirrored, width=images.shape[-1], names=names)) / 2
    return np.where(np.isnan(training_targets(part.keypoints, direct.shape[1])), pred, np.nan).astype(np.float32)


def train_torch(train: Part, val: Part, p: TorchTrainParams, config: dict, build: Callable[[dict], torch.nn.Module],
                model_path: str | Path, live=None, pseudo: np.ndarray | None = None, extra_loss: ExtraLoss | None = None) -> TrainResult:
    """Train the network ``build(config)`` (``config``: its architecture dict, saved with it) on ``train``, early-stop on ``val`` RMSE, and save
    the best epoch's weights to ``model_path`` as safetensors (:func:`fkd.nn.torch_nn.save_checkpoint`; once, at the end; nothing is
    written if no epoch gave a finite val RMSE: :class:`fkd.nn.train_result.TrainingError`).

    ``live`` is an optional dvclive ``Live``: per-epoch ``train_loss``, ``val_rmse`` and ``lr`` go there. ``pseudo``: pixel pseudo-labels
    (N, outputs) for the training rows, NaN where none, weighted ``p.pseudo_label_weight`` in the loss. Without them, with
    ``p.pseudo_label_from_epoch`` N > 0 and a weight, the network makes its own (:func:`pseudo_labels`) after epoch N and every
    ``p.pseudo_label_every`` epochs after that. ``extra_loss(model, labels)``:
    a model's own term added to the loss of each step (labels as the outputs, normalised when they are; NaN where missing).
    """
    seed_everything(p.seed, p.threads)
    device = pick_device(p.device, f"{config['arch']}.device")
    cuda = device.type == "cuda"
    n_outputs = config["n_outputs"]
    model = build(config).to(device)
    bf16 = use_bf16(p, device)
    fmt = memory_format(p, device, bf16)
    if device.type == "cpu" and fmt == torch.channels_last:
        check_channels_last(model, config["arch"], p, bf16)
    model = model.to(memory_format=fmt)
    # What is validated and saved: the weights themselves, or their moving average (buffers too: BN statistics).
    ema = None
    if p.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(p.ema_decay), use_buffers=True)
    kept = ema.module if ema is not None else model

    # The whole data set is small (3k-7k faces): keep it on the device as uint8.
    x_train = torch.from_numpy(train.images).unsqueeze(1).to(device)
    y_train = torch.from_numpy(training_targets(train.keypoints, n_outputs)).to(device)
    x_val = torch.from_numpy(val.images).unsqueeze(1).to(device)
    y_val = torch.from_numpy(training_targets(val.keypoints, n_outputs)).to(device)
    self_labelling = pseudo is None and p.pseudo_label_weight > 0 and p.pseudo_label_from_epoch > 0
    if self_labelling:  # nothing is pseudo-labelled until the network has learnt enough to label its rows
        pseudo = np.full(y_train.shape, np.nan, np.float32)
    if pseudo is not None:  # labels and pseudo-labels side by side, so that augmentation moves both with their image
        y_train = torch.stack([y_train, torch.from_numpy(pseudo).to(device)], 1)

    steps_per_epoch = max(len(x_train) // p.batch_size, 1)
    opt = make_optimizer(model, p)
    sched = make_scheduler(opt, p, steps_per_epoch)
    gen = torch.Generator(device=device).manual_seed(p.seed)
    best = TrainResult(float("inf"), 0, 0, 0.0, 0.0, device_label(device), "bf16" if bf16 else "fp32")
    best_state = None
    seen, train_time = 0, 0.0
    log.info("training %s on %s (%s): %d train / %d val faces, %d outputs, %d epochs of %d steps", config["arch"], best.device,
             best.precision, len(x_train), len(x_val), n_outputs, p.epochs, steps_per_epoch)

    for epoch in range(1, p.epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x_train), device=device, generator=gen)
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * p.batch_size : (step + 1) * p.batch_size]
            images, targets = augment_batch(x_train[idx].float() / 255, y_train[idx], p.augment, gen)
            if p.normalize_targets:
                targets = (targets - CENTRE) / CENTRE
            images = images.contiguous(memory_format=fmt)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs = model(images)
            if pseudo is None:
                loss = masked_mse(outputs.float(), targets)
            else:
                loss = masked_mse(outputs.float(), targets[:, 0], targets[:, 1], p.pseudo_label_weight)
            if extra_loss is not None:
                loss = loss + extra_loss(model, targets if pseudo is None else targets[:, 0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(loss.detach())
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        train_time += seconds
        seen += steps_per_epoch * p.batch_size
        train_loss = float(torch.stack(losses).mean())
        val_rmse = masked_rmse(predict_pixels(kept, x_val, p.normalize_targets), y_val)
        lr = opt.param_groups[0]["lr"]
        improved = val_rmse < best.best_val_rmse  # False for NaN
        log.info("epoch %3d/%d  loss %.5f  val RMSE %.3f px  %6.1f img/s  lr %.2e%s", epoch, p.epochs, train_loss, val_rmse,
                 steps_per_epoch * p.batch_size / seconds, lr, "  *best" if improved else "")
        if live is not None:
            live.log_metric("train_loss", train_loss)
            live.log_metric("val_rmse", val_rmse)
            live.log_metric("lr", lr)
            live.next_step()
        best.epochs_run = epoch
        since = epoch - p.pseudo_label_from_epoch
        if self_labelling and since >= 0 and since % p.pseudo_label_every == 0 and epoch < p.epochs:
            y_train[:, 1] = torch.from_numpy(pseudo_labels(kept, train, p.normalize_targets)).to(device)
            log.info("pseudo-labels: the network relabelled what its training rows lack (after epoch %d)", epoch)
        if improved:
            best.best_val_rmse, best.best_epoch = val_rmse, epoch
            best_state = {k: v.detach().float().cpu().contiguous().clone() if v.is_floating_point() else v.cpu().clone()
                          for k, v in kept.state_dict().items()}
        elif epoch - best.best_epoch >= p.patience:
            log.info("early stop: no improvement for %d epochs", p.patience)
            break
    best.train_seconds = train_time
    best.images_per_second = seen / train_time if train_time else 0.0
    best.check(f"training {config['arch']}")
    save_checkpoint(model_path, best_state, config)
    return best
