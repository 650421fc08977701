"""How well the photo chain (detect, crop, predict, refine) recovers keypoints of real faces.

Validation faces are placed into larger canvases (random position, scale x2-4, rotation
+-20 degrees, other backgrounds; seeded), the detector runs on each canvas and the chain
predicts from the detected box. Reported: detection rate, false boxes per canvas, detector
time, and NME (mean point-to-point error over each face's labelled points / true eye
distance) after the first pass (box crop), the second (eye-framed crop) and a third, plus the
model's NME on the original 96x96 faces for reference.

    python benchmarks/predict_refine.py data/split --model resnet --models models
    python benchmarks/predict_refine.py data/split --oracle          # sanity check: NME ~0
    python benchmarks/predict_refine.py data/split --part train --calibrate   # box -> eye constants
    python benchmarks/predict_refine.py data/split --model ensemble --json figures.json   # the figures as a file too
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import save_benchmark  # noqa: E402
from fkd.core.cli import run_stage  # noqa: E402
from fkd.core.config import MODEL_NAMES  # noqa: E402
from fkd.core.data import load_fold  # noqa: E402
from fkd.core.keypoints import N_EXTENDED, index, to_extended  # noqa: E402
from fkd.predict import chain, detect, geometry, images  # noqa: E402

LEFT, RIGHT = index("left_eye_center"), index("right_eye_center")
#: skimage.data images without human faces, used as canvas backgrounds (the coins bear small heads:
#: a fair source of false boxes).
BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "rocket", "coins", "moon", "page", "text", "clock", "cell", "hubble_deep_field")


def backgrounds() -> list[np.ndarray]:
    from skimage import data

    return [images.to_gray(getattr(data, name)()) for name in BACKGROUNDS]


def make_canvas(face: np.ndarray, points: np.ndarray, bgs: list[np.ndarray], rng: np.random.Generator, size=(512, 640)):
    """Face uint8 (96,96) with points (K,2) -> canvas uint8 (H,W) and the points moved into it."""
    from skimage.transform import AffineTransform, resize, warp

    h, w = size
    bg = bgs[rng.integers(len(bgs))]
    zoom = rng.uniform(1.0, 2.0)
    ch, cw = min(bg.shape[0], int(h / zoom)), min(bg.shape[1], int(w / zoom))
    y0, x0 = rng.integers(0, bg.shape[0] - ch + 1), rng.integers(0, bg.shape[1] - cw + 1)
    canvas = resize(bg[y0 : y0 + ch, x0 : x0 + cw], size, anti_aliasing=True)
    canvas = np.clip((canvas - 0.5) * rng.uniform(0.5, 1.2) + 0.5 + rng.uniform(-0.2, 0.2), 0, 1)
    if rng.random() < 0.5:
        canvas = canvas[:, ::-1]

    scale, angle = rng.uniform(2.0, 4.0), np.deg2rad(rng.uniform(-20.0, 20.0))
    half = scale * 96 / 2 * (abs(np.cos(angle)) + abs(np.sin(angle)))
    centre = (rng.uniform(half, w - half), rng.uniform(half, h - half))
    to_canvas = geometry.similarity((47.5, 47.5), centre, scale, angle)
    back = AffineTransform(matrix=np.vstack([geometry.invert(to_canvas), [0, 0, 1]]))
    pasted = warp(face / 255.0, back, output_shape=size, order=1, mode="constant", cval=0.0)
    alpha = warp(np.ones((96, 96)), back, output_shape=size, order=1, mode="constant", cval=0.0)
    canvas = alpha * pasted + (1 - alpha) * canvas
    return np.round(canvas * 255).astype(np.uint8), geometry.apply(to_canvas, points)


def matching_box(boxes: list[geometry.Box], truth: np.ndarray) -> geometry.Box | None:
    """The largest box holding both true eye centres and 1-5 eye distances wide (None: face missed)."""
    eye_distance = np.hypot(*(truth[LEFT] - truth[RIGHT]))
    for box in boxes:
        inside = all(box.x - 0.5 <= x <= box.x + box.w - 0.5 and box.y - 0.5 <= y <= box.y + box.h - 0.5 for x, y in truth[[LEFT, RIGHT]])
        if inside and eye_distance <= box.w <= 5 * eye_distance:
            return box
    return None


def nme(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean point-to-point error over the labelled points / true eye distance."""
    ok = np.isfinite(truth).all(axis=1)
    return float(np.mean(np.hypot(*(pred[ok] - truth[ok]).T)) / np.hypot(*(truth[LEFT] - truth[RIGHT])))


def scheme_points(ext_points: np.ndarray, truth_ext: np.ndarray) -> np.ndarray:
    """Predicted (17,2) in the row's own scheme, laid out like truth_ext (NaN where the row has no label)."""
    return np.where(np.isfinite(truth_ext), ext_points, np.nan)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("split_dir", help="the split stage's output (data/split)")
    ap.add_argument("--part", default="val", choices=["train", "val"])
    ap.add_argument("--n", type=int, default=300, help="faces to place (first N of a seeded shuffle)")
    ap.add_argument("--seed", type=int, default=0)
    who = ap.add_mutually_exclusive_group()
    who.add_argument("--model", choices=[*MODEL_NAMES, "ensemble"], help="default: params.yaml submit.model")
    who.add_argument("--oracle", action="store_true", help="predict the true keypoints of each crop (checks the geometry)")
    ap.add_argument("--models", default="models")
    ap.add_argument("--no-tta", action="store_true", help="no test-time augmentation (default: params submit.tta_flip, with the tta section's views)")
    ap.add_argument("--detector", choices=detect.DETECTORS, default=detect.DEFAULT_DETECTOR)
    ap.add_argument("--box-jitter", type=float, default=0.0,
                    help="move each detected box by up to this fraction of its width and scale it by up to 1 +- this (a loose hand-drawn box)")
    ap.add_argument("--calibrate", action="store_true", help="print where the eyes sit in the detector's boxes")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)

    train, val = load_fold(args.split_dir)
    part = val if args.part == "val" else train
    rng = np.random.default_rng(args.seed)
    jitter_rng = np.random.default_rng(args.seed + 1)  # its own stream: the canvases stay those of a run without jitter
    order = rng.permutation(len(part.images))[: args.n]
    bgs = backgrounds()
    truth_ext = to_extended(part.keypoints[order]).reshape(len(order), N_EXTENDED, 2)

    model_fn, figures = None, []
    if not args.oracle and not args.calibrate:
        from fkd.core.config import load_params
        from fkd.evaluation.inference import load_predictor, transforms_of

        params = load_params("ensemble", "tta", "submit", "split")
        kind = args.model or params.submit.model
        model_fn = load_predictor(kind, args.models, params.ensemble, params.submit.tta_flip and not args.no_tta, params.split.folds,
                                  transforms_of(params.tta))
        framed = model_fn(part.images[order]).reshape(len(order), N_EXTENDED, 2)
        in_frame = np.mean([nme(scheme_points(p, t), t) for p, t in zip(framed, truth_ext)])
        print(f"model {kind}: NME on the original 96x96 faces {in_frame:.4f}")
        figures.append({"figure": f"NME of {kind} on the original 96x96 faces", "value": round(float(in_frame), 4)})

    detected, false_boxes, det_time, errors, calib, framing = 0, 0, 0.0, [], [], []
    for face_i, truth in zip(order, truth_ext):
        canvas, moved = make_canvas(part.images[face_i], truth, bgs, rng)
        t0 = time.perf_counter()
        boxes = detect.detect_faces(images.to_gray(canvas), args.detector)
        det_time += time.perf_counter() - t0
        box = matching_box(boxes, moved)
        false_boxes += len(boxes) - (box is not None)
        if box is None:
            continue
        detected += 1
        mid, dist = (moved[LEFT] + moved[RIGHT]) / 2, np.hypot(*(moved[LEFT] - moved[RIGHT]))
        t = np.deg2rad(box.angle)
        off = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ (mid - box.centre)  # in the box's upright frame
        calib.append([off[0] / box.w, off[1] / box.h, dist / box.w])
        if args.calibrate:
            continue
        if args.box_jitter:
            j = args.box_jitter
            side = box.w * jitter_rng.uniform(1 - j, 1 + j)
            cx, cy = box.centre + jitter_rng.uniform(-j, j, size=2) * box.w
            box = geometry.Box(cx - side / 2 + 0.5, cy - side / 2 + 0.5, side, side, box.angle)
        eyes = geometry.apply(detect.box_matrix(box, args.detector), moved[[LEFT, RIGHT]])
        framing.append(np.hypot(*(eyes - [[66.0, 38.0], [30.0, 38.0]]).T).mean())
        if args.oracle:
            predict = lambda crops, matrices, moved=moved: np.stack([geometry.apply(m, moved) for m in matrices])  # noqa: E731
        else:
            predict = chain.model_predictor(model_fn)
        result = chain.locate_with(canvas, predict, boxes=[box], passes=3, detector=args.detector)[0]
        errors.append([nme(scheme_points(p, moved), moved) for p in result.passes])

    n = len(order)
    print(f"{args.part} faces: {n}, detector {args.detector}, canvases 640x512, face scale x2-4, rotation +-20 deg, seed {args.seed}")
    print(f"detection rate {detected / n:.3f} ({detected}/{n}); false boxes per canvas {false_boxes / n:.3f}; "
          f"detector {1000 * det_time / n:.0f} ms per canvas")
    figures += [{"figure": f"detection rate ({args.detector}, {n} faces)", "value": round(detected / n, 4)},
                {"figure": "false boxes per canvas", "value": round(false_boxes / n, 3)},
                {"figure": "detector ms per 640x512 canvas", "value": round(1000 * det_time / n)}]
    calib = np.array(calib)
    if len(calib):
        med = np.median(calib, axis=0)
        spread = np.percentile(calib, 75, axis=0) - np.percentile(calib, 25, axis=0)
        print(f"{args.detector} box calibration (median over {len(calib)}): eye dx {med[0]:+.3f} w, eye dy {med[1]:+.3f} h, "
              f"eye distance {med[2]:.3f} w; interquartile ranges {spread.round(3).tolist()} (in use: {detect.BOX_EYES[args.detector]})")
    if framing:
        print(f"first crop: true eye centres {np.mean(framing):.2f} px (mean, in 96x96 crop pixels) from the training framing"
              + (f" (boxes jittered by {args.box_jitter})" if args.box_jitter else ""))
    if errors:
        e = np.array(errors)
        for p, name in enumerate(["pass 1 (box crop)", "pass 2 (eye-framed, the default)", "pass 3"]):
            print(f"NME {name}: mean {e[:, p].mean():.4f}, median {np.median(e[:, p]):.4f}")
            figures += [{"figure": f"NME {name}, mean", "value": round(float(e[:, p].mean()), 4)},
                        {"figure": f"NME {name}, median", "value": round(float(np.median(e[:, p])), 4)}]
    save_benchmark(args.json, "predict_refine", figures)


if __name__ == "__main__":
    run_stage(main)
