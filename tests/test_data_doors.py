"""Bad data kept out (issue 22): duplicated images across the split, zip bombs, links out of competition/,
CSVs that are not UTF-8, and numbers given as strings in params.yaml and models/ensemble.json."""
from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

import fkd.sources.download
from fkd.core.cli import run_stage
from fkd.core.config import ParamsError, load_params, parse_params
from fkd.core.data import (DataError, duplicate_groups, fold_assignment, load_fold, parse_test_csv, parse_training_csv,
                      read_lookup, similar_groups, thumbnail_correlation, write_split)
from fkd.sources.download import fetch_raw
from fkd.evaluation.ensemble import load_weights
from fkd.core.errors import EnsembleWeightsError
from fkd.core.keypoints import N_EXTENDED
from tests.conftest import ROOT, project_env
from tests.kaggle_server import kaggle_server  # noqa: F401  (fixture)
from tests.test_download import (COMPETITION, SYNTHETIC, _zip_bytes, assert_failed, assert_nothing_left, kaggle_layout,
                                 local, run_download)
from tests.test_download import make_project as download_project


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    """A small competition download, unpacked: 20 training rows, 4 test images."""
    from fkd.sources.synthetic import write_dataset

    out = tmp_path_factory.mktemp("csvs")
    write_dataset(out, n_train=20, n_test=4, partial_fraction=0.5, seed=7)
    return out


@pytest.fixture(autouse=True)
def _in_tmp_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data.path is inside competition/ of the stage's cwd, the project root


# -- 1. duplicated images stay on one side of the split ---------------------------------------------------------

def _dataset(n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct random images and labels, ~60 % of them partial."""
    rng = np.random.default_rng(11)
    kp = rng.uniform(10, 80, (n, 30)).astype(np.float32)
    kp[rng.random(n) < 0.6, 4:20] = np.nan
    return rng.integers(0, 256, (n, 96, 96), dtype=np.uint8), kp


#: Rows that get the same image (the first listed's): three groups of 2 and two of 3.
GROUPS = [[3, 17], [5, 22, 29], [8, 9], [12, 0, 26], [14, 21]]


def _prepared(tmp_path: Path, groups: list[list[int]]) -> Path:
    images, kp = _dataset()
    for first, *copies in groups:
        images[copies] = images[first]
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.save(prepared / "train_images.npy", images)
    np.save(prepared / "train_keypoints.npy", kp)
    return prepared


@pytest.mark.parametrize("folds", [1, 3, 5])
def test_duplicated_images_never_span_two_folds(tmp_path, folds):
    prepared = _prepared(tmp_path, GROUPS)
    images = np.load(prepared / "train_images.npy")
    ungrouped = fold_assignment(np.load(prepared / "train_keypoints.npy"), folds, 0.25, seed=42)
    assert any(len(set(ungrouped[g])) > 1 for g in GROUPS)  # the seeded split alone would leak these
    counts = write_split(prepared, tmp_path / "split", 0.25, seed=42, folds=folds)
    assert counts["duplicate_groups"] == 5 and counts["duplicate_rows"] == 12
    fold = np.load(tmp_path / "split" / "val_fold.npy")
    for group in GROUPS:
        assert len(set(fold[group])) == 1, (group, fold[group])
    for k in range(folds):
        train, val = load_fold(tmp_path / "split", k)
        seen = {image.tobytes() for image in train.images}
        assert not any(image.tobytes() in seen for image in val.images)
    moved = [row for group in GROUPS for row in group if ungrouped[row] != ungrouped[min(group)]]  # to its first row's
    unmoved = np.setdiff1d(np.arange(len(fold)), moved)
    assert np.array_equal(fold[unmoved], ungrouped[unmoved])  # every other row keeps the seeded split's fold


# fold_assignment(keypoints of _dataset(), folds, 0.25, seed=42) before groups existed
TODAY = {1: [-1, -1, -1, 0, -1, 0, -1, -1, -1, -1, -1, -1, 0, 0, 0, -1, 0, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, -1],
         5: [2, 3, 2, 4, 1, 3, 1, 3, 0, 4, 1, 4, 2, 0, 0, 3, 1, 4, 1, 2, 2, 3, 0, 4, 3, 0, 4, 0, 1, 2]}


@pytest.mark.parametrize("folds", [1, 5])
def test_without_duplicates_the_split_is_byte_for_byte_the_old_one(tmp_path, folds):
    prepared = _prepared(tmp_path, [])
    counts = write_split(prepared, tmp_path / "split", 0.25, seed=42, folds=folds)
    assert counts["duplicate_groups"] == 0 and counts["duplicate_rows"] == 0
    expected = io.BytesIO()
    np.save(expected, np.array(TODAY[folds], dtype=np.int64))
    assert (tmp_path / "split" / "val_fold.npy").read_bytes() == expected.getvalue()
    for name, source in (("images.npy", "train_images.npy"), ("keypoints.npy", "train_keypoints.npy")):
        assert (tmp_path / "split" / name).read_bytes() == (prepared / source).read_bytes()


def test_duplicate_groups_name_each_rows_first_copy():
    images = np.zeros((6, 96, 96), np.uint8)
    images[[1, 4], 0, 0] = 7
    images[5, 3, 3] = 1
    assert duplicate_groups(images).tolist() == [0, 1, 0, 0, 1, 5]


def _look_alikes(images: np.ndarray, groups: list[list[int]], rng: np.random.Generator) -> None:
    """Give the rows of each group a noisy frame of their first row's image (a second frame of one video)."""
    for first, *others in groups:
        for row in others:
            images[row] = np.clip(images[first].astype(int) + rng.integers(-20, 21, images[first].shape), 0, 255)


@pytest.mark.parametrize("folds", [1, 5])
def test_look_alikes_share_a_fold_below_1_and_not_at_1(tmp_path, folds):
    prepared = _prepared(tmp_path, [[14, 21]])  # one pair of exact copies besides the look-alikes
    images = np.load(prepared / "train_images.npy")
    _look_alikes(images, GROUPS[:4], np.random.default_rng(3))
    np.save(prepared / "train_images.npy", images)
    at_1 = write_split(prepared, tmp_path / "at_1", 0.25, seed=42, folds=folds)
    fold_at_1 = np.load(tmp_path / "at_1" / "val_fold.npy")
    assert any(len(set(fold_at_1[g])) > 1 for g in GROUPS[:4])  # the look-alikes alone do not group themselves
    assert (at_1["duplicate_groups"], at_1["near_duplicate_groups"], at_1["near_duplicate_rows"]) == (1, 0, 0)
    counts = write_split(prepared, tmp_path / "at_09", 0.25, seed=42, folds=folds, near_duplicate_corr=0.9)
    assert (counts["duplicate_groups"], counts["duplicate_rows"]) == (1, 2)
    assert (counts["near_duplicate_groups"], counts["near_duplicate_rows"]) == (4, 10)
    fold = np.load(tmp_path / "at_09" / "val_fold.npy")
    for group in GROUPS:
        assert len(set(fold[group])) == 1, (group, fold[group])


def test_complete_linkage_does_not_chain_look_alikes():
    """A morphs into B in steps: neighbours correlate above the threshold, A and B do not, so they never join."""
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 256, (2, 96, 96)).astype(float)
    images = np.stack([np.round(a + (b - a) * t) for t in np.linspace(0, 1, 9)]).astype(np.uint8)
    corr = thumbnail_correlation(images)
    assert all(corr[i, i + 1] > 0.9 for i in range(8)) and corr[0, 8] < 0.2
    groups = similar_groups(images, duplicate_groups(images), 0.9)
    assert groups[0] != groups[8]
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    assert all(corr[np.ix_(m, m)].min() >= 0.9 for m in members)  # every pair in a group, not just neighbours


def test_thumbnail_correlation_is_pearson_of_24x24_block_sums_and_exactly_symmetric():
    images = np.random.default_rng(8).integers(0, 256, (40, 96, 96), dtype=np.uint8)
    images[7] = 90  # flat: correlates 0 with everything
    thumbs = images.reshape(40, 24, 4, 24, 4).sum(axis=(2, 4)).reshape(40, -1).astype(float)
    corr = thumbnail_correlation(images, chunk=16)
    expected = np.corrcoef(np.delete(thumbs, 7, axis=0))
    assert np.allclose(np.delete(np.delete(corr, 7, 0), 7, 1), expected, atol=1e-12)
    assert not corr[7].any() and not corr[:, 7].any()
    assert np.array_equal(corr, corr.T)
    assert np.array_equal(thumbnail_correlation(images[:5], images), corr[:5])


def _params(**changes) -> dict:
    """The shipped params with ``section__key=value`` changes."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    return raw


def test_parse_logs_and_split_records_the_duplicates(tmp_path, csv_dir, caplog):
    from stages.parse import main as parse_main
    from stages.split import main as split_main

    raw = tmp_path / "raw"
    shutil.copytree(csv_dir, raw)
    lines = (raw / "training.csv").read_bytes().splitlines(keepends=True)
    images = [line.rsplit(b",", 1)[1] for line in lines[1:]]
    for first, copy in ((1, 4), (1, 9), (2, 3)):  # rows 4 and 9 copy row 1's image, row 3 row 2's
        lines[copy] = lines[copy].rsplit(b",", 1)[0] + b"," + images[first - 1]
    (raw / "training.csv").write_bytes(b"".join(lines))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(data__label_offset_x=0.0, split__folds=[0, 1])))
    with caplog.at_level(logging.INFO, logger="fkd"):
        parse_main([str(raw), "prepared"])
        split_main(["prepared", "split", "split.json"])
    assert "2 training images occur more than once, in 5 rows" in caplog.text
    assert json.loads((tmp_path / "split.json").read_text()) == {
        "label_offset_x": 0.0, "label_offset_faces": 0, "duplicate_groups": 2, "duplicate_rows": 5,
        "near_duplicate_groups": 0, "near_duplicate_rows": 0}
    fold = np.load(tmp_path / "split" / "val_fold.npy")
    assert fold[0] == fold[3] == fold[8] and fold[1] == fold[2]  # rows 1, 4, 9 and rows 2, 3 (0-based here)


# -- 2. zip bombs are refused before anything is unpacked ------------------------------------------------------

#: A training.csv of 2 MiB that deflates ~1000x: a small zip bomb (a real one declares 1 GiB).
BOMB = b"Image\n" + b"0 " * (1 << 20)


@pytest.mark.parametrize("nested", [False, True])
def test_a_zip_bomb_is_refused_before_unpacking(csv_dir, tmp_path, nested):
    members = kaggle_layout(csv_dir)
    if nested:
        members["training.zip"] = _zip_bytes({"training.csv": BOMB})
    else:
        del members["training.zip"]
        members["training.csv"] = BOMB
    bomb = tmp_path / f"{COMPETITION}.zip"
    bomb.write_bytes(_zip_bytes(members))
    with pytest.raises(DataError) as err:
        fetch_raw(local(bomb), SYNTHETIC, tmp_path / "data" / "raw")
    where = f"competition/{bomb.name}/training.zip: training.csv" if nested else f"competition/{bomb.name}: training.csv"
    assert f"{where} would unpack to 2.1 MB (2,097,158 bytes) from " in str(err.value)
    assert "refused as a possible zip bomb" in str(err.value) and "\n" not in str(err.value)
    assert_nothing_left(tmp_path / "data")


def test_a_zip_bomb_from_kaggle_fails_the_download_stage_in_one_line(kaggle_server, csv_dir, tmp_path):
    kaggle_server.add_competition(COMPETITION, _zip_bytes({**kaggle_layout(csv_dir), "test.zip": _zip_bytes({"test.csv": BOMB})}))
    project = download_project(tmp_path)
    proc = run_download(project, kaggle_server.client_env(tmp_path / "home"))
    line = assert_failed(proc, project)
    assert line.startswith(f"error: downloaded {COMPETITION}.zip/test.zip: test.csv would unpack to 2.1 MB"), line


def test_members_too_large_alone_or_together_are_refused(csv_dir, tmp_path, monkeypatch):
    csvs = {name: (csv_dir / name).read_bytes() for name in ("training.csv", "test.csv", "IdLookupTable.csv")}
    plain = tmp_path / f"{COMPETITION}.zip"
    plain.write_bytes(_zip_bytes(csvs))
    monkeypatch.setattr(fkd.sources.download, "MAX_UNPACKED_BYTES", len(csvs["training.csv"]) - 1)
    with pytest.raises(DataError, match=r"competition/.*\.zip: training\.csv would unpack to .*zip bomb"):
        fetch_raw(local(plain), SYNTHETIC, tmp_path / "data" / "raw")
    monkeypatch.setattr(fkd.sources.download, "MAX_UNPACKED_BYTES", len(csvs["training.csv"]) + 1)  # each fits, not all three
    with pytest.raises(DataError, match=r"training\.csv, test\.csv, IdLookupTable\.csv would unpack to .* together"):
        fetch_raw(local(plain), SYNTHETIC, tmp_path / "data" / "raw")
    assert_nothing_left(tmp_path / "data")


def test_a_member_whose_header_lies_is_cut_off_at_the_limit(csv_dir, tmp_path, monkeypatch):
    """Were the declared sizes wrong (or not checked), unpacking still stops at MAX_UNPACKED_BYTES."""
    monkeypatch.setattr(fkd.sources.download, "_check_sizes", lambda members, label: None)
    monkeypatch.setattr(fkd.sources.download, "MAX_UNPACKED_BYTES", 1 << 20)
    bomb = tmp_path / f"{COMPETITION}.zip"
    bomb.write_bytes(_zip_bytes({**kaggle_layout(csv_dir), "training.zip": _zip_bytes({"training.csv": BOMB})}))
    with pytest.raises(DataError, match=r"training\.zip: training\.csv unpacks to more than 1\.0 MB .*zip bomb"):
        fetch_raw(local(bomb), SYNTHETIC, tmp_path / "data" / "raw")
    assert_nothing_left(tmp_path / "data")


def test_the_real_competition_files_sizes_pass():
    def member(name: str, size: int, packed: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name)
        info.file_size, info.compress_size = size, packed
        return info

    fkd.sources.download._check_sizes([member("training.csv", 238_000_000, 63_000_000)], "training.zip")
    fkd.sources.download._check_sizes([member("test.csv", 60_000_000, 16_000_000)], "test.zip")
    fkd.sources.download._check_sizes([member("IdLookupTable.csv", 850_000, 80_000), member("training.zip", 63_000_000, 62_000_000),
                               member("test.zip", 16_000_000, 16_000_000)], "facial-keypoints-detection.zip")
    with pytest.raises(DataError, match=r"x\.zip: training\.csv would unpack to 1073\.7 MB .* \(1024x\)"):
        fkd.sources.download._check_sizes([member("training.csv", 1 << 30, 1 << 20)], "x.zip")


# -- 3. a link in competition/ must not lead out of it ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_a_link_out_of_competition_is_refused(csv_dir, tmp_path, kind):
    outside = tmp_path.parent / f"outside-{tmp_path.name}"
    outside.mkdir()
    target = outside / f"{COMPETITION}.zip" if kind == "zip" else outside / "files"
    if kind == "zip":
        target.write_bytes(_zip_bytes(kaggle_layout(csv_dir)))
    else:
        shutil.copytree(csv_dir, target)
    link = Path("competition") / target.name
    link.parent.mkdir()
    link.symlink_to(target)
    data = local(link)
    with pytest.raises(ParamsError, match=rf"'data.path' {link} is a link to {target}, outside competition/"):
        fetch_raw(data, SYNTHETIC, tmp_path / "data" / "raw")
    assert not (tmp_path / "data").exists()
    shutil.rmtree(outside)


def test_links_within_competition_or_into_the_dvc_cache_are_fine(csv_dir, tmp_path):
    zip_bytes = _zip_bytes(kaggle_layout(csv_dir))
    Path("competition").mkdir()
    Path("competition/kaggle.zip").write_bytes(zip_bytes)
    Path(f"competition/{COMPETITION}.zip").symlink_to("kaggle.zip")
    fetch_raw(local(Path(f"competition/{COMPETITION}.zip")), SYNTHETIC, tmp_path / "data" / "raw")
    # `dvc add` with cache.type symlink and a cache outside the repo (a shared cache), as real DVC makes it
    Path(f"competition/{COMPETITION}.zip").unlink()
    Path(f"competition/{COMPETITION}.zip").write_bytes(zip_bytes)
    dvc = [str(Path(sys.executable).with_name("dvc"))]
    for args in (["init", "--no-scm", "-q"], ["cache", "dir", str(tmp_path.parent / f"cache-{tmp_path.name}")],
                 ["config", "cache.type", "symlink"], ["add", "-q", f"competition/{COMPETITION}.zip"]):
        subprocess.run(dvc + args, check=True, capture_output=True, env=project_env())
    target = Path(f"competition/{COMPETITION}.zip").resolve()
    assert Path(f"competition/{COMPETITION}.zip").is_symlink() and target.is_relative_to(tmp_path.parent / f"cache-{tmp_path.name}")
    summary = fetch_raw(local(Path(f"competition/{COMPETITION}.zip")), SYNTHETIC, tmp_path / "data" / "raw")
    assert summary["training.csv"]["rows"] == 20
    shutil.rmtree(tmp_path.parent / f"cache-{tmp_path.name}")


# -- 4. CSVs that are not UTF-8 ---------------------------------------------------------------------------------

def _latin1(text: bytes, row: int) -> bytes:
    """``text`` with a Latin-1 e-acute (0xE9) in the first field of row ``row``."""
    lines = text.split(b"\n")
    lines[row] = b"4\xe9" + lines[row][1:]
    return b"\n".join(lines)


@pytest.mark.parametrize("encode, problem", [
    (lambda text: text.decode().encode("utf-16"), r"looks like UTF-16: it starts with a byte-order mark"),
    (lambda text: text.decode().encode("utf-16-le"), r"looks like UTF-16 or UTF-32: row 0 has NUL bytes between its characters"),
    (lambda text: text.decode().encode("utf-32"), r"looks like UTF-32: it starts with a byte-order mark"),
    (lambda text: _latin1(text, 3), r"row 3 has byte 0xE9, which UTF-8 does not allow there; it may be Latin-1"),
])
@pytest.mark.parametrize("name", ["training.csv", "test.csv"])
def test_a_csv_that_is_not_utf8_says_so(csv_dir, tmp_path, name, encode, problem):
    path = tmp_path / name
    path.write_bytes(encode((csv_dir / name).read_bytes()))
    with pytest.raises(DataError, match=rf"^{path}: not UTF-8 text \({problem}.*\); save it as UTF-8$"):
        (parse_training_csv if name == "training.csv" else parse_test_csv)(path)


def test_a_utf8_byte_order_mark_is_fine(csv_dir, tmp_path):
    path = tmp_path / "training.csv"
    path.write_bytes((csv_dir / "training.csv").read_text().encode("utf-8-sig"))
    assert parse_training_csv(path)[0].shape == (20, 96, 96)


def test_a_lookup_table_that_is_not_utf8_says_so(csv_dir, tmp_path):
    path = tmp_path / "IdLookupTable.csv"
    path.write_bytes(_latin1((csv_dir / "IdLookupTable.csv").read_bytes(), 2))
    with pytest.raises(DataError, match=rf"^{path}: not UTF-8 text \(row 2 has byte 0xE9.*\); save it as UTF-8$"):
        read_lookup(path)


def test_a_utf16_file_fails_the_download_and_parse_stages_in_one_line(csv_dir, tmp_path, capsys):
    from stages.parse import main as parse_main

    folder = tmp_path / "by_hand"
    shutil.copytree(csv_dir, folder)
    (folder / "training.csv").write_bytes((csv_dir / "training.csv").read_text().encode("utf-16"))
    with pytest.raises(DataError, match=r"competition/by_hand/training\.csv: not UTF-8 text \(looks like UTF-16"):
        fetch_raw(local(folder), SYNTHETIC, tmp_path / "data" / "raw")
    assert_nothing_left(tmp_path / "data")
    with pytest.raises(SystemExit) as exit_:
        run_stage(parse_main, [str(folder), "prepared"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {folder / 'training.csv'}: not UTF-8 text (looks like UTF-16: it starts with a byte-order mark); "
        "save it as UTF-8"]
    assert not Path("prepared").exists()


# -- 5. numbers are numbers, not strings -----------------------------------------------------------------------

@pytest.mark.parametrize("dotted, value, message", [
    ("data__label_offset_x", "1.5", r"'data.label_offset_x' must be a number, got the string '1.5': write it without quotes"),
    ("resnet__lr", "0.003", r"'resnet.lr' must be a number, got the string '0.003': write it without quotes"),
    ("ensemble__weights", ["0.5", 0.25, 0.25], r"'ensemble.weights\[0\]' must be a number, got the string '0.5'"),
    ("data__label_offset_x", True, r"'data.label_offset_x' must be 'auto' or a number, got True"),
    ("data__label_offset_x", None, r"'data.label_offset_x' must be 'auto' or a number, got None"),
    ("data__label_offset_x", float("nan"), r"'data.label_offset_x' must be a finite number, got nan"),
])
def test_params_numbers_refuse_strings_bools_null_and_nan(dotted, value, message):
    with pytest.raises(ParamsError, match=rf"^params: {message}"):
        parse_params(_params(**{dotted: value}))


def test_a_quoted_label_offset_in_params_yaml_is_refused_and_auto_and_numbers_are_kept(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    assert "  label_offset_x: auto " in text
    for written, parsed in (("auto", "auto"), ("-1.5", -1.5), ("2", 2.0), ("1e-1", 0.1)):
        (tmp_path / "params.yaml").write_text(text.replace("  label_offset_x: auto ", f"  label_offset_x: {written} ", 1))
        assert load_params(tmp_path / "params.yaml").data.label_offset_x == parsed
    (tmp_path / "params.yaml").write_text(text.replace("  label_offset_x: auto ", '  label_offset_x: "1.5" ', 1))
    with pytest.raises(ParamsError, match=r"'data.label_offset_x' must be a number, got the string '1.5'"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("weights, problem", [
    (["0.5", 0.5], r"'weights\[0\]' is the string \"0.5\", not a number"),
    ([[0.5] * N_EXTENDED, [0.5] * 3 + ["0.5"] + [0.5] * 13], r"'weights\[1\]\[3\]' is the string \"0.5\", not a number"),
    ([0.5, None], r"'weights\[1\]' is null, not a number"),
    ([True, 0.0], r"'weights\[0\]' is true: weights must be numbers, not true/false"),
    ("0.5", r"'weights' is the string \"0.5\", not a number"),
    ([0.5, {"w": 0.5}], r"'weights\[1\]' is a dict, not a number"),
])
def test_ensemble_weights_must_be_real_numbers(tmp_path, weights, problem):
    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps({"members": ["a", "b"], "weights": weights}))
    with pytest.raises(EnsembleWeightsError, match=rf"^{path}: {problem}$"):
        load_weights(path)


def test_ensemble_weights_nan_is_refused_and_numbers_load(tmp_path):
    path = tmp_path / "ensemble.json"
    path.write_text('{"members": ["a", "b"], "weights": [NaN, 1.0]}')
    with pytest.raises(EnsembleWeightsError, match="not all finite"):
        load_weights(path)
    path.write_text('{"members": ["a", "b"], "weights": [1, 0.0]}')
    assert load_weights(path)[1].tolist() == [1.0, 0.0]
