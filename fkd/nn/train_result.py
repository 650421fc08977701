"""What every training stage reports at the end, and how it is recorded.

The figures split in two: what the same code, params and data reproduce to the byte
(``metrics()``: the committed, gated DVC metrics) and how fast it ran (``speed()``: the log and
an untracked ``speed.json`` beside the metrics, never in git or ``dvc.lock``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from fkd.core.errors import TrainingError
from fkd.core.io import staged_dir

log = logging.getLogger("fkd.train")

#: Fields of :class:`TrainResult` that change from run to run; kept out of the committed metrics.
SPEED_FIELDS = ("train_seconds", "images_per_second")
#: Where :func:`record` writes the speed figures, inside a stage's metrics folder (ignored by git).
SPEED_FILE = "speed.json"


@dataclass
class TrainResult:
    best_val_rmse: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    images_per_second: float
    device: str
    precision: str  # fp32, or bf16: bfloat16 compute (torch autocast, fkd.nn.torch_train.use_bf16; Keras mixed_bfloat16)

    def metrics(self) -> dict:
        """The reproducible figures (DVC metrics)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in SPEED_FIELDS}

    def speed(self) -> dict:
        return {k: getattr(self, k) for k in SPEED_FIELDS}

    def check(self, what: str) -> None:
        """Raise :class:`TrainingError` unless at least one epoch ran and a finite val RMSE was reached."""
        if self.epochs_run < 1:
            raise TrainingError(f"{what}: no epoch ran; check the epochs params")
        if not math.isfinite(self.best_val_rmse):
            raise TrainingError(f"{what}: no finite validation RMSE in {self.epochs_run} epochs (training diverged?): "
                                "lower the learning rate; no model was written")


def cpu_bf16_instructions(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """This CPU's bfloat16 instruction sets, from ``cpuinfo``: ``avx512_bf16`` (dot products) and ``amx_bf16``
    (matrix tiles); empty where it has neither, or off Linux. Which one a CPU has decides whether bf16 pays: see
    ``python -m benchmarks.cpu_precision``."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return []
    return [name for name in ("avx512_bf16", "amx_bf16") if name in flags]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (x86 AVX512-BF16 or AMX). PyTorch's own check also says yes
    where oneDNN only emulates bf16 (any AVX-512 CPU), which is slower than fp32."""
    return bool(cpu_bf16_instructions())


def record(live, result: TrainResult, metrics_dir: str | Path) -> None:
    """Log ``result``'s reproducible figures as final dvclive metrics and its speed to ``speed.json``."""
    for name, value in result.metrics().items():
        live.log_metric(name, value, plot=False)
    path = Path(metrics_dir) / SPEED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.speed(), indent=2) + "\n")


def run_training(train_fn, split_dir: str | Path, fold: int, metrics_dir: str | Path, *args) -> TrainResult:
    """A training stage's body: ``train_fn(train, val, *args, live=...)`` on fold ``fold``'s two parts, with
    dvclive logging into ``metrics_dir``, the result recorded there (:func:`record`) and summed up in the log.

    dvclive writes into a staging folder that replaces ``metrics_dir`` only when training finished
    (:func:`fkd.core.io.staged_dir`): a run that fails or is interrupted leaves the previous metrics and curves.
    """
    from dvclive import Live

    from fkd.core.data import load_fold

    with staged_dir(metrics_dir) as staged:
        with Live(str(staged), dvcyaml=None, save_dvc_exp=False, report=None) as live:
            result = train_fn(*load_fold(split_dir, fold), *args, live=live)
            record(live, result, staged)
    log.info("fold %d: best val RMSE %.3f px at epoch %d of %d (%.0f s, %.1f img/s on %s)", fold, result.best_val_rmse,
             result.best_epoch, result.epochs_run, result.train_seconds, result.images_per_second, result.device)
    return result


def bf16_here(wanted: bool, on_cpu: bool, key: str) -> bool:
    """Whether to compute in bfloat16: ``wanted`` (params ``key``), but on a CPU only one of
    :func:`cpu_has_native_bf16` (elsewhere bf16 is emulated, slower than fp32; that is logged)."""
    if wanted and on_cpu and not cpu_has_native_bf16():
        log.info("%s is on, but this CPU has no bf16 instructions (AVX512-BF16, AMX): training in fp32", key)
        return False
    return wanted


def cpu_threads(threads: int) -> int:
    """The CPU thread count of params ``threads``: 0 means every core this process may run on."""
    return threads or len(os.sched_getaffinity(0))
