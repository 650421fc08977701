import hashlib

import numpy as np
import pytest

from fkd.core.data import DataError, load_fold, parse_raw, parse_test_csv, parse_training_csv, split_indices, write_split
from fkd.core.keypoints import COLUMNS, complete_mask
from fkd.sources.synthetic import make_dataset


def write_training(tmp_path, df):
    path = tmp_path / "training.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def frames():
    return make_dataset(n_train=8, n_test=3, partial_fraction=0.5, seed=5)


def test_parse_matches_a_naive_reader(frames, tmp_path):
    training = frames[0]
    images, keypoints = parse_training_csv(write_training(tmp_path, training))
    assert images.dtype == np.uint8 and images.shape == (8, 96, 96)
    assert keypoints.dtype == np.float32 and keypoints.shape == (8, 30)
    naive = np.stack([np.array(s.split(), dtype=int).reshape(96, 96) for s in training.Image])
    np.testing.assert_array_equal(images, naive)
    np.testing.assert_allclose(keypoints, training[list(COLUMNS)].to_numpy(np.float32), equal_nan=True)
    assert np.isnan(keypoints).any()  # partial rows keep NaN


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda df: df.assign(Image=df.Image.where(df.index != 3, df.Image[3] + " 7")), r"row 4: Image has 9217 pixel values"),
        (lambda df: df.assign(Image=df.Image.where(df.index != 2, df.Image[2].replace(" ", " 300 ", 1).rsplit(" ", 1)[0])), r"row 3: pixel 2 is 300, outside 0-255"),
        (lambda df: df.assign(Image=df.Image.where(df.index != 1, "x" + df.Image[1][1:])), r"row 2: pixel 1 is not a number"),
        (lambda df: df.rename(columns={"nose_tip_x": "nose_x"}), r"row 0 \(header\): missing column 'nose_tip_x'"),
        (lambda df: df.drop(columns=["Image"]), r"missing column 'Image'"),
        (lambda df: df.assign(nose_tip_x=df.nose_tip_x.astype(object).where(df.index != 5, "abc")), r"row 6: nose_tip_x is not a number"),
    ],
)
def test_bad_training_rows_name_file_row_and_problem(frames, tmp_path, change, message):
    path = write_training(tmp_path, change(frames[0].copy()))
    with pytest.raises(DataError, match=message) as err:
        parse_training_csv(path)
    assert str(path) in str(err.value)


def test_duplicate_image_id_is_an_error(frames, tmp_path):
    test = frames[1].copy()
    test.loc[2, "ImageId"] = 1
    path = tmp_path / "test.csv"
    test.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"test.csv: row 3: duplicate ImageId 1 \(first at row 1\)"):
        parse_test_csv(path)


def test_bad_input_leaves_no_output(frames, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    frames[0].to_csv(raw / "training.csv", index=False)
    bad = frames[1].copy()
    bad.loc[0, "Image"] = "1 2 3"
    bad.to_csv(raw / "test.csv", index=False)
    with pytest.raises(DataError):
        parse_raw(raw, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_split_is_stratified_seeded_and_byte_identical(split_dir, synthetic_raw, tmp_path):
    _, keypoints = parse_training_csv(synthetic_raw / "training.csv")
    train_rows, val_rows = split_indices(keypoints, 0.25, seed=0)
    assert len(np.intersect1d(train_rows, val_rows)) == 0 and len(train_rows) + len(val_rows) == len(keypoints)
    frac_complete = complete_mask(keypoints).mean()
    assert complete_mask(keypoints[val_rows]).mean() == pytest.approx(frac_complete, abs=0.05)
    assert not np.array_equal(split_indices(keypoints, 0.25, seed=1)[1], val_rows)

    # the same inputs and params give byte-identical files
    prepared = tmp_path / "prepared"
    parse_raw(synthetic_raw, prepared)
    write_split(prepared, tmp_path / "again", 0.25, 0)
    for f in sorted(split_dir.iterdir()):
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256((tmp_path / "again" / f.name).read_bytes()).digest()
    _, val = load_fold(split_dir)
    np.testing.assert_array_equal(val.rows, val_rows)

    # a label offset moves every labelled x onto the image features, and nothing else
    write_split(prepared, tmp_path / "offset", 0.25, 0, label_offset_x=1.25)
    _, moved = load_fold(tmp_path / "offset")
    np.testing.assert_array_equal(moved.rows, val_rows)
    np.testing.assert_allclose(moved.keypoints[:, 0::2], val.keypoints[:, 0::2] - 1.25)
    np.testing.assert_array_equal(moved.keypoints[:, 1::2], val.keypoints[:, 1::2])
    assert np.array_equal(np.isnan(moved.keypoints), np.isnan(val.keypoints))


@pytest.mark.parametrize("text,shown", [("96", "96.0"), ("96.5", "96.5"), ("-0.1", "-0.1"), ("inf", "inf"), ("-inf", "-inf"),
                                        ("1e999", "inf"), ("95.99999999", r"95.99999999 \(96.0 as float32\)")])
def test_keypoints_off_the_image_are_errors(frames, tmp_path, text, shown):
    df = frames[0].copy()
    df["mouth_center_bottom_lip_y"] = df["mouth_center_bottom_lip_y"].astype(object)
    df.loc[4, "mouth_center_bottom_lip_y"] = text
    path = write_training(tmp_path, df)
    with pytest.raises(DataError, match=rf"training.csv: row 5: mouth_center_bottom_lip_y is {shown}, outside the image \[0, 96\)"):
        parse_training_csv(path)


def test_keypoints_at_the_edges_of_the_image_are_kept(frames, tmp_path):
    df = frames[0].copy()
    df.loc[0, "left_eye_center_x"], df.loc[1, "left_eye_center_y"] = 0.0, 95.99
    _, keypoints = parse_training_csv(write_training(tmp_path, df))
    assert keypoints[0, 0] == 0.0 and keypoints[1, 1] == np.float32(95.99)


def write_raw(tmp_path, frames, lookup):
    raw = tmp_path / "raw"
    raw.mkdir()
    frames[0].to_csv(raw / "training.csv", index=False)
    frames[1].to_csv(raw / "test.csv", index=False)
    lookup.to_csv(raw / "IdLookupTable.csv", index=False)
    return raw


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("FeatureName", "nose_tipx", r"IdLookupTable.csv: row 3 \(RowId 3\): unknown FeatureName 'nose_tipx'"),
        ("ImageId", 99, r"IdLookupTable.csv: row 3 \(RowId 3\): ImageId 99 is not in test.csv"),
        ("ImageId", "x", r"IdLookupTable.csv: row 3: ImageId is not an integer: 'x'"),
        ("RowId", 1, r"IdLookupTable.csv: row 3: duplicate RowId 1 \(first at row 1\)"),
    ],
)
def test_parse_checks_the_lookup_table_against_test_csv(frames, tmp_path, column, value, message):
    lookup = frames[2].copy().astype({column: object})
    lookup.loc[2, column] = value
    raw = write_raw(tmp_path, frames, lookup)
    with pytest.raises(DataError, match=message) as err:
        parse_raw(raw, tmp_path / "prepared")
    assert str(raw / "IdLookupTable.csv") in str(err.value)
    assert not (tmp_path / "prepared").exists()


def test_split_bad_fraction_is_a_params_error(frames, tmp_path):
    from fkd.core.config import ParamsError

    with pytest.raises(ParamsError, match=r"'split.val_fraction' must be in \(0, 1\), got 1.5"):
        split_indices(np.zeros((4, 30), np.float32), 1.5, seed=0)


@pytest.mark.parametrize("n_rows,fraction,empty", [(1, 0.2, "validation"), (2, 0.2, "validation"), (1, 0.8, "training")])
def test_split_that_leaves_a_part_empty_is_an_error(frames, tmp_path, n_rows, fraction, empty):
    prepared = tmp_path / "prepared"
    parse_raw(write_raw(tmp_path, frames, frames[2]), prepared)
    keypoints = np.load(prepared / "train_keypoints.npy")
    rows = [int(np.flatnonzero(complete_mask(keypoints))[0]), int(np.flatnonzero(~complete_mask(keypoints))[0])][:n_rows]
    np.save(prepared / "train_images.npy", np.load(prepared / "train_images.npy")[rows])
    np.save(prepared / "train_keypoints.npy", keypoints[rows])
    with pytest.raises(DataError, match=rf"train_keypoints.npy: split.val_fraction {fraction} of {n_rows} rows leaves 0 {empty} rows"):
        write_split(prepared, tmp_path / "split", fraction, seed=0)
    assert not (tmp_path / "split").exists()
