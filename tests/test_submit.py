"""submit: the file's format against a lookup table, the scheme per image, checks, and the upload (loopback Kaggle)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fkd.core.data import DataError, parse_raw, parse_test_csv, read_lookup
from fkd.core.keypoints import COLUMNS, EXTENDED_NAMES, index
from fkd.evaluation.submit import check_submission, format_submission, predict_locations, scheme_b_images, submission_message, write_submission
from tests.conftest import ROOT
from tests.kaggle_server import kaggle_server  # noqa: F401  (fixture)
from tests.test_evaluate import make_tiny_models, tiny_params_file

COMPETITION = "facial-keypoints-detection"
NOSE_B = index("nose_tip_b", EXTENDED_NAMES)
LIP_B = index("mouth_center_bottom_lip_b", EXTENDED_NAMES)
EIGHT = ["left_eye_center_x", "left_eye_center_y", "right_eye_center_x", "right_eye_center_y",
         "nose_tip_x", "nose_tip_y", "mouth_center_bottom_lip_x", "mouth_center_bottom_lip_y"]


def write_lookup(path: Path, rows: list[tuple[int, int, str]]) -> Path:
    path.write_text("RowId,ImageId,FeatureName,Location\n" + "".join(f"{r},{i},{f},\n" for r, i, f in rows))
    return path


def image_code_fn(images: np.ndarray) -> np.ndarray:
    """Fake model: image pixel [0, 0] holds the image's code c; coordinate j is c + j / 100, the
    scheme-B nose/lip are c + 50 + j / 100 (so the scheme used is visible), a few are out of range."""
    codes = images[:, 0, 0].astype(np.float64)
    out = codes[:, None] + np.arange(34) / 100
    for k in (NOSE_B, LIP_B):
        out[:, 2 * k : 2 * k + 2] += 50
    out[:, 29] = -3.0  # mouth_center_bottom_lip_y (scheme A) below 0
    out[:, 2 * LIP_B + 1] = 120.0  # its scheme-B twin above 96
    return out


def coded_images(codes: list[int]) -> np.ndarray:
    images = np.zeros((len(codes), 96, 96), np.uint8)
    images[:, 0, 0] = codes
    return images


@pytest.fixture
def lookup_case(tmp_path):
    """Test images 7, 3, 5 (in test.csv order); image 3 asks 8 features (scheme B), 5 all 30, 7 nothing."""
    rows, rid = [], 1
    for image_id, features in ((3, EIGHT), (5, COLUMNS)):
        for f in features:
            rows.append((rid, image_id, f))
            rid += 1
    return write_lookup(tmp_path / "IdLookupTable.csv", rows), coded_images([70, 30, 10]), np.array([7, 3, 5])


def test_submission_rows_follow_the_lookup_in_each_images_scheme(lookup_case, tmp_path):
    lookup_csv, images, test_ids = lookup_case
    lookup = read_lookup(lookup_csv)
    assert scheme_b_images(lookup) == {3: True, 5: False}
    asked = []
    locations = predict_locations(lookup, images, test_ids, lambda im: (asked.append(im[:, 0, 0].tolist()), image_code_fn(im))[1])
    assert asked == [[30, 10]]  # only the images the lookup asks for, in test.csv order
    out = tmp_path / "submission.csv"
    write_submission(out, lookup, locations)
    lines = out.read_text().splitlines()
    assert lines[0] == "RowId,Location" and len(lines) == 1 + 8 + 30
    got = {int(r): float(v) for r, v in (line.split(",") for line in lines[1:])}
    assert list(got) == list(range(1, 39))
    # image 3 (code 30), scheme B: eyes from scheme A outputs, nose and lip from the scheme-B outputs
    assert got[1] == pytest.approx(30.00) and got[4] == pytest.approx(30.03)
    assert got[5] == pytest.approx(30 + 50 + (2 * NOSE_B) / 100) and got[6] == pytest.approx(30 + 50 + (2 * NOSE_B + 1) / 100)
    assert got[7] == pytest.approx(30 + 50 + (2 * LIP_B) / 100)
    assert got[8] == 96.0  # 120 clipped
    # image 5 (code 10), scheme A: column j is 10 + j / 100, nose from the scheme-A outputs
    assert [got[9 + j] for j in range(28)] == pytest.approx([10 + j / 100 for j in range(28)])
    assert got[9 + 29] == 0.0  # -3 clipped
    check_submission(out.read_text(), lookup)


def test_synthetic_lookup_gets_an_answer_for_every_row(synthetic_raw, tmp_path):
    lookup = read_lookup(synthetic_raw / "IdLookupTable.csv")
    images, ids = parse_test_csv(synthetic_raw / "test.csv")
    counts = {i: int((lookup.image_ids == i).sum()) for i in ids.tolist()}
    schemes = scheme_b_images(lookup)
    assert {c for c in counts.values()} == {8, 30}
    assert all(schemes[i] == (counts[i] == 8) for i in ids.tolist())
    locations = predict_locations(lookup, images, ids, lambda im: np.full((len(im), 34), 48.0))
    write_submission(tmp_path / "s.csv", lookup, locations)
    assert len((tmp_path / "s.csv").read_text().splitlines()) == len(lookup) + 1

    # the label offset moves every x (and no y) back into the labels' frame, still clipped to the image
    shifted = predict_locations(lookup, images, ids, lambda im: np.full((len(im), 34), 48.0), label_offset_x=1.25)
    is_x = np.array([COLUMNS[j].endswith("_x") for j in lookup.features])
    np.testing.assert_allclose(shifted[is_x], 49.25)
    np.testing.assert_allclose(shifted[~is_x], 48.0)
    edge = predict_locations(lookup, images, ids, lambda im: np.full((len(im), 34), 95.5), label_offset_x=1.25)
    assert edge[is_x].max() == 96.0


@pytest.mark.parametrize("row, pattern", [
    ((3, 5, "nose_tipx"), r"IdLookupTable.csv: row 3 \(RowId 3\): unknown FeatureName 'nose_tipx'"),
    ((3, 9, "nose_tip_x"), r"IdLookupTable.csv: row 3 \(RowId 3\): ImageId 9 is not in test.csv"),
    ((1, 5, "nose_tip_x"), r"IdLookupTable.csv: row 3: duplicate RowId 1 \(first at row 1\)"),
    (("x", 5, "nose_tip_x"), r"IdLookupTable.csv: row 3: RowId is not an integer: 'x'"),
])
def test_bad_lookup_rows_are_named(row, pattern, tmp_path):
    path = write_lookup(tmp_path / "IdLookupTable.csv", [(1, 5, "left_eye_center_x"), (2, 5, "left_eye_center_y"), row])
    with pytest.raises(DataError, match=pattern):
        lookup = read_lookup(path)
        predict_locations(lookup, coded_images([1]), np.array([5]), image_code_fn)


def test_non_finite_prediction_is_an_error(lookup_case):
    lookup_csv, images, test_ids = lookup_case
    lookup = read_lookup(lookup_csv)
    with pytest.raises(ValueError, match=r"non-finite value for .*row 1 \(RowId 1\) \(left_eye_center_x\)"):
        predict_locations(lookup, images, test_ids, lambda im: np.where(np.arange(34) == 0, np.nan, 1.0) * np.ones((len(im), 1)))


def test_check_submission_rejects_what_kaggle_would(lookup_case):
    lookup = read_lookup(lookup_case[0])
    good = format_submission(lookup.row_ids, np.full(len(lookup), 48.0))
    check_submission(good, lookup)
    header, first, *rest = good.splitlines()
    cases = {
        "header is RowId,Loc": "\n".join(["RowId,Loc", first, *rest]),
        "37 rows": "\n".join([header, *rest]),
        "row 2 has RowId 3, expected 2": "\n".join([header, first, rest[1], rest[0], *rest[2:]]),
        "Location 'nan'": "\n".join([header, first.replace("48.0000", "nan"), *rest]),
        "Location '96.5'": "\n".join([header, first.replace("48.0000", "96.5"), *rest]),
    }
    for message, text in cases.items():
        with pytest.raises(ValueError, match=message):
            check_submission(text + "\n", lookup)


def test_submission_message_names_the_experiment():
    assert submission_message("fkd run", "ensemble", True, "lofty-hare", "abc1234") == \
        "fkd run; model ensemble + TTA; exp lofty-hare; commit abc1234"
    assert submission_message("", "resnet", False) == "fkd submission; model resnet"


# -- the stage, with a tiny real ResNet, uploading to the loopback Kaggle server ------------------------------------
@pytest.fixture(scope="module")
def resnet_only(split_dir, tmp_path_factory) -> Path:
    return make_tiny_models(split_dir, tmp_path_factory.mktemp("models"), cnn=False)


@pytest.fixture(scope="module")
def prepared(synthetic_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    parse_raw(synthetic_raw, out)
    return out


def run_submit(cwd: Path, raw: Path, prepared: Path, models: Path, env: dict) -> subprocess.CompletedProcess:
    (cwd / "split.json").write_text('{"label_offset_x": 0.5, "label_offset_faces": 40}')
    args = ["-m", "stages.submit", str(raw / "IdLookupTable.csv"), str(prepared), str(models), "split.json", "submission.csv"]
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)


def test_stage_writes_and_uploads_with_the_experiment_name(kaggle_server, synthetic_raw, prepared, resnet_only, tmp_path):
    tiny_params_file(tmp_path, {"submit": {"model": "resnet", "tta_flip": True, "upload": True, "message": "tiny run"}})
    env = {**kaggle_server.client_env(tmp_path / "home"), "DVC_EXP_NAME": "tiny-exp"}
    proc = run_submit(tmp_path, synthetic_raw, prepared, resnet_only, env)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "submission.csv").read_text()
    check_submission(text, read_lookup(synthetic_raw / "IdLookupTable.csv"))
    (sub,) = kaggle_server.submissions
    assert sub.content == text.encode() and sub.competition == COMPETITION
    assert sub.message.startswith("tiny run; model resnet + TTA; exp tiny-exp")
    assert kaggle_server.key not in proc.stdout + proc.stderr


def test_stage_does_not_upload_by_default_and_names_a_missing_model(synthetic_raw, prepared, resnet_only, tmp_path, monkeypatch, caplog):
    from fkd.core.errors import ModelFileError
    from fkd.core.label_offset import LabelOffsetError
    from stages.submit import main

    monkeypatch.chdir(tmp_path)
    args = [str(synthetic_raw / "IdLookupTable.csv"), str(prepared), str(resnet_only), "split.json", "submission.csv"]
    tiny_params_file(tmp_path, {"submit": {"model": "ensemble"}, "ensemble": {"weights": [1, 1, 1]}})  # needs the CNN too
    with pytest.raises(LabelOffsetError, match=r"split.json not found: run the split stage first"):
        main(args)
    (tmp_path / "split.json").write_text('{"label_offset_x": "1"}')
    with pytest.raises(LabelOffsetError, match=r"split.json: 'label_offset_x' is '1', not a number"):
        main(args)
    (tmp_path / "split.json").write_text('{"label_offset_x": 0.0, "label_offset_faces": 40}')
    with pytest.raises(ModelFileError, match="cnn_sgd/0.keras not found"):
        main(args)
    assert not (tmp_path / "submission.csv").exists()
    tiny_params_file(tmp_path, {"submit": {"model": "resnet", "tta_flip": False}})  # upload stays off (the default)
    with caplog.at_level("INFO", logger="fkd"):
        main(args)
    check_submission((tmp_path / "submission.csv").read_text(), read_lookup(args[0]))
    assert "not uploaded (submit.upload is false)" in caplog.text
