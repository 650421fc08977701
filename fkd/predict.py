"""Keypoints on any photo: ``python -m fkd.predict PHOTO_OR_FOLDER... [--model resnet|heatmap|cnn|ensemble] [--out DIR]``.

Finds the faces (see fkd.faces), predicts the 15 keypoints with the trained models and writes,
into ``--out``: one overlay PNG per photo (face box in yellow; the subject's left points in
orange, right points in blue, centre points in green) and ``keypoints.csv`` for the whole run:
``image,face,box_x,box_y,box_w,box_h`` and training.csv's 30 keypoint columns, in the photo's
pixel coordinates. A photo without a face gets one row with empty keypoints (and a warning).
A photo that cannot be used (unreadable, too big, a ``--box`` off it) is reported by name and
skipped; the others are processed, and the exit code is then 1. A model file that cannot be
loaded, or an ``--out`` that is not a folder, stops the run before anything is written (exit 2).

Files in ``--out`` that this command did not write (its overlays carry a PNG text chunk, its
``keypoints.csv`` its header) are never overwritten: the run stops before writing anything (exit 2).
Its own overlays are never read as photos, so ``--out`` may be the photos' folder.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

from fkd import faces
from fkd.core.cli import StageError, run_stage
from fkd.core.io import atomic_path
from fkd.core.keypoints import COLUMNS, KEYPOINT_NAMES
from fkd.models.registry import MODEL_NAMES

log = logging.getLogger("fkd.predict")

CSV_NAME = "keypoints.csv"
CSV_COLUMNS = ("image", "face", "box_x", "box_y", "box_w", "box_h", *COLUMNS)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
#: Overlay colours (RGB): face box, subject's left, subject's right, centre line.
BOX_COLOUR, LEFT_COLOUR, RIGHT_COLOUR, CENTRE_COLOUR = (255, 221, 0), (255, 136, 0), (0, 160, 255), (0, 200, 90)
#: Overlays are drawn at least this big (small faces are enlarged) and at most this big.
OVERLAY_MIN_SIDE, OVERLAY_MAX_SIDE = 480, 2048
#: The PNG text chunk that marks an overlay as this command's (PNG's standard "Software" keyword).
OVERLAY_MARK = ("Software", "fkd.predict")
#: A --box value that argparse would take for an option because it starts with "-": "-50,-50,100,100".
_NEGATIVE_BOX = re.compile(r"-\.?\d.*,.*")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m fkd.predict", description=__doc__.split("\n\n")[1].replace("\n", " "))
    ap.add_argument("inputs", nargs="+", metavar="PHOTO_OR_FOLDER", help="image files, or folders of them (not searched recursively)")
    ap.add_argument("--model", choices=[*MODEL_NAMES, "ensemble"], help="default: params.yaml submit.model")
    ap.add_argument("--models", default="models", help="folder with the trained models, resnet/0.safetensors ... (default: models; every fold of split.folds is averaged)")
    ap.add_argument("--params", default="params.yaml", help="params file (default model, ensemble weights, flip TTA)")
    ap.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    ap.add_argument("--box", action="append", type=_box, metavar="x,y,w,h",
                    help="a face box in photo pixels instead of detection; repeat for several faces (applies to every photo)")
    ap.add_argument("--no-detect", action="store_true", help="each photo is already a face framed like Kaggle's 96x96 images: predict on it as it is")
    ap.add_argument("--no-refine", action="store_true", help="one pass on the detector's crop, no re-crop from the predicted eyes")
    ap.add_argument("--detector", choices=faces.DETECTORS, default=faces.DEFAULT_DETECTOR,
                    help=f"face detector: haar (OpenCV) or lbp (scikit-image) (default: {faces.DEFAULT_DETECTOR})")
    ap.add_argument("--batch", type=int, default=16, help="photos whose faces go through the model together (default 16)")
    ap.add_argument("--detect-side", type=int, default=faces.DETECT_MAX_SIDE,
                    help=f"longest side the photo is shrunk to for detection (default {faces.DETECT_MAX_SIDE}); "
                         "raise it to find small faces in big photos (slower)")
    args = ap.parse_args(_attach_negative_boxes(argv))
    if args.box and args.no_detect:
        ap.error("--box and --no-detect exclude each other")
    if args.batch < 1:
        ap.error("--batch must be at least 1")
    if args.detect_side < 1:
        ap.error("--detect-side must be at least 1")
    return args


def _attach_negative_boxes(argv: list[str]) -> list[str]:
    """``--box -50,-50,100,100`` as ``--box=-50,-50,100,100``, which argparse reads as the option's value."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--":
            return out + argv[i:]
        if argv[i] == "--box" and i + 1 < len(argv) and _NEGATIVE_BOX.fullmatch(argv[i + 1]):
            out.append(f"--box={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _box(text: str) -> faces.Box:
    try:
        return faces.Box.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def photo_paths(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named or found in the named folders (sorted), and errors for inputs that do not exist.
    Overlays this command wrote (:func:`is_own_overlay`) are skipped."""
    paths, errors = [], []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            own = {p for p in found if is_own_overlay(p)}
            if own:
                log.info("%s: skipping the %d overlays fkd.predict wrote there", path, len(own))
            found = [p for p in found if p not in own]
            if not found:
                log.warning("%s: no image files in this folder", path)
            paths.extend(found)
        elif is_own_overlay(path):
            print(f"warning: {path}: an overlay fkd.predict wrote, not a photo: skipped", file=sys.stderr)
        elif path.exists():
            paths.append(path)
        else:
            errors.append(f"{path}: no such file or folder")
    return paths, errors


def is_own_overlay(path: Path) -> bool:
    """Whether ``path`` is an overlay PNG this command wrote (it carries :data:`OVERLAY_MARK`)."""
    import warnings

    from PIL import Image

    if path.suffix.lower() != ".png" or not path.is_file():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read here
            with Image.open(path) as img:
                return img.format == "PNG" and img.info.get(OVERLAY_MARK[0]) == OVERLAY_MARK[1]
    except Exception:  # noqa: BLE001  unreadable: not ours (read_photo reports why)
        return False


def is_own_csv(path: Path) -> bool:
    """Whether ``path`` is a keypoints.csv this command wrote (it starts with :data:`CSV_COLUMNS`'s header)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.readline(64 * 1024).rstrip("\r\n") == ",".join(CSV_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def overlay_paths(paths: list[Path], out_dir: Path) -> list[Path]:
    """Each photo's overlay in ``out_dir``: ``<stem>_keypoints.png``, numbered where stems repeat."""
    used: set[str] = set()
    return [out_dir / _unique_name(path.stem, used) for path in paths]


def check_overwrites(targets: list[Path]) -> None:
    """StageError naming the first of ``targets`` that exists and that this command did not write."""
    for target in targets:
        if not (target.exists() or target.is_symlink()):
            continue
        if not (is_own_csv(target) if target.name == CSV_NAME else is_own_overlay(target)):
            raise StageError(f"{target}: fkd.predict did not write this file and does not overwrite it: "
                             "pass another --out (or move the file away)")


def read_photo(path: Path) -> np.ndarray:
    """An image file as a uint8 gray, RGB or RGBA array (EXIF rotation applied).

    Raises ValueError naming the file if it cannot be read, or if it declares more pixels than
    PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 million; a decompression bomb or a huge scan).
    """
    import warnings

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


def point_colour(name: str) -> tuple[int, int, int]:
    """Subject's left, right or centre colour of a keypoint name."""
    if "left" in name:
        return LEFT_COLOUR
    if "right" in name:
        return RIGHT_COLOUR
    return CENTRE_COLOUR


def draw_overlay(photo: np.ndarray, results: list[faces.FaceResult]) -> np.ndarray:
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
        corners = to_overlay(faces.box_corners(r.box))
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


def _dot(pen, centre: np.ndarray, radius: float, colour) -> None:
    x, y = centre
    pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)


def _line(pen, a: np.ndarray, b: np.ndarray, width: float, colour) -> None:
    """A filled quad ``width`` wide from ``a`` to ``b`` (PIL's own lines take whole-pixel widths)."""
    d = b - a
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9) * width / 2
    pen.polygon([tuple(map(float, q)) for q in (a + n, b + n, b - n, a - n)], fill=colour)


def csv_rows(image: str, results: list[faces.FaceResult]) -> list[dict]:
    """CSV rows of one photo: one per face, or one with empty fields when no face was found."""
    if not results:
        return [{"image": image}]
    rows = []
    for i, r in enumerate(results):
        row = {"image": image, "face": i, "box_x": r.box.x, "box_y": r.box.y, "box_w": r.box.w, "box_h": r.box.h}
        row.update(zip(COLUMNS, r.keypoints))
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    frame["face"] = frame["face"].astype("Int64")
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.2f")


def _unique_name(stem: str, used: set[str]) -> str:
    name, n = f"{stem}_keypoints.png", 2
    while name in used:
        name, n = f"{stem}_{n}_keypoints.png", n + 1
    used.add(name)
    return name


def load_model(args: argparse.Namespace):
    """The ModelFn that args/params pick, loaded once."""
    from fkd.core.config import load_params
    from fkd.evaluation.inference import load_predictor

    params = load_params("split", "ensemble", "submit", path=args.params)
    kind = args.model or params.submit.model
    model_fn = load_predictor(kind, args.models, params.ensemble, params.submit.tta_flip, params.split.folds)
    log.info("model: %s from %s (flip TTA %s)", kind, args.models, "on" if params.submit.tta_flip else "off")
    return model_fn


def check_out_dir(out_dir: Path) -> None:
    """StageError unless ``out_dir`` is a folder or can be made one (nothing above it is a file)."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise StageError(f"--out {out_dir}: {folder} is a file, not a folder; "
                                 f"name a folder for the overlays and {CSV_NAME} (it is made if missing)")
            return


def check_boxes(path: Path, photo: np.ndarray, boxes: list[faces.Box]) -> None:
    """ValueError naming the photo and the box unless each box's centre lies on the photo."""
    h, w = photo.shape[:2]
    for box in boxes:
        if not box.centre_inside(w, h):
            raise ValueError(f"{path}: --box {box.x:g},{box.y:g},{box.w:g},{box.h:g} is off the {w}x{h} photo "
                             "(its centre is outside); give x,y,w,h of a face in this photo's pixels")


def locate(batch: list[tuple[Path, np.ndarray]], predict: faces.CropPredictor, args: argparse.Namespace) -> list:
    """Each photo's faces (a list of FaceResult), or the exception that photo raised.

    The photos go through the chain together; if that fails, one by one, so that one bad photo
    fails alone.
    """
    def run(photos: list[np.ndarray]) -> list[list[faces.FaceResult]]:
        if args.no_detect:
            boxes = [[faces.Box(0, 0, p.shape[1], p.shape[0])] for p in photos]
            return faces.locate_batch(photos, predict, boxes, passes=1, framed=True)
        boxes = None if args.box is None else [args.box] * len(photos)
        return faces.locate_batch(photos, predict, boxes, passes=1 if args.no_refine else 2,
                                  detector=args.detector, max_side=args.detect_side)

    try:
        return run([photo for _, photo in batch])
    except Exception as exc:
        if len(batch) == 1:
            return [exc]
    found = []
    for _, photo in batch:
        try:
            found.extend(run([photo]))
        except Exception as exc:
            found.append(exc)
    return found


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    out_dir = Path(args.out)
    check_out_dir(out_dir)
    paths, errors = photo_paths(args.inputs)
    overlays = overlay_paths(paths, out_dir)
    check_overwrites([*overlays, out_dir / CSV_NAME])
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if not args.no_detect and not args.box:
        try:
            faces.check_detector(args.detector)
        except RuntimeError as exc:
            raise StageError(str(exc)) from None
    predict = faces.model_predictor(load_model(args))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageError(f"--out {out_dir}: cannot make the folder ({exc.strerror or exc})") from None

    from PIL import Image, PngImagePlugin
    from tqdm import tqdm

    mark = PngImagePlugin.PngInfo()
    mark.add_text(*OVERLAY_MARK)

    def fail(message: str) -> None:
        nonlocal failed
        print(f"error: {message}", file=sys.stderr)
        failed += 1

    rows, failed, n_faces, start = [], len(errors), 0, time.perf_counter()
    with tqdm(total=len(paths), unit="photo", file=sys.stderr, disable=None) as progress:
        for first in range(0, len(paths), args.batch):
            batch, targets = [], []
            for path, target in zip(paths[first : first + args.batch], overlays[first : first + args.batch]):
                try:
                    photo = read_photo(path)
                    if args.box:
                        check_boxes(path, photo, args.box)
                except ValueError as exc:
                    fail(str(exc))
                    continue
                if args.no_detect and photo.shape[:2] != (faces.CROP_SIZE, faces.CROP_SIZE):
                    log.warning("%s: %dx%d, not 96x96: scaled to 96x96 as it is", path, photo.shape[1], photo.shape[0])
                batch.append((path, photo))
                targets.append(target)
            for (path, photo), target, results in zip(batch, targets, locate(batch, predict, args)):
                if isinstance(results, Exception):
                    fail(f"{path}: finding the keypoints failed ({type(results).__name__}: {results})")
                    continue
                try:
                    with atomic_path(target) as tmp:
                        Image.fromarray(draw_overlay(photo, results)).save(tmp, format="PNG", pnginfo=mark)
                except (OSError, ValueError) as exc:
                    fail(f"{path}: cannot write its overlay to {out_dir} ({exc})")
                    continue
                if not results:
                    print(f"warning: {path}: no face found", file=sys.stderr)
                n_faces += len(results)
                rows.extend(csv_rows(str(path), results))
            progress.update(len(paths[first : first + args.batch]))
    try:
        write_csv(out_dir / CSV_NAME, rows)
    except OSError as exc:
        raise StageError(f"{out_dir / CSV_NAME}: cannot write it ({exc})") from None
    read = len(paths) - (failed - len(errors))
    log.info("%d photos, %d faces in %.1f s -> %s", read, n_faces, time.perf_counter() - start, out_dir / CSV_NAME)
    if failed:
        print(f"error: {failed} of {len(paths) + len(errors)} inputs failed", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
