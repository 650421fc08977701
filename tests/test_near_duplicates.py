"""benchmarks.near_duplicates: what each split.near_duplicate_corr groups, on a parse stage's output."""
import json

import numpy as np
import pytest

from benchmarks.near_duplicates import main
from fkd.core.cli import StageError
from fkd.sources.synthetic import draw_face
from tests.conftest import ROOT


def test_each_threshold_groups_the_noisy_frames_and_the_test_images_get_a_row(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    faces = np.stack([draw_face(rng)[0] for _ in range(12)])
    frames = np.clip(faces[:4].astype(int) + rng.integers(-3, 4, faces[:4].shape), 0, 255).astype(np.uint8)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    np.save(prepared / "train_images.npy", np.concatenate([faces, frames]))  # rows 12..15: second frames of rows 0..3
    np.save(prepared / "train_keypoints.npy", np.full((16, 30), 40.0, np.float32))
    np.save(prepared / "test_images.npy", faces[8:])
    monkeypatch.chdir(ROOT)  # the shipped params.yaml's split section
    monkeypatch.setattr("benchmarks.report.machine_probe", lambda root, given=None: "not measured")  # no 15 s probe
    twins = {"rows": [{"similarity": band, "faces": 1, "m_tta_rmse": rmse}
                      for band, rmse in (("< 0.7", 2.0), ("0.7-0.8", 1.0), ("0.8-0.9", 1.0), (">= 0.9", 1.0))]}
    (tmp_path / "twins.json").write_text(json.dumps(twins))
    main([str(prepared), "--corr", "1", "0.99", "--val-twins", str(tmp_path / "twins.json"), "--json", str(tmp_path / "out.json")])
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert [row["near_duplicate_corr"] for row in rows] == ["test images", "1", "0.99"]
    assert rows[0]["faces"] == 4 and rows[0]["nearest_train_corr_median"] > 0.99  # the test images are in training here
    assert (rows[1]["near_duplicate_groups"], rows[1]["near_duplicate_rows"]) == (0, 0)
    assert (rows[2]["near_duplicate_groups"], rows[2]["near_duplicate_rows"]) == (4, 8)
    assert all(abs(sum(v for k, v in row.items() if k.startswith("share")) - 1) < 0.01 for row in rows)
    for row in rows:  # the band errors weighted by the row's shares, as mean squared errors
        low = row["share < 0.7"]
        assert row["m_tta_rmse at this mix"] == pytest.approx(np.sqrt(4 * low + (1 - low)), abs=0.01)
    twins["rows"].pop(1)
    (tmp_path / "twins.json").write_text(json.dumps(twins))
    with pytest.raises(StageError, match=r"twins.json: has no band '0.7-0.8'; run benchmarks.val_twins with --bands 0.7 0.8 0.9"):
        main([str(prepared), "--val-twins", str(tmp_path / "twins.json")])
    for damaged, message in (("{", "not readable JSON"), ('{"rows": [{"faces": 1}]}', "not a benchmarks.val_twins --json file")):
        (tmp_path / "twins.json").write_text(damaged)
        with pytest.raises(StageError, match=message):
            main([str(prepared), "--val-twins", str(tmp_path / "twins.json")])
