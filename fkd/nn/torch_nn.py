"""Torch pieces the torch models share: the residual block, the masked loss, the target scaling and
saving a network as safetensors and loading it back, checked, into a model function."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fkd.core.errors import ModelFileError
from fkd.core.io import save_bytes
from fkd.core.keypoints import N_COORDS, widen_to_extended
from fkd.core.schema import ParamsError, Range, build as build_section, to_dict

#: Coordinates are trained as (xy - CENTRE) / CENTRE when targets are normalised.
CENTRE = 48.0
#: Bounds of a saved architecture dict's sizes: generous for 96x96 faces, and no file can ask for an absurd network.
Channels = Annotated[int, Range(ge=1, le=4096)]
BlocksPerStage = Annotated[int, Range(ge=1, le=16)]


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, pseudo: torch.Tensor | None = None, pseudo_weight: float = 0.0) -> torch.Tensor:
    """Mean squared error over finite targets only; 0 (with a zero gradient) when a batch has none.

    ``pseudo``: pseudo-labels (NaN where none) for coordinates the targets lack, each counted ``pseudo_weight`` times a label.
    """
    mask = torch.isfinite(target)
    diff = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    if pseudo is None:
        return (diff * diff).sum() / mask.sum().clamp(min=1)
    pseudo_mask = torch.isfinite(pseudo) & ~mask
    pseudo_diff = torch.where(pseudo_mask, pred - torch.nan_to_num(pseudo), torch.zeros_like(pred))
    total = (diff * diff).sum() + pseudo_weight * (pseudo_diff * pseudo_diff).sum()
    return total / (mask.sum() + pseudo_weight * pseudo_mask.sum()).clamp(min=1)


def to_pixels(outputs: torch.Tensor, normalized: bool) -> torch.Tensor:
    return outputs * CENTRE + CENTRE if normalized else outputs


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict) -> None:
    """Save a network as safetensors, byte-stably: its tensors (dtypes kept) and its architecture dict
    ``config`` as canonical JSON, the metadata's only key (safetensors writes several keys in random order)."""
    from safetensors.torch import save

    tensors = {name: t.detach().cpu().contiguous() for name, t in state_dict.items()}
    save_bytes(path, save(tensors, metadata={"config": json.dumps(config, sort_keys=True)}))


def read_checkpoint(path: str | Path, arch: str, schema: type, build: Callable[[dict], nn.Module]) -> tuple[dict, dict]:
    """The architecture dict and tensors of a file saved by :func:`save_checkpoint` for architecture ``arch``.

    Nothing in the file runs: it is read as safetensors only (a pickled ``torch.save`` checkpoint is refused), its
    config must pass ``schema`` (the network's :class:`fkd.core.schema` dataclass, with bounds) and its tensors must be
    exactly those of ``build(config)`` (checked on the meta device, so a config never allocates more than the file
    holds). Anything else is a one-line :class:`ModelFileError` naming the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    retrain = f"`dvc repro train@{arch}-{path.stem}`" if path.stem.isdigit() and path.parent.name == arch else "`dvc repro`"

    def refuse(why: str) -> ModelFileError:
        return ModelFileError(f"{path}: cannot load the {arch} model ({why}); retrain it with {retrain} (or fetch it with `dvc pull`)")

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
    except OSError as exc:
        raise refuse(f"cannot read it: {exc.strerror or exc}") from None
    except SafetensorError as exc:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == b"PK" or head[:1] == b"\x80":
            kind = "a zip archive, as an old torch.save checkpoint is" if head == b"PK" else "a pickle"
            raise refuse(f"it is {kind}: model files are read as safetensors only, never unpickled") from None
        raise refuse(f"not a safetensors file: {str(exc).removeprefix('Error while deserializing header: ')}") from None
    if set(metadata) != {"config"}:
        raise refuse(f"its safetensors metadata has the keys {sorted(metadata)}, expected only 'config'")
    try:
        raw = json.loads(metadata["config"])
    except (ValueError, RecursionError):
        raise refuse("its 'config' metadata is not JSON") from None
    if not isinstance(raw, dict):
        raise refuse(f"its 'config' metadata is a JSON {type(raw).__name__}, not an object")
    held = raw.get("arch")
    if held != arch:
        raise ModelFileError(f"{path}: holds a {held!r} network, expected {arch!r}; put it in its own model's folder, "
                             f"or retrain it with {retrain} (or fetch it with `dvc pull`)")
    try:
        config = to_dict(build_section(schema, raw, "config"))
    except ParamsError as exc:
        raise refuse(f"its config is not a {arch} architecture: {str(exc).removeprefix('params: ')}") from None
    try:
        with torch.device("meta"):
            expected = build(config).state_dict()
    except Exception as exc:  # a value the schema's types let through but the network rejects (e.g. 34.0 for 34)
        raise refuse(f"its config does not build a {arch} network: {exc}") from None
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise refuse(f"its tensors do not match its config: {len(missing)} missing{f' ({missing[0]!r}, ...)' if missing else ''}, "
                     f"{len(extra)} unexpected{f' ({extra[0]!r}, ...)' if extra else ''}")
    for name, want in expected.items():
        got = state[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise refuse(f"tensor {name!r} is {str(got.dtype).removeprefix('torch.')} {list(got.shape)}, "
                         f"its config needs {str(want.dtype).removeprefix('torch.')} {list(want.shape)}")
    return config, state


def load_checkpoint_fn(path: str | Path, arch: str, schema: type, build: Callable[[dict], nn.Module], device: str = "cpu",
                       batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Model function (uint8 (N, 96, 96) -> float (N, 34) pixels) of a file saved by :func:`fkd.nn.torch_train.train_torch`
    for architecture ``arch`` (read and checked by :func:`read_checkpoint`), its network made by ``build(config)``."""
    config, state = read_checkpoint(path, arch, schema, build)
    with torch.device("meta"):
        model = build(config)
    model.load_state_dict(state, assign=True)  # the file's tensors themselves: no second, random-initialised copy
    model = model.to(device)
    model.eval()

    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            x = x.unsqueeze(1).float() / 255.0
            out.append(to_pixels(model(x).float(), config["normalize_targets"]).cpu().numpy())
        pixels = np.concatenate(out) if out else np.zeros((0, config["n_outputs"]), np.float32)
        return widen_to_extended(pixels) if pixels.shape[1] == N_COORDS else pixels

    return predict
