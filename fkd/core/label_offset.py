"""Where a data set's labels sit, along x, relative to the image features they mark; estimated from the images.

Flip augmentation and flip TTA mirror a face together with its labels: pixel column i goes to 95 - i and a label
at x to 95 - x. That is exact only if a label at x marks the feature at x. If a set's labels all sit b px right of
their features, the labels of a mirrored face sit b px *left* of them: the flipped half of the training faces
contradicts the other half by 2b, every model learns the middle (b px left of the labels), and flip TTA cannot
help. The split stage therefore moves the labels onto the features (x - b) and submit moves the predictions
back (x + b); in between, every model, flip, plot and photo works in the image's own frame.

:func:`estimate_offset` finds b from the images: the mean patch around the left-eye-centre labels and the mirrored
mean patch around the right-eye-centre labels show the same feature, an eye, the first b px left of the patch
centre and the second b px right of it, so b is half the x shift that best aligns the two. Eye centres are
labelled in every row of both of Kaggle's marking schemes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fkd.core.data import DataError
from fkd.core.keypoints import COLUMNS

#: The keypoint pair that every labelled row carries: its two patches are compared.
EYE_CENTRES = ("left_eye_center", "right_eye_center")
RADIUS = 10  # patch half-size, px
MAX_OFFSET = 4.0  # the largest |b| searched, px
STEP = 0.05  # the resolution of the estimate, px
_CHUNK = 256  # faces sampled at a time (bounds the memory to ~100 MB)


class LabelOffsetError(DataError):
    """No offset to be had: no labels to estimate it from, or no readable record of the one used."""


def _mean_patch(images: np.ndarray, centres: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The mean over faces of ``images[i]`` sampled bilinearly at ``centres[i] + (dx, dy)``: (len(dy), len(dx))."""
    height, width = images.shape[1:]
    total = np.zeros((len(dy), len(dx)))
    for start in range(0, len(images), _CHUNK):
        img = images[start : start + _CHUNK].astype(np.float32)
        c = centres[start : start + _CHUNK].astype(np.float32)
        x = np.clip(c[:, 0, None, None] + dx[None, None, :], 0, width - 1)  # (n, 1, X)
        y = np.clip(c[:, 1, None, None] + dy[None, :, None], 0, height - 1)  # (n, Y, 1)
        x0 = np.minimum(np.floor(x).astype(np.int64), width - 2)
        y0 = np.minimum(np.floor(y).astype(np.int64), height - 2)
        fx, fy, n = x - x0, y - y0, np.arange(len(img))[:, None, None]
        top = img[n, y0, x0] * (1 - fx) + img[n, y0, x0 + 1] * fx
        bottom = img[n, y0 + 1, x0] * (1 - fx) + img[n, y0 + 1, x0 + 1] * fx
        total += (top * (1 - fy) + bottom * fy).sum(axis=0)
    return total / len(images)


def estimate_offset(images: np.ndarray, keypoints: np.ndarray) -> tuple[float, int]:
    """How far right (px, a multiple of :data:`STEP` within ±:data:`MAX_OFFSET`) the labels sit of the features
    they mark, from uint8 images (N, 96, 96) and Kaggle-layout keypoints (N, 30); and the number of faces used
    (those with both eye centres). :class:`LabelOffsetError` if no face has both."""
    cols = [[COLUMNS.index(f"{name}_x"), COLUMNS.index(f"{name}_y")] for name in EYE_CENTRES]
    left, right = (np.asarray(keypoints, dtype=np.float64)[:, c] for c in cols)
    rows = np.flatnonzero(np.isfinite(left).all(axis=1) & np.isfinite(right).all(axis=1))
    if len(rows) == 0:
        raise LabelOffsetError("no row labels both eye centres, so the label offset cannot be estimated: "
                               "set data.label_offset_x to a number (0: labels mark the features)")
    k, r = round(MAX_OFFSET / STEP), round(RADIUS / STEP)
    grid = np.arange(-(r + k), r + k + 1, dtype=np.float32) * STEP  # x offsets from the label, fine grid
    dy = np.arange(-RADIUS, RADIUS + 1, dtype=np.float32)
    mean_left = _mean_patch(images[rows], left[rows], grid, dy)
    mean_right = _mean_patch(images[rows], right[rows], grid, dy)
    centre, dx = r + k, np.arange(-r, r + 1)  # grid index of offset 0; patch columns in grid steps
    errors = []
    for shift in range(-k, k + 1):  # b = shift * STEP: features at label - b
        a = mean_left[:, centre + dx - shift]  # left eye, around its feature
        b = mean_right[:, centre - dx - shift]  # right eye, around its feature, mirrored
        errors.append(np.mean(((a - a.mean()) - (b - b.mean())) ** 2))
    return round((int(np.argmin(errors)) - k) * STEP, 2), len(rows)


def resolve_offset(label_offset_x: float | str, prepared_dir: str | Path) -> tuple[float, int]:
    """params ``data.label_offset_x``: a number as it is (0 faces), or ``auto``: :func:`estimate_offset` on the
    parsed training rows in ``prepared_dir``. Returns the offset and the number of faces it was estimated from."""
    if label_offset_x != "auto":
        return float(label_offset_x), 0
    path = Path(prepared_dir) / "train_keypoints.npy"
    try:
        return estimate_offset(np.load(Path(prepared_dir) / "train_images.npy"), np.load(path))
    except LabelOffsetError as exc:
        raise LabelOffsetError(f"{path}: {exc}") from None


def read_offset(path: str | Path) -> float:
    """The ``label_offset_x`` the split stage used, from its metrics file; :class:`LabelOffsetError` naming the file."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())["label_offset_x"]
    except FileNotFoundError:
        raise LabelOffsetError(f"{path} not found: run the split stage first") from None
    except (ValueError, KeyError, TypeError):
        raise LabelOffsetError(f"{path}: no 'label_offset_x' number in it: run the split stage again") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LabelOffsetError(f"{path}: 'label_offset_x' is {value!r}, not a number: run the split stage again")
    return float(value)
