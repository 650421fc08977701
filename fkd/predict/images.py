"""Photos as arrays: decoding image files, and the gray and RGB forms the chain and the overlays use."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def read_photo(path: Path) -> np.ndarray:
    """An image file as a uint8 gray, RGB or RGBA array (EXIF rotation applied).

    Raises ValueError naming the file if it cannot be read, or if it declares more pixels than
    PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 million; a decompression bomb or a huge scan).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns up to twice the limit
            return _decode(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{path}: the image is too big to read ({exc}); "
                         f"shrink it below {Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except MemoryError:
        raise ValueError(f"{path}: not enough memory to read the image; shrink it") from None
    except Exception as exc:  # a damaged file can make a decoder raise nearly anything
        raise ValueError(f"{path}: cannot read the image ({exc or type(exc).__name__})") from None


def _decode(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img.load()
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float gray: scale to 0-255
            values = np.asarray(img, dtype=np.float64)
            top = values.max() if values.max() > 255 else 255.0
            return np.clip(np.round(values * 255.0 / max(top, 1e-9)), 0, 255).astype(np.uint8)
        has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
        mode = "RGBA" if has_alpha else ("L" if img.mode in ("1", "L") else "RGB")
        return np.asarray(img.convert(mode))


def to_rgb(photo: np.ndarray) -> np.ndarray:
    """uint8 RGB of a gray, RGB or RGBA photo (transparency over white, like the keypoint input)."""
    if photo.ndim == 2:
        return np.repeat(photo[..., None], 3, axis=2)
    if photo.shape[2] == 4:
        alpha = photo[..., 3:].astype(np.float64) / 255.0
        return np.round(photo[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return photo[..., :3]


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
