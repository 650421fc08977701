"""The prediction chain on photos: detect, crop, predict, re-crop from the predicted eyes, predict again.

The detector's box gives a first crop framed like the training faces on average
(calibrated in :data:`fkd.predict.detect.BOX_EYES`); the model predicts on it; the predicted eye centres then give a second
crop, rotated so the eyes are level and scaled to the training framing (eye midpoint at
(48, 38), 36 px between the eye centres), and the model predicts again.

No model code lives here: the chain takes any :data:`CropPredictor` (:func:`model_predictor` makes one
from a :data:`fkd.evaluation.inference.ModelFn`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from fkd.core.keypoints import EXTENDED_NAMES, N_KEYPOINTS, index
from fkd.predict.detect import DEFAULT_DETECTOR, DETECT_MAX_SIDE, box_matrix, detect_faces
from fkd.predict.geometry import Box, apply, crop_face, eyes_matrix, frame_matrix, invert
from fkd.predict.images import to_gray

#: Refinement is skipped when the first pass puts the eyes closer or farther apart than this
#: (in crop pixels): the first crop was no face the model recognised.
REFINE_EYE_DISTANCE = (12.0, 80.0)

#: Predictor of keypoints in crops: (crops uint8 (N, 96, 96), matrices (N, 2, 3)) -> (N, 34) crop pixels.
CropPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]

_LEFT_EYE, _RIGHT_EYE = index("left_eye_center"), index("right_eye_center")


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


def locate_each(photos: Sequence[np.ndarray], predict: CropPredictor, boxes: Sequence[Sequence[Box]] | None = None,
                **options) -> list[list[FaceResult] | Exception]:
    """:func:`locate_batch` on all ``photos`` together; if that raises, on each photo alone, so that one bad
    photo fails alone: each photo's faces, or the exception that photo raised. ``options`` go to :func:`locate_batch`."""
    try:
        return locate_batch(photos, predict, boxes, **options)
    except Exception as exc:
        if len(photos) == 1:
            return [exc]
    found: list[list[FaceResult] | Exception] = []
    for i, photo in enumerate(photos):
        try:
            found.extend(locate_batch([photo], predict, None if boxes is None else [boxes[i]], **options))
        except Exception as exc:
            found.append(exc)
    return found


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
