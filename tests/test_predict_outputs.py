"""``python -m fkd.predict --out DIR``: a user's own files in DIR are never overwritten, the command's own outputs are
never read as photos, and a --box that starts with a minus sign is a box."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from fkd.predict.table import CSV_NAME
from tests.test_predict import predict_here, tiny_models  # noqa: F401  (tiny_models: the fixture)


@pytest.fixture
def astronaut(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")
    return photos / "astronaut.png"


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("own", [CSV_NAME, "astronaut_keypoints.png"])
def test_a_users_own_file_in_out_is_not_overwritten(tmp_path, astronaut, tiny_models, capsys, monkeypatch, own):
    out = tmp_path / "out"
    out.mkdir()
    if own == CSV_NAME:
        (out / own).write_text("image,x,y\nmine.png,1,2\n")
    else:
        Image.fromarray(np.full((20, 20), 200, np.uint8)).save(out / own)  # a PNG the user made
    before = listing(out)

    proc = predict_here(capsys, monkeypatch, astronaut, "--box", "170,60,100,100", "--out", out, models=tiny_models)

    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f"error: {out / own}: fkd.predict did not write this file and does not overwrite it: "
                    "pass another --out (or move the file away)")
    assert listing(out) == before  # nothing else written either


def test_a_rerun_into_the_photos_folder_replaces_its_own_outputs_and_never_reads_them_as_photos(astronaut, tiny_models, capsys,
                                                                                                monkeypatch):
    photos = astronaut.parent
    for _ in range(2):
        proc = predict_here(capsys, monkeypatch, photos, "--box", "170,60,100,100", "--out", photos, models=tiny_models)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in photos.iterdir()) == ["astronaut.png", "astronaut_keypoints.png", CSV_NAME]
        assert [Path(name).name for name in pd.read_csv(photos / CSV_NAME)["image"]] == ["astronaut.png"]
    first = listing(photos)

    # Named on the command line, an overlay is skipped too; the rerun's outputs are the same bytes.
    proc = predict_here(capsys, monkeypatch, astronaut, photos / "astronaut_keypoints.png", "--box", "170,60,100,100", "--out", photos,
                        models=tiny_models)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {photos / 'astronaut_keypoints.png'}: an overlay fkd.predict wrote, not a photo: skipped" in proc.stderr
    assert listing(photos) == first


def test_a_box_that_starts_with_a_minus_sign(tmp_path, astronaut, tiny_models, capsys, monkeypatch):
    out = tmp_path / "out"
    proc = predict_here(capsys, monkeypatch, astronaut, "--box", "-50,-50,100,100", "--box", "300,300,80,90", "--out", out,
                        models=tiny_models)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out / CSV_NAME)
    assert table[["box_x", "box_y", "box_w", "box_h"]].to_numpy().tolist() == [[-50, -50, 100, 100], [300, 300, 80, 90]]

    proc = predict_here(capsys, monkeypatch, astronaut, "--box", "-50,-50,-100,100", "--out", tmp_path / "bad", models=tiny_models)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("error: argument --box: box '-50,-50,-100,100': width and height must be positive")
    assert not (tmp_path / "bad").exists()
