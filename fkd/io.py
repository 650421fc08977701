"""Atomic file writes: outputs appear whole or not at all, and the same content gives the same bytes."""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name is random: write through it only with writers that do not record the file
    name in the file (use :func:`save_bytes` for those that do, such as ``torch.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_torch(path: str | Path, obj) -> None:
    """``torch.save`` byte-stably: saved to memory first, so the archive's record names do not carry
    the temporary file's random name (torch names them after the file)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    save_bytes(path, buffer.getvalue())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def save_json(path: str | Path, obj) -> None:
    """Pretty JSON through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
