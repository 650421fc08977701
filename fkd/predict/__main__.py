"""Keypoints on any photo: ``python -m fkd.predict PHOTO_OR_FOLDER... [--model resnet|heatmap|cnn|ensemble] [--out DIR]``.

Finds the faces (see fkd.predict.chain), predicts the 15 keypoints with the trained models and writes,
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

from fkd.core.cli import StageError, run_stage
from fkd.models.registry import MODEL_NAMES
from fkd.predict.chain import CropPredictor, FaceResult, locate_each, model_predictor
from fkd.predict.detect import DEFAULT_DETECTOR, DETECT_MAX_SIDE, DETECTORS, check_detector
from fkd.predict.geometry import CROP_SIZE, Box
from fkd.predict.images import read_photo
from fkd.predict.overlay import is_own_overlay, overlay_paths, save_overlay
from fkd.predict.table import CSV_NAME, csv_rows, is_own_csv, write_csv

log = logging.getLogger("fkd.predict")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
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
    ap.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR,
                    help=f"face detector: haar (OpenCV) or lbp (scikit-image) (default: {DEFAULT_DETECTOR})")
    ap.add_argument("--batch", type=int, default=16, help="photos whose faces go through the model together (default 16)")
    ap.add_argument("--detect-side", type=int, default=DETECT_MAX_SIDE,
                    help=f"longest side the photo is shrunk to for detection (default {DETECT_MAX_SIDE}); "
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


def _box(text: str) -> Box:
    try:
        return Box.parse(text)
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


def check_overwrites(targets: list[Path]) -> None:
    """StageError naming the first of ``targets`` that exists and that this command did not write."""
    for target in targets:
        if not (target.exists() or target.is_symlink()):
            continue
        if not (is_own_csv(target) if target.name == CSV_NAME else is_own_overlay(target)):
            raise StageError(f"{target}: fkd.predict did not write this file and does not overwrite it: "
                             "pass another --out (or move the file away)")


def load_model(args: argparse.Namespace):
    """The ModelFn that args/params pick, loaded once."""
    from fkd.core.config import load_params
    from fkd.evaluation.evaluate import tta_label
    from fkd.evaluation.inference import load_predictor, transforms_of

    params = load_params("split", "ensemble", "tta", "submit", path=args.params)
    kind = args.model or params.submit.model
    transforms = transforms_of(params.tta)
    model_fn = load_predictor(kind, args.models, params.ensemble, params.submit.tta_flip, params.split.folds, transforms)
    log.info("model: %s from %s (%s)", kind, args.models, tta_label(transforms) if params.submit.tta_flip else "no TTA")
    return model_fn


def check_out_dir(out_dir: Path) -> None:
    """StageError unless ``out_dir`` is a folder or can be made one (nothing above it is a file)."""
    for folder in (out_dir, *out_dir.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                raise StageError(f"--out {out_dir}: {folder} is a file, not a folder; "
                                 f"name a folder for the overlays and {CSV_NAME} (it is made if missing)")
            return


def check_boxes(path: Path, photo: np.ndarray, boxes: list[Box]) -> None:
    """ValueError naming the photo and the box unless each box's centre lies on the photo."""
    h, w = photo.shape[:2]
    for box in boxes:
        if not box.centre_inside(w, h):
            raise ValueError(f"{path}: --box {box.x:g},{box.y:g},{box.w:g},{box.h:g} is off the {w}x{h} photo "
                             "(its centre is outside); give x,y,w,h of a face in this photo's pixels")


def locate(photos: list[np.ndarray], predict: CropPredictor, args: argparse.Namespace) -> list[list[FaceResult] | Exception]:
    """:func:`fkd.predict.chain.locate_each` with the boxes and passes that ``args`` ask for."""
    if args.no_detect:
        boxes = [[Box(0, 0, p.shape[1], p.shape[0])] for p in photos]
        return locate_each(photos, predict, boxes, passes=1, framed=True)
    boxes = None if args.box is None else [args.box] * len(photos)
    return locate_each(photos, predict, boxes, passes=1 if args.no_refine else 2, detector=args.detector, max_side=args.detect_side)


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
            check_detector(args.detector)
        except RuntimeError as exc:
            raise StageError(str(exc)) from None
    predict = model_predictor(load_model(args))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageError(f"--out {out_dir}: cannot make the folder ({exc.strerror or exc})") from None

    from tqdm import tqdm

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
                if args.no_detect and photo.shape[:2] != (CROP_SIZE, CROP_SIZE):
                    log.warning("%s: %dx%d, not 96x96: scaled to 96x96 as it is", path, photo.shape[1], photo.shape[0])
                batch.append((path, photo))
                targets.append(target)
            for (path, photo), target, results in zip(batch, targets, locate([photo for _, photo in batch], predict, args)):
                if isinstance(results, Exception):
                    fail(f"{path}: finding the keypoints failed ({type(results).__name__}: {results})")
                    continue
                try:
                    save_overlay(target, photo, results)
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
