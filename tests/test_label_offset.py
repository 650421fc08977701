"""The label offset: estimated from the faces, moved out of the labels by split and back by submit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fkd.core.data import load_fold, parse_raw, write_split
from fkd.core.keypoints import COLUMNS, shift_x
from tests.conftest import ROOT
from fkd.core.label_offset import LabelOffsetError, estimate_offset, read_offset, resolve_offset


@pytest.fixture(scope="module")
def prepared(synthetic_raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    parse_raw(synthetic_raw, out)
    return out


@pytest.fixture(scope="module")
def faces(prepared):
    return np.load(prepared / "train_images.npy"), np.load(prepared / "train_keypoints.npy")


def test_drawn_faces_are_labelled_on_their_features(faces):
    offset, used = estimate_offset(*faces)
    assert abs(offset) <= 0.1
    assert used == len(faces[1])  # every row labels both eye centres


@pytest.mark.parametrize("moved", [1.5, -0.75, 2.3])
def test_labels_moved_off_the_features_are_found_again(faces, moved):
    images, keypoints = faces
    offset, _ = estimate_offset(images, shift_x(keypoints, moved))
    assert offset == pytest.approx(moved, abs=0.1)


def test_only_the_rows_with_both_eye_centres_count(faces):
    images, keypoints = faces
    keypoints = keypoints.copy()
    keypoints[::2, COLUMNS.index("right_eye_center_x")] = np.nan
    _, used = estimate_offset(images, keypoints)
    assert used == len(keypoints) // 2
    keypoints[:, COLUMNS.index("left_eye_center_y")] = np.nan
    with pytest.raises(LabelOffsetError, match="no row labels both eye centres"):
        estimate_offset(images, keypoints)


def test_split_moves_the_labels_by_the_estimate(prepared, faces, tmp_path):
    images, keypoints = faces
    kaggle_like = tmp_path / "prepared"
    kaggle_like.mkdir()
    for f in prepared.iterdir():
        (kaggle_like / f.name).write_bytes(f.read_bytes())
    np.save(kaggle_like / "train_keypoints.npy", shift_x(keypoints, 1.2))  # labels 1.2 px right of the drawing
    offset, used = resolve_offset("auto", kaggle_like)
    assert offset == pytest.approx(1.2, abs=0.1) and used == len(keypoints)
    write_split(kaggle_like, tmp_path / "split", 0.25, 0, label_offset_x=offset)
    train, val = load_fold(tmp_path / "split")
    rows = np.concatenate([train.rows, val.rows])
    moved_back = np.concatenate([train.keypoints, val.keypoints])
    # the split's labels are back on the drawn features (to the estimate's resolution), y untouched
    np.testing.assert_allclose(moved_back[:, 0::2], keypoints[rows][:, 0::2], atol=0.1)
    np.testing.assert_array_equal(moved_back[:, 1::2], keypoints[rows][:, 1::2])
    assert resolve_offset(0.5, kaggle_like) == (0.5, 0)  # a number is used as given, from no faces


def test_split_stage_without_eye_centres_is_one_line_naming_the_file_and_writes_nothing(prepared, tmp_path):
    bare = tmp_path / "prepared"
    bare.mkdir()
    for f in prepared.iterdir():
        (bare / f.name).write_bytes(f.read_bytes())
    keypoints = np.load(prepared / "train_keypoints.npy")
    keypoints[:, COLUMNS.index("left_eye_center_x")] = np.nan
    np.save(bare / "train_keypoints.npy", keypoints)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    proc = subprocess.run([sys.executable, "-m", "stages.split", "prepared", "split", "split.json"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {Path('prepared') / 'train_keypoints.npy'}: no row labels both eye centres")
    assert "set data.label_offset_x to a number" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "prepared"]


@pytest.mark.parametrize("text,problem", [
    (None, "not found: run the split stage first"),
    ("{", "no 'label_offset_x' number in it"),
    ('{"faces": 3}', "no 'label_offset_x' number in it"),
    ('{"label_offset_x": null}', "'label_offset_x' is None, not a number"),
    ('{"label_offset_x": NaN}', "'label_offset_x' is nan, not a number"),
])
def test_reading_a_bad_offset_file_names_it(tmp_path, text, problem):
    path = tmp_path / "split.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(LabelOffsetError, match=f"split.json.*{problem}"):
        read_offset(path)
    path.write_text(json.dumps({"label_offset_x": -0.35, "label_offset_faces": 12}))
    assert read_offset(path) == -0.35
