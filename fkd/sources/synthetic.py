"""Drawn faces with known keypoints, written in Kaggle's file layout.

Each face is drawn in the canonical 96x96 Kaggle framing and then moved by a random
similarity transform (rotation, scale, shift), so its 15 keypoints are known exactly.
Contrast, brightness, noise and blur vary per face. A ``partial_fraction`` of training
rows keep only Kaggle's four partial keypoints, marked in scheme B (nose tip lower,
bottom lip higher), like the real file. Deterministic for a given seed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fkd.core.keypoints import COLUMNS, KEYPOINT_NAMES, PARTIAL_KEYPOINTS, index

SIZE = 96
#: Mean keypoint positions of Kaggle's complete rows (pixels, subject's left on image right).
MEAN_SHAPE = {
    "left_eye_center": (66.4, 37.7),
    "right_eye_center": (30.3, 37.6),
    "left_eye_inner_corner": (59.2, 37.9),
    "left_eye_outer_corner": (73.3, 37.7),
    "right_eye_inner_corner": (36.7, 38.0),
    "right_eye_outer_corner": (22.4, 38.0),
    "left_eyebrow_inner_end": (56.1, 29.0),
    "left_eyebrow_outer_end": (79.5, 29.9),
    "right_eyebrow_inner_end": (39.3, 29.6),
    "right_eyebrow_outer_end": (15.9, 30.4),
    "nose_tip": (48.4, 62.7),
    "mouth_left_corner": (63.3, 76.0),
    "mouth_right_corner": (33.0, 76.2),
    "mouth_center_top_lip": (48.0, 72.9),
    "mouth_center_bottom_lip": (48.6, 79.0),
}
#: Scheme B (partial rows): nose tip this many pixels lower, bottom lip this many higher.
SCHEME_B_NOSE_DY = 3.0
SCHEME_B_LIP_DY = -2.5


def _face_shape(rng: np.random.Generator) -> np.ndarray:
    """Canonical (15, 2) keypoints of one face with individual proportions."""
    pts = np.array([MEAN_SHAPE[n] for n in KEYPOINT_NAMES], dtype=np.float64)
    eye_spread = rng.uniform(-2.5, 2.5)
    mouth_spread = rng.uniform(-3.0, 3.0)
    nose_len = rng.uniform(-3.0, 3.0)
    mouth_drop = rng.uniform(-2.0, 3.0)
    brow_lift = rng.uniform(-2.0, 2.0)
    for name in KEYPOINT_NAMES:
        i = index(name)
        side = np.sign(pts[i, 0] - 48.0)
        if "eye" in name and "brow" not in name:
            pts[i, 0] += side * eye_spread
        if "eyebrow" in name:
            pts[i, 0] += side * eye_spread
            pts[i, 1] -= brow_lift
        if name == "nose_tip":
            pts[i, 1] += nose_len
        if name.startswith("mouth"):
            pts[i, 1] += mouth_drop + nose_len / 2
            if "corner" in name:
                pts[i, 0] += side * mouth_spread
    return pts


def _similarity(rng: np.random.Generator) -> np.ndarray:
    """A random 2x3 map from canonical to image pixels (rotation, scale, shift about the centre)."""
    angle = np.deg2rad(rng.uniform(-15, 15))
    scale = rng.uniform(0.85, 1.15)
    shift = rng.uniform(-5, 5, size=2)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    centre = np.array([48.0, 52.0])
    return np.hstack([rot, (centre + shift - rot @ centre)[:, None]])


def _segment_dist(px, py, a, b):
    """Distance from pixel grid points to the segment a-b."""
    ab = b - a
    t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / max(ab @ ab, 1e-9), 0, 1)
    return np.hypot(px - (a[0] + t * ab[0]), py - (a[1] + t * ab[1]))


def _blur(img: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return img
    k = np.ones(2 * radius + 1) / (2 * radius + 1)
    pad = np.pad(img, radius, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, pad)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def draw_face(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One face: uint8 image (96, 96) and its 15 keypoints (30,) in scheme A."""
    shape = _face_shape(rng)
    m = _similarity(rng)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    # canonical coordinates of every image pixel
    u = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    v = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    p = {n: shape[index(n)] for n in KEYPOINT_NAMES}

    bg = rng.uniform(0.1, 0.9) + rng.uniform(-0.3, 0.3) * (xs / SIZE - 0.5) + rng.uniform(-0.3, 0.3) * (ys / SIZE - 0.5)
    skin = rng.uniform(0.45, 0.85)
    img = np.where(((u - 48) / 36) ** 2 + ((v - 54) / 46) ** 2 < 1, skin + 0.08 * (1 - (u - 48) ** 2 / 1300), bg)
    dark = skin * rng.uniform(0.15, 0.4)
    for side in ("left", "right"):
        inner, outer = p[f"{side}_eye_inner_corner"], p[f"{side}_eye_outer_corner"]
        centre = p[f"{side}_eye_center"]
        half = np.hypot(*(outer - inner)) / 2
        eye = ((u - (inner[0] + outer[0]) / 2) / half) ** 2 + ((v - centre[1]) / (half * 0.45)) ** 2 < 1
        img = np.where(eye, skin * 1.15, img)
        img = np.where(np.hypot(u - centre[0], v - centre[1]) < 2.6, dark, img)
        brow = _segment_dist(u, v, p[f"{side}_eyebrow_inner_end"], p[f"{side}_eyebrow_outer_end"]) < 1.6
        img = np.where(brow, dark * 1.3, img)
    nose = p["nose_tip"]
    bridge = _segment_dist(u, v, (p["left_eye_inner_corner"] + p["right_eye_inner_corner"]) / 2 + [0, 6], nose) < 1.0
    img = np.where(bridge, img * 0.85, img)
    for dx in (-3.5, 3.5):
        img = np.where(np.hypot(u - nose[0] - dx, v - nose[1] + 0.5) < 1.6, dark, img)
    left, right = p["mouth_left_corner"], p["mouth_right_corner"]
    top, bottom = p["mouth_center_top_lip"], p["mouth_center_bottom_lip"]
    mid_x = (left[0] + right[0]) / 2
    half_w = max(abs(left[0] - right[0]) / 2, 1.0)
    t = np.clip(1 - ((u - mid_x) / half_w) ** 2, 0, 1)
    upper = (left[1] + right[1]) / 2 - (((left[1] + right[1]) / 2) - top[1]) * t
    lower = (left[1] + right[1]) / 2 + (bottom[1] - (left[1] + right[1]) / 2) * t
    lips = (np.abs(u - mid_x) < half_w) & (v > upper) & (v < lower)
    img = np.where(lips, skin * 0.55, img)
    img = np.where(lips & (np.abs(v - (left[1] + right[1]) / 2) < 0.7), dark, img)

    contrast, brightness = rng.uniform(0.6, 1.3), rng.uniform(-0.15, 0.15)
    img = (img - 0.5) * contrast + 0.5 + brightness
    img = _blur(img, int(rng.integers(0, 2)))
    img = img + rng.normal(0, rng.uniform(0.0, 0.05), img.shape)
    pixels = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    keypoints = (shape @ m[:, :2].T + m[:, 2]).reshape(-1)
    return pixels, keypoints


def to_scheme_b(keypoints: np.ndarray) -> np.ndarray:
    """Scheme-A keypoints (30,) -> the four partial keypoints in scheme B, the rest NaN."""
    out = np.full(30, np.nan)
    nose, lip = index("nose_tip"), index("mouth_center_bottom_lip")
    eye_axis = keypoints[2 * index("left_eye_center") : 2 * index("left_eye_center") + 2] - keypoints[0 + 2 * index("right_eye_center") : 2 * index("right_eye_center") + 2]
    down = np.array([-eye_axis[1], eye_axis[0]]) / max(np.hypot(*eye_axis), 1e-9)  # face's "down"
    for name in PARTIAL_KEYPOINTS:
        i = index(name)
        out[2 * i : 2 * i + 2] = keypoints[2 * i : 2 * i + 2]
    out[2 * nose : 2 * nose + 2] += SCHEME_B_NOSE_DY * down
    out[2 * lip : 2 * lip + 2] += SCHEME_B_LIP_DY * down
    return out


def _pixels_str(images: np.ndarray) -> list[str]:
    return [" ".join(map(str, img.reshape(-1).tolist())) for img in images]


def make_dataset(n_train: int, n_test: int, partial_fraction: float, seed: int):
    """Frames of training.csv, test.csv and IdLookupTable.csv, plus the test keypoints (scheme per image)."""
    rng = np.random.default_rng(seed)
    train = [draw_face(rng) for _ in range(n_train)]
    partial = rng.random(n_train) < partial_fraction
    kps = np.round(np.array([to_scheme_b(k) if b else k for (_, k), b in zip(train, partial)]).reshape(n_train, 30), 4)
    # a point moved off the image is not labelled, as in Kaggle's file (parse rejects labels outside [0, 96))
    off_image = ((kps < 0) | (kps >= SIZE)).reshape(n_train, -1, 2).any(axis=2).repeat(2, axis=1)
    kps[off_image] = np.nan
    training = pd.DataFrame(kps, columns=list(COLUMNS))
    training["Image"] = _pixels_str(np.array([img for img, _ in train]))

    test = [draw_face(rng) for _ in range(n_test)]
    test_images = np.array([img for img, _ in test])
    test_df = pd.DataFrame({"ImageId": np.arange(1, n_test + 1), "Image": _pixels_str(test_images)})
    eight = [f"{n}_{a}" for n in PARTIAL_KEYPOINTS for a in ("x", "y")]
    # a third of the test images ask all 30 features (scheme A), the rest 8 (scheme B)
    asks_all = rng.random(n_test) < 1 / 3
    rows, truth = [], []
    for image_id, all_30, (_, k) in zip(test_df.ImageId, asks_all, test):
        labels = k if all_30 else to_scheme_b(k)
        for col_i, col in enumerate(COLUMNS):
            if all_30 or col in eight:
                rows.append((image_id, col))
                truth.append(labels[col_i])
    lookup = pd.DataFrame(rows, columns=["ImageId", "FeatureName"])
    lookup.insert(0, "RowId", np.arange(1, len(lookup) + 1))
    lookup["Location"] = np.nan
    lookup_truth = lookup[["RowId"]].assign(Location=np.round(truth, 4))
    return training, test_df, lookup, lookup_truth


def write_dataset(out_dir, n_train: int, n_test: int, partial_fraction: float, seed: int) -> None:
    """Write training.csv, test.csv, IdLookupTable.csv (and the withheld test answers) to ``out_dir``."""
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    training, test_df, lookup, truth = make_dataset(n_train, n_test, partial_fraction, seed)
    training.to_csv(out_dir / "training.csv", index=False)
    test_df.to_csv(out_dir / "test.csv", index=False)
    lookup.to_csv(out_dir / "IdLookupTable.csv", index=False)
    truth.to_csv(out_dir / "synthetic_test_answers.csv", index=False)
