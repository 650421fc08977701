"""Atomic file writes: outputs appear whole or not at all, and the same content gives the same bytes."""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger("fkd.core.io")


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name is random: write through it only with writers that do not record the file
    name in the file (for those that do, make the bytes in memory and use :func:`save_bytes`).
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


@contextlib.contextmanager
def staged_dir(out_dir: str | Path):
    """Yield an empty folder to fill in place of ``out_dir``; only if the block succeeds does it replace
    ``out_dir`` whole (:func:`replace_dir`), else ``out_dir`` stays as it was.

    The folder lives in ``.<out name>.<pid>.<random>.tmp/`` beside ``out_dir`` (git-ignore that pattern);
    such folders left by killed runs are removed first (:func:`remove_stale_staging`). The yielded
    folder's parent is that staging folder: scratch files put there go with it.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".tmp", dir=out_dir.parent))
    try:
        new = staging / out_dir.name
        new.mkdir()
        yield new
        replace_dir(new, out_dir, staging / "previous")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(new: str | Path, out_dir: str | Path, previous: str | Path) -> None:
    """Put the folder ``new`` at ``out_dir`` by renames; an existing ``out_dir`` is moved to ``previous``
    (on the same file system; the caller removes it)."""
    out_dir = Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        os.replace(out_dir, previous)
    os.replace(new, out_dir)


def remove_stale_staging(out_dir: str | Path) -> list[Path]:
    """Remove the staging folders ``.<out name>.<pid>.<random>.tmp`` beside ``out_dir`` whose process ``pid``
    no longer runs on this machine (left by killed runs); returns them. A folder named without a pid
    (``.<out name>.<random>.tmp``) is stale too. A reused pid keeps its folder until that process ends."""
    out_dir = Path(out_dir)
    removed = []
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*.tmp"):
        middle = path.name[len(out_dir.name) + 2 : -len(".tmp")].split(".")
        pid = int(middle[0]) if len(middle) == 2 and middle[0].isdigit() else None
        if not path.is_dir() or path.is_symlink() or len(middle) > 2 or (pid is not None and _process_exists(pid)):
            continue
        log.info("removing %s, left by a run that did not finish", path)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def save_json(path: str | Path, obj) -> None:
    """Pretty JSON through a temporary file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
