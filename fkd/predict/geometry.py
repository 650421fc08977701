"""The crop geometry: face boxes, the 2x3 affine matrices that map photo pixels to crop pixels, and the crops.

Every crop is one 2x3 affine ``matrix`` that maps photo pixels to crop pixels (pixel centres
at integer coordinates in both, x to the right, y down). The crop image samples the photo
through the matrix's inverse, and keypoints predicted in the crop go back to the photo
through the same inverse, so the two can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

CROP_SIZE = 96
#: Eye midpoint and inter-ocular distance of the training framing (Kaggle and the proxy's
#: training split agree: midpoint (48.0, 38.0), mean distance 35.9 px).
FRAME_EYE_MID = (48.0, 38.0)
FRAME_EYE_DISTANCE = 36.0


@dataclass(frozen=True)
class Box:
    """A face box in photo pixels: columns x .. x+w-1, rows y .. y+h-1 (the detector's convention).

    ``angle`` (degrees, clockwise on screen) is the turn of the photo under which the detector saw
    the face upright (see :data:`fkd.predict.detect.DETECT_ANGLES`); the box is that square about the same centre, turned back
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

    @property
    def upright_to_photo(self) -> np.ndarray:
        """The 2x2 turn from the box's upright frame to the photo's axes (by -angle)."""
        t = np.deg2rad(self.angle)
        return np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])

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


def box_corners(box: Box) -> np.ndarray:
    """The box's four corners (4, 2) in photo pixels (a tilted square for a box found on a turned photo)."""
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [box.w / 2, box.h / 2]
    return box.centre + half @ box.upright_to_photo.T


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
