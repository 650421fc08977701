"""Faces in any photo: detection, the crop geometry of the training framing, and two-pass refinement.

Every crop is one 2x3 affine ``matrix`` that maps photo pixels to crop pixels (pixel centres
at integer coordinates in both, x to the right, y down). The crop image samples the photo
through the matrix's inverse, and keypoints predicted in the crop go back to the photo
through the same inverse, so the two can never disagree.

The chain: the detector's box gives a first crop framed like the training faces on average
(calibrated below); the model predicts on it; the predicted eye centres then give a second
crop, rotated so the eyes are level and scaled to the training framing (eye midpoint at
(48, 38), 36 px between the eye centres), and the model predicts again.

No model code lives here: the chain takes any :data:`CropPredictor` (:func:`model_predictor` makes one
from a :data:`fkd.evaluation.inference.ModelFn`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fkd.core.keypoints import EXTENDED_NAMES, N_KEYPOINTS, index

CROP_SIZE = 96
#: Face detectors: OpenCV's Haar cascade (haarcascade_frontalface_alt2, ships in
#: opencv-python-headless 4.x) and scikit-image's LBP frontal-face cascade. Both are searched on
#: the photo turned by each of DETECT_ANGLES too, so heads tilted up to ~30 degrees are found.
DETECTORS = ("haar", "lbp")
DEFAULT_DETECTOR = "haar"
DETECT_ANGLES = (0.0, -20.0, 20.0)
#: Eye midpoint and inter-ocular distance of the training framing (Kaggle and the proxy's
#: training split agree: midpoint (48.0, 38.0), mean distance 35.9 px).
FRAME_EYE_MID = (48.0, 38.0)
FRAME_EYE_DISTANCE = 36.0
#: Where the eyes sit in each detector's box, in the box's upright frame: eye midpoint relative
#: to the box centre (x in box widths, y in box heights) and eye distance in box widths.
#: Medians measured by `benchmarks/predict_refine.py data/split --part train --calibrate`
#: on the proxy's training faces placed in canvases. A --box given by hand uses the default's.
BOX_EYES = {"haar": (0.012, -0.087, 0.397), "lbp": (0.016, -0.097, 0.418)}
#: The detector works on the photo shrunk to this longest side (time grows with the pixel count);
#: faces narrower than ~20 px at that size (6% of the longest side) are missed.
DETECT_MAX_SIDE = 320
#: Refinement is skipped when the first pass puts the eyes closer or farther apart than this
#: (in crop pixels): the first crop was no face the model recognised.
REFINE_EYE_DISTANCE = (12.0, 80.0)

#: Predictor of keypoints in crops: (crops uint8 (N, 96, 96), matrices (N, 2, 3)) -> (N, 34) crop pixels.
CropPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]

_LEFT_EYE, _RIGHT_EYE = index("left_eye_center"), index("right_eye_center")


@dataclass(frozen=True)
class Box:
    """A face box in photo pixels: columns x .. x+w-1, rows y .. y+h-1 (the detector's convention).

    ``angle`` (degrees, clockwise on screen) is the turn of the photo under which the detector saw
    the face upright (see DETECT_ANGLES); the box is that square about the same centre, turned back
    by -angle in the photo.
    """

    x: float
    y: float
    w: float
    h: float
    angle: float = 0.0

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.x + self.w / 2 - 0.5, self.y + self.h / 2 - 0.5])

    @property
    def area(self) -> float:
        return self.w * self.h

    @classmethod
    def parse(cls, text: str) -> "Box":
        """``"x,y,w,h"`` -> Box; finite numbers, w and h positive."""
        parts = text.split(",")
        try:
            x, y, w, h = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"box {text!r}: expected four numbers x,y,w,h") from None
        if not np.isfinite([x, y, w, h]).all():
            raise ValueError(f"box {text!r}: expected four finite numbers x,y,w,h")
        if w <= 0 or h <= 0:
            raise ValueError(f"box {text!r}: width and height must be positive")
        return cls(x, y, w, h)

    def centre_inside(self, width: int, height: int) -> bool:
        """Whether the box's centre lies on a ``width`` x ``height`` photo (pixel edges -0.5 .. size - 0.5)."""
        cx, cy = self.centre
        return bool(-0.5 <= cx <= width - 0.5 and -0.5 <= cy <= height - 0.5)


@dataclass
class FaceResult:
    """One face: its box, its keypoints in photo pixels, and the crops that gave them."""

    box: Box
    points: np.ndarray  # (17, 2) extended layout (fkd.core.keypoints.EXTENDED_NAMES), photo pixels
    matrix: np.ndarray  # (2, 3) photo -> crop of the final pass
    crop: np.ndarray  # uint8 (96, 96) of the final pass
    passes: list[np.ndarray] = field(default_factory=list)  # (17, 2) photo pixels after each pass

    @property
    def keypoints(self) -> np.ndarray:
        """The 15 scheme-A keypoints as Kaggle's 30 coordinates (x, y interleaved), photo pixels."""
        return self.points[:N_KEYPOINTS].reshape(-1)


# --- geometry -------------------------------------------------------------------------------


def similarity(src: Sequence[float], dst: Sequence[float], scale: float, angle: float) -> np.ndarray:
    """2x3 matrix of p -> scale * R(angle) (p - src) + dst; a positive angle (radians) turns clockwise on screen (y down)."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return np.hstack([rot, (np.asarray(dst, float) - rot @ np.asarray(src, float))[:, None]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (..., 2) through a 2x3 affine matrix (NaN stays NaN)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix, as 2x3."""
    return np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]


def box_matrix(box: Box, detector: str = DEFAULT_DETECTOR) -> np.ndarray:
    """Photo -> crop for a face box: the eyes' average place in ``detector``'s boxes goes to the training framing."""
    dx, dy, distance = BOX_EYES[detector]
    t = np.deg2rad(box.angle)
    upright_to_photo = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    eyes = box.centre + upright_to_photo @ [dx * box.w, dy * box.h]
    return similarity(eyes, FRAME_EYE_MID, FRAME_EYE_DISTANCE / (distance * box.w), t)


def box_corners(box: Box) -> np.ndarray:
    """The box's four corners (4, 2) in photo pixels (a tilted square for a box found on a turned photo)."""
    t = np.deg2rad(box.angle)
    upright_to_photo = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [box.w / 2, box.h / 2]
    return box.centre + half @ upright_to_photo.T


def frame_matrix(box: Box) -> np.ndarray:
    """Photo -> crop that maps the box exactly onto the 96x96 crop (for input already framed like the training faces)."""
    sx, sy = CROP_SIZE / box.w, CROP_SIZE / box.h
    # pixel edges: box.x - 0.5 -> -0.5 and box.x + w - 0.5 -> 95.5
    return np.array([[sx, 0.0, -0.5 - sx * (box.x - 0.5)], [0.0, sy, -0.5 - sy * (box.y - 0.5)]])


def eyes_matrix(left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
    """Photo -> crop that puts the eye centres level, 36 px apart, midpoint at (48, 38).

    ``left_eye`` is the subject's left eye (on the image's right in an upright face).
    """
    axis = np.asarray(left_eye, float) - np.asarray(right_eye, float)
    distance = float(np.hypot(*axis))
    return similarity((left_eye + right_eye) / 2, FRAME_EYE_MID, FRAME_EYE_DISTANCE / distance, -np.arctan2(axis[1], axis[0]))


def to_gray(photo: np.ndarray) -> np.ndarray:
    """A photo as float64 grayscale in [0, 1]: uint8/uint16/float, gray, RGB or RGBA (alpha over white)."""
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    img = img_as_float(np.asarray(photo))
    if img.ndim == 3 and img.shape[2] in (2, 4):  # gray+alpha or RGBA: composite on white
        alpha = img[..., -1:]
        img = img[..., :-1] * alpha + (1.0 - alpha)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        img = rgb2gray(img)
    if img.ndim != 2:
        raise ValueError(f"expected a gray, RGB or RGBA image, got shape {photo.shape}")
    return np.clip(img, 0.0, 1.0)


def crop_face(gray: np.ndarray, matrix: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The uint8 (size, size) crop that ``matrix`` (photo -> crop) defines; the photo's edge pixels extend outside it.

    When the crop shrinks the photo, the photo is first smoothed (Gaussian, sigma = (shrink - 1) / 2,
    as skimage.transform.rescale's anti-aliasing) so that the crop looks like a downsampled
    training image rather than an aliased one.
    """
    from skimage.filters import gaussian
    from skimage.transform import AffineTransform, warp

    inv = invert(matrix)
    shrink = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))  # photo pixels per crop pixel
    sigma = max(0.0, (shrink - 1.0) / 2.0)
    margin = int(np.ceil(4 * sigma)) + 2
    edges = apply(inv, np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]]))
    h, w = gray.shape
    # only the photo region under the crop is smoothed and sampled (clamped to at least one pixel)
    x0 = int(np.clip(np.floor(edges[:, 0].min()) - margin, 0, w - 1))
    x1 = int(np.clip(np.ceil(edges[:, 0].max()) + margin + 1, x0 + 1, w))
    y0 = int(np.clip(np.floor(edges[:, 1].min()) - margin, 0, h - 1))
    y1 = int(np.clip(np.ceil(edges[:, 1].max()) + margin + 1, y0 + 1, h))
    region = gray[y0:y1, x0:x1]
    if sigma > 0.3:
        region = gaussian(region, sigma=sigma, mode="nearest", preserve_range=True)
    inv_region = inv.copy()
    inv_region[:, 2] -= (x0, y0)
    out = warp(region, AffineTransform(matrix=np.vstack([inv_region, [0, 0, 1]])), output_shape=(size, size), order=1, mode="edge", preserve_range=True)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


# --- detection ------------------------------------------------------------------------------

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


# --- the chain ------------------------------------------------------------------------------


def model_predictor(model_fn: Callable[[np.ndarray], np.ndarray]) -> CropPredictor:
    """A CropPredictor from a ModelFn (which sees only the crops)."""
    return lambda crops, matrices: np.asarray(model_fn(crops), dtype=np.float64)


def locate_with(
    photo: np.ndarray,
    predict: CropPredictor,
    boxes: Sequence[Box] | None = None,
    passes: int = 2,
    detector: str = DEFAULT_DETECTOR,
    framed: bool = False,
    max_side: int = DETECT_MAX_SIDE,
) -> list[FaceResult]:
    """The chain on one photo with any CropPredictor (see :func:`locate_batch`)."""
    return locate_batch([photo], predict, None if boxes is None else [boxes], passes, detector, framed, max_side)[0]


def locate_batch(
    photos: Sequence[np.ndarray],
    predict: CropPredictor,
    boxes: Sequence[Sequence[Box]] | None = None,
    passes: int = 2,
    detector: str = DEFAULT_DETECTOR,
    framed: bool = False,
    max_side: int = DETECT_MAX_SIDE,
) -> list[list[FaceResult]]:
    """The chain on several photos: detect (unless ``boxes``), crop, predict, re-crop from the eyes, predict again.

    The faces of all photos go to ``predict`` together, one call per pass (a model is faster on
    one batch than on many single faces). The first crop puts a box's average eye position
    (for ``detector``'s boxes) at the training framing, or, with ``framed``, maps the box exactly
    onto the 96x96 crop (input already framed like the training faces). Each further pass
    re-crops from the previous pass's eyes. ``boxes`` (one list per photo) skip detection;
    detected faces that converge onto one face are reported once. Returns each photo's faces (an empty list: none found).
    """
    grays = [to_gray(p) for p in photos]
    detected = boxes is None
    if not detected and len(boxes) != len(photos):
        raise ValueError(f"boxes: {len(boxes)} lists for {len(photos)} photos")
    found = [detect_faces(g, detector, max_side) for g in grays] if detected else [list(b) for b in boxes]
    owner = np.array([i for i, bs in enumerate(found) for _ in bs], dtype=np.int64)
    flat = [b for bs in found for b in bs]
    if not flat:
        return [[] for _ in photos]
    matrices = np.stack([frame_matrix(b) if framed else box_matrix(b, detector) for b in flat])
    history: list[np.ndarray] = []
    for p in range(passes):
        crops = np.stack([crop_face(grays[i], m) for i, m in zip(owner, matrices)])
        out = np.asarray(predict(crops, matrices), dtype=np.float64).reshape(len(flat), len(EXTENDED_NAMES), 2)
        history.append(np.stack([apply(invert(m), o) for m, o in zip(matrices, out)]))
        if p < passes - 1:
            matrices = np.stack([_refined(m, o) for m, o in zip(matrices, out)])
    # after the last pass, matrices and crops are those the final points came from
    results = [
        FaceResult(box=b, points=history[-1][k], matrix=matrices[k], crop=crops[k], passes=[h[k] for h in history])
        for k, b in enumerate(flat)
    ]
    per_photo = [[r for r, i in zip(results, owner) if i == photo] for photo in range(len(photos))]
    return [distinct_faces(rs) for rs in per_photo] if detected else per_photo


def _refined(matrix: np.ndarray, crop_points: np.ndarray) -> np.ndarray:
    """The next pass's matrix from this pass's eyes (in crop pixels); the same matrix when they are implausible."""
    left, right = crop_points[_LEFT_EYE], crop_points[_RIGHT_EYE]
    distance = np.hypot(*(left - right))
    low, high = REFINE_EYE_DISTANCE
    if not (np.isfinite(distance) and low <= distance <= high):
        return matrix
    left_photo, right_photo = apply(invert(matrix), np.stack([left, right]))
    return eyes_matrix(left_photo, right_photo)


def distinct_faces(results: list[FaceResult]) -> list[FaceResult]:
    """Drop a face whose eye midpoint lies within half an eye distance of a face kept before it (two boxes, one face)."""
    kept: list[FaceResult] = []
    for r in results:
        mid = (r.points[_LEFT_EYE] + r.points[_RIGHT_EYE]) / 2
        if all(np.hypot(*(mid - (k.points[_LEFT_EYE] + k.points[_RIGHT_EYE]) / 2)) >= 0.5 * _eye_distance(k) for k in kept):
            kept.append(r)
    return kept


def _eye_distance(r: FaceResult) -> float:
    return float(np.hypot(*(r.points[_LEFT_EYE] - r.points[_RIGHT_EYE])))
