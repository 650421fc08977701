"""The overlay PNG of a photo: each face's box and keypoints drawn with PIL, marked as this command's own."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from fkd.core.io import atomic_path
from fkd.core.keypoints import KEYPOINT_NAMES
from fkd.predict.chain import FaceResult
from fkd.predict.geometry import box_corners
from fkd.predict.images import to_rgb

#: Overlay colours (RGB): face box, subject's left, subject's right, centre line.
BOX_COLOUR, LEFT_COLOUR, RIGHT_COLOUR, CENTRE_COLOUR = (255, 221, 0), (255, 136, 0), (0, 160, 255), (0, 200, 90)
#: Overlays are drawn at least this big (small faces are enlarged) and at most this big.
OVERLAY_MIN_SIDE, OVERLAY_MAX_SIDE = 480, 2048
#: The PNG text chunk that marks an overlay as this command's (PNG's standard "Software" keyword).
OVERLAY_MARK = ("Software", "fkd.predict")


def is_own_overlay(path: Path) -> bool:
    """Whether ``path`` is an overlay PNG this command wrote (it carries :data:`OVERLAY_MARK`)."""
    from PIL import Image

    if path.suffix.lower() != ".png" or not path.is_file():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read here
            with Image.open(path) as img:
                return img.format == "PNG" and img.info.get(OVERLAY_MARK[0]) == OVERLAY_MARK[1]
    except Exception:  # noqa: BLE001  unreadable: not ours (fkd.predict.images.read_photo reports why)
        return False


def overlay_paths(paths: list[Path], out_dir: Path) -> list[Path]:
    """Each photo's overlay in ``out_dir``: ``<stem>_keypoints.png``, numbered where stems repeat."""
    used: set[str] = set()
    return [out_dir / _unique_name(path.stem, used) for path in paths]


def _unique_name(stem: str, used: set[str]) -> str:
    name, n = f"{stem}_keypoints.png", 2
    while name in used:
        name, n = f"{stem}_{n}_keypoints.png", n + 1
    used.add(name)
    return name


def point_colour(name: str) -> tuple[int, int, int]:
    """Subject's left, right or centre colour of a keypoint name."""
    if "left" in name:
        return LEFT_COLOUR
    if "right" in name:
        return RIGHT_COLOUR
    return CENTRE_COLOUR


def draw_overlay(photo: np.ndarray, results: list[FaceResult]) -> np.ndarray:
    """RGB uint8 overlay: each face's box and its 15 keypoints (scaled to OVERLAY_MIN/MAX_SIDE), drawn with PIL."""
    from PIL import Image, ImageDraw

    rgb = to_rgb(photo)
    h, w = rgb.shape[:2]
    zoom = 1.0
    if max(h, w) < OVERLAY_MIN_SIDE:
        zoom = float(int(np.ceil(OVERLAY_MIN_SIDE / max(h, w))))
    elif max(h, w) > OVERLAY_MAX_SIDE:
        zoom = OVERLAY_MAX_SIDE / max(h, w)
    if zoom != 1.0:
        size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
        resample = Image.NEAREST if zoom > 1 else Image.LANCZOS
        rgb = np.asarray(Image.fromarray(rgb).resize(size, resample))
    out = Image.fromarray(rgb)
    pen = ImageDraw.Draw(out)
    # pixel centres stay at (i + 0.5) * zoom - 0.5 after resizing
    to_overlay = lambda p: (np.asarray(p) + 0.5) * zoom - 0.5  # noqa: E731
    for r in results:
        corners = to_overlay(box_corners(r.box))
        eye_distance = np.hypot(*(r.points[0] - r.points[1])) * zoom
        width = max(2.0, min(out.size) / 250)
        for a, b in zip(corners, np.roll(corners, -1, axis=0)):
            _line(pen, a, b, width, BOX_COLOUR)
        radius = float(np.clip(eye_distance / 22, 2.0, 12.0)) if np.isfinite(eye_distance) else 3.0
        for name, point in zip(KEYPOINT_NAMES, to_overlay(r.points[: len(KEYPOINT_NAMES)])):
            if np.isfinite(point).all():
                _dot(pen, point, radius + max(1.0, radius / 3), (0, 0, 0))
                _dot(pen, point, radius, point_colour(name))
    return np.asarray(out)


def save_overlay(path: Path, photo: np.ndarray, results: list[FaceResult]) -> None:
    """Write :func:`draw_overlay` of ``photo`` to ``path`` as a PNG carrying :data:`OVERLAY_MARK`, atomically."""
    from PIL import Image, PngImagePlugin

    mark = PngImagePlugin.PngInfo()
    mark.add_text(*OVERLAY_MARK)
    with atomic_path(path) as tmp:
        Image.fromarray(draw_overlay(photo, results)).save(tmp, format="PNG", pnginfo=mark)


def _dot(pen, centre: np.ndarray, radius: float, colour) -> None:
    x, y = centre
    pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def _line(pen, a: np.ndarray, b: np.ndarray, width: float, colour) -> None:
    """A filled quad ``width`` wide from ``a`` to ``b`` (PIL's own lines take whole-pixel widths)."""
    d = b - a
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9) * width / 2
    pen.polygon([tuple(map(float, q)) for q in (a + n, b + n, b - n, a - n)], fill=colour)
