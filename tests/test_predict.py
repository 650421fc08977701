"""Keypoints on photos: crop geometry, the two-pass chain (with an oracle model), detection, the command."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data
from skimage.transform import AffineTransform, warp

from fkd.core.keypoints import COLUMNS, N_EXTENDED, index, to_extended
from fkd.predict import chain, detect, geometry, images
from fkd.predict.table import CSV_COLUMNS, CSV_NAME
from fkd.sources.synthetic import draw_face

ROOT = Path(__file__).resolve().parents[1]
HAS_OPENCV = importlib.util.find_spec("cv2") is not None
#: The command's detector in these tests: the default needs OpenCV, scikit-image's always runs.
CLI_DETECTOR = detect.DEFAULT_DETECTOR if HAS_OPENCV or detect.DEFAULT_DETECTOR != "haar" else "lbp"
LEFT, RIGHT = index("left_eye_center"), index("right_eye_center")
ASTRONAUT_FACE = (224.0, 115.0)  # between her eyes and nose, skimage.data.astronaut() pixels


def place_face(face: np.ndarray, points: np.ndarray, canvas_shape, centre, scale, angle_deg, rng):
    """Draw a 96x96 face into a noisy canvas by a similarity; returns the canvas and the points moved along."""
    to_canvas = geometry.similarity((47.5, 47.5), centre, scale, np.deg2rad(angle_deg))
    back = AffineTransform(matrix=np.vstack([geometry.invert(to_canvas), [0, 0, 1]]))
    background = rng.uniform(0.2, 0.8) + rng.normal(0, 0.05, canvas_shape)
    pasted = warp(face / 255.0, back, output_shape=canvas_shape, order=1, mode="constant", cval=np.nan)
    canvas = np.where(np.isnan(pasted), background, pasted)
    return np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8), geometry.apply(to_canvas, points)


def oracle(canvas_points: np.ndarray):
    """A CropPredictor that knows the canvas keypoints: it returns them seen through each crop's matrix."""
    calls = []

    def predict(crops: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        assert crops.shape == (len(matrices), 96, 96) and crops.dtype == np.uint8
        calls.append(matrices.copy())
        return np.stack([geometry.apply(m, canvas_points).reshape(-1) for m in matrices])

    predict.calls = calls
    return predict


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize("scale,angle", [(0.5, 0.0), (0.3, 25.0), (1.5, -40.0)])
def test_crop_samples_the_photo_where_the_matrix_says(scale, angle):
    # a smooth blob at a known photo point must appear in the crop at matrix @ point
    point = np.array([131.3, 87.6])
    ys, xs = np.mgrid[0:200, 0:260]
    sigma = 3.0 / scale  # about 3 crop pixels wide
    photo = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * sigma**2))
    matrix = geometry.similarity(point + [7.0, -5.0], (45.0, 50.0), scale, np.deg2rad(angle))
    crop = geometry.crop_face(photo, matrix).astype(np.float64)
    weights = np.clip(crop - 20, 0, None)
    cy, cx = np.mgrid[0:96, 0:96]
    centroid = np.array([(weights * cx).sum(), (weights * cy).sum()]) / weights.sum()
    np.testing.assert_allclose(centroid, geometry.apply(matrix, point), atol=0.15)


def test_inverse_and_frame_matrices():
    m = geometry.similarity((10.0, 20.0), (48.0, 38.0), 0.4, 0.3)
    pts = np.array([[1.0, 2.0], [300.0, -4.0]])
    np.testing.assert_allclose(geometry.apply(geometry.invert(m), geometry.apply(m, pts)), pts, atol=1e-9)
    np.testing.assert_allclose(geometry.frame_matrix(geometry.Box(0, 0, 96, 96)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    # a 192x192 face: pixel edges -0.5 and 191.5 go to the crop's edges -0.5 and 95.5
    doubled = geometry.frame_matrix(geometry.Box(0, 0, 192, 192))
    np.testing.assert_allclose(geometry.apply(doubled, np.array([[-0.5, -0.5], [191.5, 191.5]])), [[-0.5, -0.5], [95.5, 95.5]])


def test_eyes_matrix_levels_the_eyes_at_the_training_framing():
    left, right = np.array([300.0, 180.0]), np.array([220.0, 240.0])  # tilted 37 degrees, 100 px apart
    m = geometry.eyes_matrix(left, right)
    np.testing.assert_allclose(geometry.apply(m, np.stack([left, right])), [[66.0, 38.0], [30.0, 38.0]], atol=1e-9)


# --- the chain with an oracle --------------------------------------------------------------


@pytest.mark.parametrize(
    "canvas_shape,centre,scale,angle,box_error",
    [
        ((240, 320), (150.0, 120.0), 1.6, 0.0, (0.0, 0.0, 1.0)),
        ((300, 260), (120.0, 160.0), 2.5, 18.0, (12.0, -9.0, 1.25)),  # a loose box: shifted and too big
        ((260, 300), (170.0, 125.0), 2.0, -27.0, (-10.0, 8.0, 0.8)),
    ],
)
def test_chain_returns_the_canvas_keypoints(canvas_shape, centre, scale, angle, box_error):
    rng = np.random.default_rng(int(scale * 10))
    face, keypoints = draw_face(rng)
    points = to_extended(keypoints[None])[0].reshape(N_EXTENDED, 2)  # scheme-B outputs stay NaN
    canvas, truth = place_face(face, points, canvas_shape, centre, scale, angle, rng)
    side = 96 * scale * 0.85 * box_error[2]
    box = geometry.Box(centre[0] - side / 2 + box_error[0], centre[1] - side / 2 + box_error[1], side, side)
    predict = oracle(truth)

    (result,) = chain.locate_with(canvas, predict, boxes=[box], passes=2)

    assert len(predict.calls) == 2
    np.testing.assert_allclose(result.points[:15], truth[:15], atol=0.5)
    np.testing.assert_allclose(result.keypoints, truth[:15].reshape(-1), atol=0.5)
    # the second crop is framed like the training faces: eyes level, 36 px apart, midpoint (48, 38)
    eyes = geometry.apply(result.matrix, truth[[LEFT, RIGHT]])
    np.testing.assert_allclose(eyes, [[66.0, 38.0], [30.0, 38.0]], atol=0.5)
    # and the crop shows the face there: the synthetic face's dark pupils sit on the eye centres
    for x, y in np.round(eyes).astype(int):
        assert result.crop[y - 1 : y + 2, x - 1 : x + 2].mean() < result.crop[20:80, 20:80].mean()


def test_one_pass_maps_back_through_the_box_crop():
    rng = np.random.default_rng(3)
    face, keypoints = draw_face(rng)
    canvas, truth = place_face(face, keypoints.reshape(15, 2), (200, 200), (100.0, 100.0), 1.5, 10.0, rng)
    predict = oracle(np.vstack([truth, np.full((2, 2), np.nan)]))
    (result,) = chain.locate_with(canvas, predict, boxes=[geometry.Box(40, 40, 120, 120)], passes=1)
    np.testing.assert_allclose(result.matrix, detect.box_matrix(geometry.Box(40, 40, 120, 120)))
    np.testing.assert_allclose(result.points[:15], truth, atol=1e-6)


def test_a_batch_of_photos_gives_what_each_photo_gives():
    # a predictor that reads the pixels: each crop gets its own answer, so mixing up crops would show
    def by_pixels(crops, matrices):
        base = np.tile(np.array([[66.0, 38.0], [30.0, 38.0]] + [[48.0, 60.0]] * (N_EXTENDED - 2)), (len(crops), 1, 1))
        return (base + crops.reshape(len(crops), -1).mean(axis=1)[:, None, None] / 40.0).reshape(len(crops), -1)

    rng = np.random.default_rng(11)
    photos = []
    for angle in (0.0, 12.0):
        face, keypoints = draw_face(rng)
        photos.append(place_face(face, keypoints.reshape(15, 2), (160, 200), (100.0, 80.0), 1.2, angle, rng)[0])
    boxes = [[geometry.Box(40, 20, 110, 110)], [geometry.Box(45, 25, 100, 100), geometry.Box(10, 10, 60, 60)]]
    batch = chain.locate_batch(photos, by_pixels, boxes)
    assert [len(r) for r in batch] == [1, 2]
    for photo, photo_boxes, results in zip(photos, boxes, batch):
        alone = chain.locate_with(photo, by_pixels, boxes=photo_boxes)
        for a, b in zip(alone, results):
            np.testing.assert_allclose(a.points, b.points)


def test_gray_and_rgba_photos():
    rgb = data.astronaut()
    gray = images.to_gray(rgb)
    assert gray.shape == rgb.shape[:2] and 0 <= gray.min() and gray.max() <= 1
    np.testing.assert_allclose(images.to_gray(np.round(gray * 255).astype(np.uint8)), gray, atol=1 / 255)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # transparent corner: white, like a page
    as_gray = images.to_gray(rgba)
    np.testing.assert_allclose(as_gray[10:], gray[10:])
    assert (as_gray[:10, :10] == 1.0).all()


# --- detection ------------------------------------------------------------------------------


def _finds_astronaut(boxes):
    return [b for b in boxes if abs(b.centre[0] - ASTRONAUT_FACE[0]) < 25 and abs(b.centre[1] - ASTRONAUT_FACE[1]) < 30 and 60 < b.w < 140]


def test_lbp_detector_finds_the_astronaut_and_nothing_in_a_blank_image():
    assert _finds_astronaut(detect.detect_faces(images.to_gray(data.astronaut()), "lbp"))
    assert detect.detect_faces(np.full((240, 320), 0.5), "lbp") == []


def test_a_tilted_face_is_found_on_the_turned_photo_and_cropped_upright():
    upright = images.to_gray(data.astronaut())
    tilted, to_tilted = detect._turned(upright, 22.0)  # her head leans 22 degrees
    face = geometry.apply(to_tilted, np.array(ASTRONAUT_FACE))
    (box,) = [b for b in detect.detect_faces(tilted, "lbp") if np.hypot(*(b.centre - face)) < 30]
    assert box.angle == -20.0  # turning the photo back by 20 degrees made her upright
    # its first crop matches the crop of the upright photo at the same place
    crop = geometry.crop_face(tilted, detect.box_matrix(box, "lbp")).astype(float)
    same_place = detect.box_matrix(box, "lbp") @ np.vstack([to_tilted, [0, 0, 1]])
    assert abs(np.degrees(np.arctan2(same_place[1, 0], same_place[0, 0])) - 2.0) < 1e-6  # upright but for 22 - 20 degrees
    reference = geometry.crop_face(upright, same_place).astype(float)
    assert np.corrcoef(crop.ravel(), reference.ravel())[0, 1] > 0.95
    level = geometry.apply(detect.box_matrix(box, "lbp"), geometry.box_corners(box))
    assert abs(level[0, 1] - level[1, 1]) < 1e-9  # the box's top edge is level in the crop


def test_haar_detector_finds_only_the_astronaut():
    pytest.importorskip("cv2", reason="the haar detector needs opencv-python-headless 4.x")
    boxes = detect.detect_faces(images.to_gray(data.astronaut()), "haar")
    assert len(boxes) == 1 and _finds_astronaut(boxes)
    assert detect.detect_faces(np.full((240, 320), 0.5), "haar") == []


def test_detected_duplicates_converge_to_one_face():
    # two boxes on one face (as from two search angles): after refinement they are one face
    rng = np.random.default_rng(5)
    face, keypoints = draw_face(rng)
    points = to_extended(keypoints[None])[0].reshape(N_EXTENDED, 2)
    canvas, truth = place_face(face, points, (240, 240), (120.0, 120.0), 1.5, 5.0, rng)
    boxes = [geometry.Box(60, 60, 120, 120), geometry.Box(70, 66, 100, 100, angle=20.0)]
    results = chain.locate_with(canvas, oracle(truth), boxes=boxes, passes=2)  # boxes given by hand are all kept
    assert len(results) == 2
    (kept,) = chain.distinct_faces(results)
    assert kept is results[0]
    other = chain.locate_with(canvas, oracle(truth + [80.0, 0.0]), boxes=boxes[:1], passes=2)
    assert len(chain.distinct_faces(results[:1] + other)) == 2  # a face beside it stays


# --- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """An untrained, tiny resnet/0.safetensors: real loading and prediction, arbitrary keypoints."""
    import torch

    from fkd.models.resnet.network import build as build_model
    from fkd.nn.torch_nn import save_checkpoint

    torch.manual_seed(0)
    config = {"arch": "resnet", "n_outputs": 34, "stem_channels": 4, "widths": [4, 8], "blocks_per_stage": 1, "normalize_targets": True}
    out = tmp_path_factory.mktemp("models")
    save_checkpoint(out / "resnet/0.safetensors", build_model(config).state_dict(), config)
    return out


def predict_cli(*args, models: Path) -> subprocess.CompletedProcess:
    """``python -m fkd.predict ARGS --model resnet --models MODELS`` in the project root."""
    cmd = [sys.executable, "-m", "fkd.predict", *map(str, args), "--model", "resnet", "--models", str(models)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def predict_here(capsys, monkeypatch, *args, models: Path) -> subprocess.CompletedProcess:
    """The same command run in this process (no interpreter and torch start-up per call)."""
    from fkd.core.cli import run_stage
    from fkd.predict.__main__ import main

    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    try:
        run_stage(main, [*map(str, args), "--model", "resnet", "--models", str(models)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_command_on_a_batch(tmp_path, tiny_models, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    rgb = data.astronaut()
    Image.fromarray(rgb).save(photos / "a_rgb.png")
    Image.fromarray(np.round(images.to_gray(rgb) * 255).astype(np.uint8)).save(photos / "b_gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(photos / "c_rgba.png")
    Image.fromarray(np.full((200, 300), 128, np.uint8)).save(photos / "d_blank.png")
    (photos / "e_broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "notes.txt").write_text("not an image: skipped")
    out = tmp_path / "out"

    proc = predict_here(capsys, monkeypatch, photos, tmp_path / "nowhere.png", "--out", out, "--detector", CLI_DETECTOR, models=tiny_models)

    assert proc.returncode == 1, proc.stderr
    assert "error: " in proc.stderr and "e_broken.jpg" in proc.stderr and "nowhere.png" in proc.stderr
    assert "d_blank.png: no face found" in proc.stderr
    table = pd.read_csv(out / CSV_NAME)
    assert tuple(table.columns) == CSV_COLUMNS and tuple(table.columns[6:]) == COLUMNS
    by_image = {Path(name).name: rows for name, rows in table.groupby("image")}
    assert sorted(by_image) == ["a_rgb.png", "b_gray.png", "c_rgba.png", "d_blank.png"]
    for name in ("a_rgb.png", "b_gray.png", "c_rgba.png"):
        rows = by_image[name]
        assert rows["face"].tolist() == list(range(len(rows)))
        boxes = [geometry.Box(r.box_x, r.box_y, r.box_w, r.box_h) for r in rows.itertuples()]
        assert _finds_astronaut(boxes), boxes
        assert np.isfinite(rows[list(COLUMNS)].to_numpy()).all()
    blank = by_image["d_blank.png"]
    assert len(blank) == 1 and blank[list(CSV_COLUMNS[1:])].isna().all(axis=None)
    for name in ("a_rgb", "b_gray", "c_rgba", "d_blank"):
        with Image.open(out / f"{name}_keypoints.png") as overlay:
            assert overlay.size == ((rgb.shape[1], rgb.shape[0]) if name != "d_blank" else (600, 400))  # small photos are enlarged
    assert not (out / "e_broken_keypoints.png").exists()


def test_command_with_boxes_and_without_detection(tmp_path, tiny_models, capsys, monkeypatch):
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    proc = predict_cli(tmp_path / "astronaut.png", "--box", "170,60,100,100", "--box", "300,300,80,90", "--out", tmp_path / "boxes", models=tiny_models)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "boxes" / CSV_NAME)
    assert table["face"].tolist() == [0, 1]
    assert table[["box_x", "box_y", "box_w", "box_h"]].to_numpy().tolist() == [[170, 60, 100, 100], [300, 300, 80, 90]]

    face, _ = draw_face(np.random.default_rng(0))
    Image.fromarray(face).save(tmp_path / "framed.png")
    proc = predict_here(capsys, monkeypatch, tmp_path / "framed.png", "--no-detect", "--out", tmp_path / "framed", models=tiny_models)
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(tmp_path / "framed" / CSV_NAME).iloc[0]
    assert (row.box_x, row.box_y, row.box_w, row.box_h) == (0, 0, 96, 96)
    assert np.isfinite(row[list(COLUMNS)].to_numpy(dtype=float)).all()
    with Image.open(tmp_path / "framed" / "framed_keypoints.png") as overlay:
        assert overlay.size == (480, 480)  # small inputs are enlarged for viewing


def test_command_reports_missing_models(tmp_path):
    proc = predict_cli(tmp_path, "--box", "0,0,10,10", "--out", tmp_path / "o", models=tmp_path / "empty")
    assert proc.returncode == 2 and "resnet/0.safetensors" in proc.stderr and "Traceback" not in proc.stderr


def declared_size_png(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose header declares ``width`` x ``height`` (what a decompression bomb looks like to PIL)."""
    import struct
    import zlib

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_bad_photos_are_named_and_the_others_processed(tmp_path, tiny_models, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "a_good.png")
    declared_size_png(photos / "b_bomb.png", 20_000, 20_000)  # over twice PIL's limit: PIL raises
    declared_size_png(photos / "c_huge.png", 10_000, 10_000)  # over the limit: PIL only warns
    Image.fromarray(np.full((100, 100), 128, np.uint8)).save(photos / "d_small.png")
    out = tmp_path / "out"

    proc = predict_here(capsys, monkeypatch, photos, "--box", "300,300,80,90", "--batch", "4", "--out", out, models=tiny_models)

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert any("b_bomb.png: the image is too big to read" in line for line in errors), errors
    assert any("c_huge.png: the image is too big to read" in line for line in errors), errors
    assert any("d_small.png: --box 300,300,80,90 is off the 100x100 photo" in line for line in errors), errors
    assert errors[-1] == "error: 3 of 4 inputs failed"
    table = pd.read_csv(out / CSV_NAME)
    assert [Path(name).name for name in table["image"]] == ["a_good.png"]
    assert np.isfinite(table[list(COLUMNS)].to_numpy()).all()
    assert sorted(p.name for p in out.iterdir()) == ["a_good_keypoints.png", CSV_NAME]


def test_out_naming_a_file_is_one_line_and_writes_nothing(tmp_path, tiny_models, capsys, monkeypatch):
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    (tmp_path / "results.txt").write_text("keep me")
    before = sorted(p.name for p in tmp_path.iterdir())
    for out in (tmp_path / "results.txt", tmp_path / "results.txt" / "below"):
        proc = predict_here(capsys, monkeypatch, tmp_path / "astronaut.png", "--out", out, models=tiny_models)
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(f"error: --out {out}: {tmp_path / 'results.txt'} is a file, not a folder")
    assert (tmp_path / "results.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_truncated_model_file_is_one_line_naming_it(tmp_path, tiny_models, capsys, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    whole = (tiny_models / "resnet/0.safetensors").read_bytes()
    (models / "resnet").mkdir()
    (models / "resnet/0.safetensors").write_bytes(whole[: len(whole) // 2])
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    proc = predict_here(capsys, monkeypatch, tmp_path / "astronaut.png", "--box", "170,60,100,100", "--out", tmp_path / "out",
                        models=models)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {models / 'resnet/0.safetensors'}: cannot load the resnet model (")
    assert "dvc repro" in line
    assert not (tmp_path / "out").exists()


def test_junk_keras_file_is_a_model_file_error(tmp_path):
    pytest.importorskip("keras")
    from fkd.core.errors import ModelFileError
    from fkd.evaluation.inference import load_model_fn

    (tmp_path / "cnn_sgd").mkdir()
    (tmp_path / "cnn_sgd/0.keras").write_bytes(b"not a keras model, just junk\n" * 10)
    with pytest.raises(ModelFileError, match=r"cnn_sgd/0\.keras: cannot load the cnn model \(") as err:
        load_model_fn("cnn", tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path / "cnn_sgd/0.keras") in str(err.value)
    assert err.value.__cause__ is not None  # the loader's own exception, for debugging


@pytest.mark.parametrize("box", ["nan,0,10,10", "0,0,inf,10", "0,0,10"])
def test_box_must_be_four_finite_numbers(box):
    with pytest.raises(ValueError, match="box"):
        geometry.Box.parse(box)
