"""The 15 Kaggle keypoints, their column order, the left/right flip table and the two marking schemes.

This module is the single place where keypoint names, flip pairs and the scheme layout live.

Kaggle's training file mixes two marking schemes. Rows with all 15 keypoints ("complete",
scheme A) and rows with only 4 ("partial", scheme B) were marked by different conventions:
eye centres agree, but scheme B's nose tip sits lower and its bottom-lip point higher.
Test images asked for 8 features are scored in scheme B, those asked for 30 in scheme A.
The models therefore predict 17 points: the 15 of scheme A plus scheme B's nose tip and
bottom lip ("extended" layout, 34 coordinates), and each row is trained and scored against
the outputs of its own scheme.
"""
from __future__ import annotations

import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
)
N_KEYPOINTS = len(KEYPOINT_NAMES)
N_COORDS = 2 * N_KEYPOINTS

#: training.csv's 30 keypoint columns, in Kaggle's order.
COLUMNS: tuple[str, ...] = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y"))

#: The four keypoints that partial (scheme B) rows carry.
PARTIAL_KEYPOINTS: tuple[str, ...] = (
    "left_eye_center",
    "right_eye_center",
    "nose_tip",
    "mouth_center_bottom_lip",
)
#: Keypoints whose position differs between the schemes; they get extra outputs for scheme B.
SCHEME_B_KEYPOINTS: tuple[str, ...] = ("nose_tip", "mouth_center_bottom_lip")

#: Keypoint names of the extended (scheme-aware) layout: 15 scheme-A points + 2 scheme-B points.
EXTENDED_NAMES: tuple[str, ...] = KEYPOINT_NAMES + tuple(f"{n}_b" for n in SCHEME_B_KEYPOINTS)
N_EXTENDED = len(EXTENDED_NAMES)

#: Left/right pairs swapped by a horizontal flip ("left" is the subject's left).
FLIP_PAIRS: tuple[tuple[str, str], ...] = (
    ("left_eye_center", "right_eye_center"),
    ("left_eye_inner_corner", "right_eye_inner_corner"),
    ("left_eye_outer_corner", "right_eye_outer_corner"),
    ("left_eyebrow_inner_end", "right_eyebrow_inner_end"),
    ("left_eyebrow_outer_end", "right_eyebrow_outer_end"),
    ("mouth_left_corner", "mouth_right_corner"),
)


def index(name: str, names: tuple[str, ...] = KEYPOINT_NAMES) -> int:
    """Point index of keypoint ``name`` (x at 2*i, y at 2*i+1)."""
    return names.index(name)


def point_names(n_coords: int) -> tuple[str, ...]:
    """The keypoint names of a coordinate layout: the extended one (34) or Kaggle's (30)."""
    return EXTENDED_NAMES if n_coords == 2 * len(EXTENDED_NAMES) else KEYPOINT_NAMES


def flip_permutation(names: tuple[str, ...] = KEYPOINT_NAMES) -> np.ndarray:
    """Point permutation that maps each keypoint to its mirror partner (self for centre points)."""
    perm = np.arange(len(names))
    for left, right in FLIP_PAIRS:
        if left in names and right in names:
            i, j = names.index(left), names.index(right)
            perm[i], perm[j] = j, i
    return perm


def flip_coords(coords: np.ndarray, width: float = 96.0, names: tuple[str, ...] = KEYPOINT_NAMES) -> np.ndarray:
    """Keypoints (..., 2*len(names)) of the horizontally mirrored image: x -> width-1-x, left<->right."""
    pts = np.asarray(coords).reshape(*coords.shape[:-1], len(names), 2)
    out = pts[..., flip_permutation(names), :].copy()
    out[..., 0] = (width - 1.0) - out[..., 0]
    return out.reshape(coords.shape)


def shift_x(coords: np.ndarray, dx: float) -> np.ndarray:
    """A copy of keypoints (..., 2K) with every x moved by ``dx`` pixels (missing ones stay NaN)."""
    out = np.array(coords, copy=True)
    out[..., 0::2] += dx
    return out


def complete_mask(keypoints: np.ndarray) -> np.ndarray:
    """Rows (N,) that carry all 30 coordinates (scheme A); the rest are partial (scheme B)."""
    return np.isfinite(keypoints).all(axis=1)


def to_extended(keypoints: np.ndarray) -> np.ndarray:
    """Kaggle rows (N, 30) -> scheme-aware targets (N, 34).

    Complete rows keep their 30 coordinates and leave the scheme-B outputs missing;
    partial rows move their nose tip and bottom lip to the scheme-B outputs. Eye centres
    are shared by both schemes.
    """
    keypoints = np.asarray(keypoints, dtype=np.float32)
    out = np.full((len(keypoints), 2 * N_EXTENDED), np.nan, dtype=np.float32)
    out[:, :N_COORDS] = keypoints
    partial = ~complete_mask(keypoints)
    for name in SCHEME_B_KEYPOINTS:
        a, b = index(name), index(f"{name}_b", EXTENDED_NAMES)
        out[partial, 2 * b : 2 * b + 2] = keypoints[partial, 2 * a : 2 * a + 2]
        out[partial, 2 * a : 2 * a + 2] = np.nan
    return out


def from_extended(outputs: np.ndarray, scheme_b: np.ndarray | bool) -> np.ndarray:
    """Model outputs (N, 34) -> Kaggle coordinates (N, 30) in each row's scheme.

    ``scheme_b`` (N,) or a scalar says which rows want scheme B (the 8-feature rows).
    """
    outputs = np.asarray(outputs)
    out = outputs[:, :N_COORDS].copy()
    rows = np.broadcast_to(np.asarray(scheme_b, dtype=bool), (len(outputs),))
    for name in SCHEME_B_KEYPOINTS:
        a, b = index(name), index(f"{name}_b", EXTENDED_NAMES)
        out[rows, 2 * a : 2 * a + 2] = outputs[rows, 2 * b : 2 * b + 2]
    return out


def widen_to_extended(outputs: np.ndarray) -> np.ndarray:
    """Outputs (N, 30) of a model without scheme heads -> (N, 34): scheme B reuses the scheme-A nose and lip."""
    outputs = np.asarray(outputs)
    out = np.empty((len(outputs), 2 * N_EXTENDED), dtype=outputs.dtype)
    out[:, :N_COORDS] = outputs
    for name in SCHEME_B_KEYPOINTS:
        a, b = index(name), index(f"{name}_b", EXTENDED_NAMES)
        out[:, 2 * b : 2 * b + 2] = outputs[:, 2 * a : 2 * a + 2]
    return out


def training_targets(keypoints: np.ndarray, n_outputs: int) -> np.ndarray:
    """Pixel targets (N, n_outputs) of Kaggle rows for a model with ``n_outputs`` outputs: the extended layout
    (34, :func:`to_extended`) or Kaggle's 30 columns as they are; NaN where not labelled."""
    if n_outputs == 2 * N_EXTENDED:
        return to_extended(keypoints)
    if n_outputs == N_COORDS:
        return np.asarray(keypoints, dtype=np.float32)
    raise ValueError(f"a keypoint model has {N_COORDS} or {2 * N_EXTENDED} outputs, not {n_outputs}")


def masked_rmse(pred: np.ndarray, targets: np.ndarray) -> float:
    """RMSE in pixels over the labelled (finite) target coordinates; ValueError when there are none."""
    rmse = finite_rmse(np.asarray(pred, dtype=np.float64) - np.asarray(targets, dtype=np.float64))
    if rmse is None:
        raise ValueError("no labelled coordinate to score")
    return rmse


def finite_rmse(diff: np.ndarray) -> float | None:
    """RMSE of the finite entries of ``diff`` (NaN where a target is not labelled); None when there are none."""
    diff = diff[np.isfinite(diff)]
    return float(np.sqrt(np.mean(diff**2))) if diff.size else None
