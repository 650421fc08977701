"""Face detectors on a gray photo: OpenCV's Haar cascade and scikit-image's LBP cascade, and where the eyes sit in their boxes."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from fkd.predict.geometry import FRAME_EYE_DISTANCE, FRAME_EYE_MID, Box, apply, invert, similarity

#: Face detectors: OpenCV's Haar cascade (haarcascade_frontalface_alt2, ships in
#: opencv-python-headless 4.x) and scikit-image's LBP frontal-face cascade. Both are searched on
#: the photo turned by each of DETECT_ANGLES too, so heads tilted up to ~30 degrees are found.
DETECTORS = ("haar", "lbp")
DEFAULT_DETECTOR = "haar"
DETECT_ANGLES = (0.0, -20.0, 20.0)
#: Where the eyes sit in each detector's box, in the box's upright frame: eye midpoint relative
#: to the box centre (x in box widths, y in box heights) and eye distance in box widths.
#: Medians measured by `benchmarks/predict_refine.py data/split --part train --calibrate`
#: on the proxy's training faces placed in canvases. A --box given by hand uses the default's.
BOX_EYES = {"haar": (0.012, -0.087, 0.397), "lbp": (0.016, -0.097, 0.418)}
#: The detector works on the photo shrunk to this longest side (time grows with the pixel count);
#: faces narrower than ~20 px at that size (6% of the longest side) are missed.
DETECT_MAX_SIDE = 320


def box_matrix(box: Box, detector: str = DEFAULT_DETECTOR) -> np.ndarray:
    """Photo -> crop for a face box: the eyes' average place in ``detector``'s boxes goes to the training framing."""
    dx, dy, distance = BOX_EYES[detector]
    eyes = box.centre + box.upright_to_photo @ [dx * box.w, dy * box.h]
    return similarity(eyes, FRAME_EYE_MID, FRAME_EYE_DISTANCE / (distance * box.w), np.deg2rad(box.angle))


def detect_faces(
    gray: np.ndarray,
    detector: str = DEFAULT_DETECTOR,
    max_side: int = DETECT_MAX_SIDE,
    angles: Sequence[float] = DETECT_ANGLES,
) -> list[Box]:
    """Frontal faces in a float gray photo, largest first, in photo pixels.

    The search runs on the photo shrunk to at most ``max_side`` pixels, once per angle; of
    boxes that overlap (the same face found at two angles) the most confident one is kept.
    """
    from skimage.transform import resize

    search = {"haar": _haar_boxes, "lbp": _lbp_boxes}[detector]
    h, w = gray.shape
    factor = min(1.0, max_side / max(h, w))
    small = gray
    if factor < 1.0:
        small = resize(gray, (max(1, round(h * factor)), max(1, round(w * factor))), anti_aliasing=True, preserve_range=True)
    fx, fy = small.shape[1] / w, small.shape[0] / h
    found = []  # (score, box)
    for angle in angles:
        turned, to_turned = _turned(small, angle)
        back = invert(to_turned)
        for x, y, bw, bh, score in search(turned):
            cx, cy = apply(back, np.array([x + bw / 2 - 0.5, y + bh / 2 - 0.5]))
            cx, cy, bw, bh = (cx + 0.5) / fx - 0.5, (cy + 0.5) / fy - 0.5, bw / fx, bh / fy
            found.append((score, angle == 0, Box(float(cx - bw / 2 + 0.5), float(cy - bh / 2 + 0.5), float(bw), float(bh), float(angle))))
    kept: list[Box] = []
    for _, _, box in sorted(found, key=lambda f: (f[0], f[1], f[2].area), reverse=True):
        if all(_overlap(box, k) < 0.5 for k in kept):
            kept.append(box)
    return sorted(kept, key=lambda b: -b.area)


def _turned(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The image turned by ``angle`` degrees (clockwise on screen) on a canvas that holds all of it, and the 2x3 map into it."""
    from skimage.transform import AffineTransform, warp

    if angle == 0:
        return image, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t = np.deg2rad(angle)
    h, w = image.shape
    nw = int(np.ceil(abs(w * np.cos(t)) + abs(h * np.sin(t))))
    nh = int(np.ceil(abs(w * np.sin(t)) + abs(h * np.cos(t))))
    matrix = similarity(((w - 1) / 2, (h - 1) / 2), ((nw - 1) / 2, (nh - 1) / 2), 1.0, t)
    back = AffineTransform(matrix=np.vstack([invert(matrix), [0, 0, 1]]))
    return warp(image, back, output_shape=(nh, nw), order=1, mode="edge", preserve_range=True), matrix


def check_detector(detector: str) -> None:
    """Raise RuntimeError (saying what to install) when ``detector`` cannot run here."""
    {"haar": _haar_cascade, "lbp": _lbp_cascade}[detector]()


@functools.lru_cache(maxsize=1)
def _haar_cascade():
    try:
        import cv2
    except ImportError:
        raise RuntimeError(
            "the haar face detector needs opencv-python-headless 4.x (pip install 'opencv-python-headless<5'); "
            "or choose the lbp detector (scikit-image)"
        ) from None
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_alt2.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"{path}: OpenCV's Haar cascade is missing (opencv 5.x wheels no longer ship it; use 4.x)")
    return cascade


def _haar_boxes(image: np.ndarray) -> list[tuple]:
    """(x, y, w, h, confidence) of OpenCV's Haar cascade on a float image."""
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    if min(pixels.shape) < 20:
        return []
    rects, _, weights = _haar_cascade().detectMultiScale3(
        pixels, scaleFactor=1.1, minNeighbors=3, minSize=(20, 20), outputRejectLevels=True
    )
    return [(*map(float, r), float(s)) for r, s in zip(rects, np.ravel(weights))]


@functools.lru_cache(maxsize=1)
def _lbp_cascade():
    from skimage import data
    from skimage.feature import Cascade

    return Cascade(data.lbp_frontal_face_cascade_filename())


def _lbp_boxes(image: np.ndarray) -> list[tuple]:
    """(x, y, w, h, 0) of scikit-image's LBP cascade (it gives no confidence)."""
    side = min(image.shape)
    if side < 24:
        return []
    found = _lbp_cascade().detect_multi_scale(
        image, scale_factor=1.2, step_ratio=1.0, min_size=(24, 24), max_size=(side, side), min_neighbor_number=4
    )
    return [(d["c"], d["r"], d["width"], d["height"], 0.0) for d in found]


def _overlap(a: Box, b: Box) -> float:
    """Intersection area over the smaller box's area (tilts ignored)."""
    iw = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    ih = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return max(iw, 0.0) * max(ih, 0.0) / min(a.area, b.area)
