"""download stage: local zip/folder, synthetic, and the official Kaggle client against a loopback server."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from fkd.core.cli import StageError
from fkd.core.config import DataParams, ParamsError, SyntheticParams
from fkd.core.data import DataError, parse_test_csv, parse_training_csv
from fkd.sources.download import check_raw_dir, fetch_raw
from tests.conftest import ROOT, deep_update
from tests.kaggle_server import KaggleServer, kaggle_server  # noqa: F401  (fixture)

COMPETITION = "facial-keypoints-detection"
RAW_NAMES = {"training.csv", "test.csv", "IdLookupTable.csv"}
SYNTHETIC = SyntheticParams(n_train=6, n_test=2, partial_fraction=0.5, seed=3)


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def kaggle_layout(csv_dir: Path) -> dict[str, bytes]:
    """The members of Kaggle's competition zip, made from a folder of CSVs."""
    read = lambda name: (csv_dir / name).read_bytes()  # noqa: E731
    return {
        "IdLookupTable.csv": read("IdLookupTable.csv"),
        "SampleSubmission.csv": b"RowId,Location\n1,0\n",
        "test.zip": _zip_bytes({"test.csv": read("test.csv")}),
        "training.zip": _zip_bytes({"training.csv": read("training.csv")}),
    }


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    """A small competition download, unpacked: 20 training rows, 4 test images."""
    from fkd.sources.synthetic import write_dataset

    out = tmp_path_factory.mktemp("csvs")
    write_dataset(out, n_train=20, n_test=4, partial_fraction=0.5, seed=7)
    return out


@pytest.fixture(scope="module")
def competition_zip(csv_dir: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zip") / f"{COMPETITION}.zip"
    path.write_bytes(_zip_bytes(kaggle_layout(csv_dir)))
    return path


@pytest.fixture(autouse=True)
def _in_tmp_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the stage's cwd is the project root; data.path is inside its competition/


def local(path) -> DataParams:
    """Params of a local source: ``path`` copied into ``competition/`` of the current folder (where data.path must be;
    a link out of it is refused)."""
    path = Path(path)
    copy = Path("competition") / path.name
    if path.exists() and not copy.exists():
        copy.parent.mkdir(exist_ok=True)
        (shutil.copytree if path.is_dir() else shutil.copy)(path, copy)
    return DataParams(source="local", path=str(copy), competition=COMPETITION, label_offset_x="auto")


@pytest.mark.parametrize("path", ["/abs/facial-keypoints-detection.zip", "../shared/x.zip", "data/x.zip", "competition/../x.zip"])
def test_local_path_outside_competition_folder_is_a_params_error(path):
    with pytest.raises(ParamsError, match=r"'data.path' is .*, outside competition/: .*dvc add competition/"):
        fetch_raw(DataParams(source="local", path=path, competition=COMPETITION, label_offset_x="auto"), SYNTHETIC, "data/raw")
    assert not Path("data").exists()


def assert_same_data(raw: Path, csv_dir: Path) -> None:
    images, keypoints = parse_training_csv(raw / "training.csv")
    want_images, want_keypoints = parse_training_csv(csv_dir / "training.csv")
    assert images.shape == (20, 96, 96)
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(keypoints, want_keypoints)
    test_images, ids = parse_test_csv(raw / "test.csv")
    assert test_images.shape == (4, 96, 96) and ids.tolist() == [1, 2, 3, 4]
    assert (raw / "IdLookupTable.csv").read_bytes() == (csv_dir / "IdLookupTable.csv").read_bytes()


def assert_nothing_left(parent: Path) -> None:
    """A failed run leaves neither data/raw nor its temporary folder."""
    assert not parent.exists() or list(parent.iterdir()) == []


# -- local and synthetic sources (in-process) --------------------------------------------------------
def test_local_zip_is_unpacked_and_checked(competition_zip, csv_dir, tmp_path):
    out = tmp_path / "data" / "raw"
    summary = fetch_raw(local(competition_zip), SYNTHETIC, out)
    assert {p.name for p in out.iterdir()} == RAW_NAMES  # SampleSubmission.csv is not needed
    assert summary["training.csv"]["rows"] == 20 and summary["test.csv"]["rows"] == 4
    assert summary["training.csv"]["bytes"] == (csv_dir / "training.csv").stat().st_size
    assert_same_data(out, csv_dir)
    assert [p.name for p in out.parent.iterdir()] == ["raw"]  # no temp folder left beside it


@pytest.mark.parametrize("layout", ["csv", "inner_zips"])
def test_local_folder(layout, csv_dir, tmp_path):
    folder = tmp_path / "by_hand"
    folder.mkdir()
    members = kaggle_layout(csv_dir)
    if layout == "csv":
        for name in RAW_NAMES:
            shutil.copy(csv_dir / name, folder / name)
    else:
        for name, data in members.items():
            (folder / name).write_bytes(data)
    out = tmp_path / "data" / "raw"
    fetch_raw(local(folder), SYNTHETIC, out)
    assert_same_data(out, csv_dir)


def test_relative_path_is_relative_to_the_project_root(competition_zip, csv_dir, tmp_path, monkeypatch):
    shutil.copy(competition_zip, tmp_path / "download.zip")
    monkeypatch.chdir(tmp_path)
    fetch_raw(local("download.zip"), SYNTHETIC, "data/raw")
    assert_same_data(tmp_path / "data" / "raw", csv_dir)


def test_existing_output_is_replaced(competition_zip, tmp_path):
    out = tmp_path / "data" / "raw"
    out.mkdir(parents=True)
    (out / "stale.csv").write_text("old")
    fetch_raw(local(competition_zip), SYNTHETIC, out)
    assert {p.name for p in out.iterdir()} == RAW_NAMES


def test_missing_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match=r"data.path: competition/nowhere.zip does not exist \(looked at .*/competition/nowhere.zip\)"):
        fetch_raw(local("nowhere.zip"), SYNTHETIC, tmp_path / "data" / "raw")
    assert_nothing_left(tmp_path / "data")


@pytest.fixture(scope="module")
def broken_zips(csv_dir: Path, competition_zip: Path) -> dict[str, tuple[bytes, str]]:
    """Name -> (zip bytes, expected error pattern)."""
    good = competition_zip.read_bytes()
    members = kaggle_layout(csv_dir)
    no_test = {k: v for k, v in members.items() if k != "test.zip"}
    header = (csv_dir / "training.csv").read_bytes().split(b"\n", 1)
    cols = header[0].split(b",")
    swapped = b",".join([cols[1], cols[0], *cols[2:]]) + b"\n" + header[1]
    header_only = header[0] + b"\n"
    # flip bytes in the middle of training.zip's stored data: CRC or inflate fails
    damaged_inner = bytearray(members["training.zip"])
    for i in range(len(damaged_inner) // 2, len(damaged_inner) // 2 + 8):
        damaged_inner[i] ^= 0xFF
    stored = io.BytesIO()
    with zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zf:
        for name, data in {**members, "training.zip": bytes(damaged_inner)}.items():
            zf.writestr(name, data)
    return {
        "truncated": (good[: len(good) // 2], r"\.zip: not a valid zip file \(truncated"),
        "not_a_zip": (b"<html>Please sign in</html>", r"\.zip: not a valid zip file"),
        "missing_member": (_zip_bytes(no_test), r"\.zip: missing test\.csv \(or test\.zip\); the zip holds: IdLookupTable\.csv"),
        "wrong_header": (
            _zip_bytes({**members, "training.zip": _zip_bytes({"training.csv": swapped})}),
            r"training\.zip/training\.csv: row 0 \(header\): columns are out of order: "
            r"column 1 is 'left_eye_center_y', expected 'left_eye_center_x'",
        ),
        "no_rows": (
            _zip_bytes({**members, "training.zip": _zip_bytes({"training.csv": header_only})}),
            r"training\.zip/training\.csv: no data rows",
        ),
        "damaged_member": (stored.getvalue(), r"\.zip/training\.zip: training\.csv is damaged|\.zip: training\.zip is damaged"),
    }


def _lookup_with(csv_dir: Path, row: int, column: str, value: str) -> bytes:
    lines = (csv_dir / "IdLookupTable.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    "column,value,pattern",
    [
        ("FeatureName", "nose_tipx", r"\.zip/IdLookupTable\.csv: row 3 \(RowId 3\): unknown FeatureName 'nose_tipx'"),
        ("ImageId", "77", r"\.zip/IdLookupTable\.csv: row 3 \(RowId 3\): ImageId 77 is not in test\.csv"),
    ],
)
def test_lookup_table_that_does_not_match_test_csv_is_caught_at_download(csv_dir, tmp_path, column, value, pattern):
    members = {**kaggle_layout(csv_dir), "IdLookupTable.csv": _lookup_with(csv_dir, 3, column, value)}
    bad = tmp_path / f"{COMPETITION}.zip"
    bad.write_bytes(_zip_bytes(members))
    with pytest.raises(DataError, match=pattern) as err:
        fetch_raw(local(bad), SYNTHETIC, tmp_path / "data" / "raw")
    assert f"competition/{bad.name}" in str(err.value)
    assert_nothing_left(tmp_path / "data")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_folders_are_removed_and_live_ones_kept(tmp_path):
    data_dir = tmp_path / "data"
    stale = [data_dir / f".raw.{_dead_pid()}.k1ll3d_x.tmp", data_dir / ".raw.0ld_n4me.tmp"]  # a dead pid; no pid (older runs)
    kept = [data_dir / f".raw.{os.getpid()}.running.tmp", data_dir / ".raw.1.2.3.tmp", data_dir / ".rawdata.7.x.tmp",
            data_dir / ".other.1.x.tmp"]
    for folder in stale + kept:
        (folder / "raw").mkdir(parents=True)
        (folder / "raw" / "training.csv").write_text("partial")
    (data_dir / f".raw.{_dead_pid()}.afile.tmp").write_text("a file, not a staging folder")
    data = DataParams(source="synthetic", path="unused", competition=COMPETITION, label_offset_x="auto")
    fetch_raw(data, SYNTHETIC, data_dir / "raw")
    assert not any(folder.exists() for folder in stale)
    assert all((folder / "raw" / "training.csv").exists() for folder in kept)
    assert (data_dir / "raw" / "training.csv").exists()


def test_killed_download_leaves_a_staging_folder_that_the_next_run_removes_and_git_ignores(tmp_path):
    project = make_project(tmp_path, source="synthetic")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["synthetic"]["n_train"] = 100_000  # minutes of drawing: it is killed long before
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.Popen([sys.executable, "-m", "stages.download", "data/raw"], cwd=project,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list((project / "data").glob(".raw.*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    (staging,) = (project / "data").glob(".raw.*.tmp")
    assert staging.name.startswith(f".raw.{proc.pid}.")

    env = {**os.environ, "GIT_DIR": str(tmp_path / "git"), "GIT_WORK_TREE": str(project)}
    subprocess.run(["git", "init", "-q"], env=env, check=True)
    shutil.copy(ROOT / ".gitignore", project / ".gitignore")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(staging / "raw" / "training.csv")], env=env, cwd=project)
    assert ignored.returncode == 0, f"{staging} is not ignored by .gitignore"

    data = DataParams(source="synthetic", path="unused", competition=COMPETITION, label_offset_x="auto")
    fetch_raw(data, SYNTHETIC, project / "data" / "raw")
    assert [p.name for p in (project / "data").iterdir()] == ["raw"]


@pytest.mark.parametrize("case", ["truncated", "not_a_zip", "missing_member", "wrong_header", "no_rows", "damaged_member"])
def test_bad_zip_is_a_clear_error_and_leaves_nothing(case, broken_zips, tmp_path):
    data, pattern = broken_zips[case]
    bad = tmp_path / f"{COMPETITION}.zip"
    bad.write_bytes(data)
    with pytest.raises(DataError, match=pattern) as err:
        fetch_raw(local(bad), SYNTHETIC, tmp_path / "data" / "raw")
    assert f"competition/{bad.name}" in str(err.value)  # names the file
    assert_nothing_left(tmp_path / "data")


def test_folder_missing_file(csv_dir, tmp_path):
    folder = tmp_path / "by_hand"
    folder.mkdir()
    shutil.copy(csv_dir / "training.csv", folder)
    with pytest.raises(DataError, match=r"by_hand: missing test\.csv \(or test\.zip\); the folder holds: training\.csv"):
        fetch_raw(local(folder), SYNTHETIC, tmp_path / "data" / "raw")
    assert_nothing_left(tmp_path / "data")


def test_synthetic_source(tmp_path):
    data = DataParams(source="synthetic", path="unused", competition=COMPETITION, label_offset_x="auto")
    summary = fetch_raw(data, SYNTHETIC, tmp_path / "raw")
    assert summary["training.csv"]["rows"] == 6 and summary["test.csv"]["rows"] == 2
    images, _ = parse_training_csv(tmp_path / "raw" / "training.csv")
    assert images.shape == (6, 96, 96)
    assert check_raw_dir(tmp_path / "raw") == summary


# -- the official kaggle client against the loopback server (subprocesses: the client reads env at import) --
def make_project(tmp_path: Path, source: str = "kaggle") -> Path:
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deep_update(params, {"data": {"source": source, "competition": COMPETITION}})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def run_py(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def run_download(project: Path, env: dict) -> subprocess.CompletedProcess:
    return run_py(["-m", "stages.download", "data/raw"], project, env)


def assert_no_secret(server: KaggleServer, proc: subprocess.CompletedProcess, project: Path) -> None:
    assert server.key not in proc.stdout + proc.stderr
    for path in project.rglob("*"):
        if path.is_file():
            assert server.key.encode() not in path.read_bytes(), path


def assert_failed(proc: subprocess.CompletedProcess, project: Path) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (project / "data" / "raw").exists()
    assert_nothing_left(project / "data")
    return proc.stderr.strip().splitlines()[-1]


def test_kaggle_download(kaggle_server, competition_zip, csv_dir, tmp_path):
    kaggle_server.add_competition(COMPETITION, competition_zip.read_bytes())
    project = make_project(tmp_path)
    proc = run_download(project, kaggle_server.client_env(tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr
    assert_same_data(project / "data" / "raw", csv_dir)
    assert [p.name for p in (project / "data").iterdir()] == ["raw"]  # the downloaded zip is gone
    (call,) = kaggle_server.calls("DownloadDataFiles")
    assert call.json() == {"competitionName": COMPETITION}
    assert call.headers["authorization"].startswith("Basic ")
    assert len(kaggle_server.calls("files")) == 1
    assert "source: kaggle" in proc.stderr and "training.csv: 20 rows" in proc.stderr
    assert_no_secret(kaggle_server, proc, project)


def test_kaggle_401_bad_key(kaggle_server, competition_zip, tmp_path):
    kaggle_server.add_competition(COMPETITION, competition_zip.read_bytes())
    home = tmp_path / "home"
    env = kaggle_server.client_env(home, credentials=False)
    kaggle_server.write_kaggle_json(home, key="wrong-key-9876543210")  # credentials from the file this time
    proc = run_download(make_project(tmp_path), env)
    line = assert_failed(proc, tmp_path / "project")
    assert line.startswith("error: kaggle: 401 Unauthorized") and "https://www.kaggle.com/settings" in line
    assert "wrong-key-9876543210" not in proc.stdout + proc.stderr
    assert kaggle_server.calls("DownloadDataFiles")  # it did ask, with the file's key


def test_kaggle_403_rules_not_accepted(kaggle_server, competition_zip, tmp_path):
    kaggle_server.add_competition(COMPETITION, competition_zip.read_bytes())
    kaggle_server.fail("DownloadDataFiles", 403)
    proc = run_download(make_project(tmp_path), kaggle_server.client_env(tmp_path / "home"))
    line = assert_failed(proc, tmp_path / "project")
    assert "403" in line and "accept the competition rules at https://www.kaggle.com/c/facial-keypoints-detection/rules" in line
    assert_no_secret(kaggle_server, proc, tmp_path / "project")


def test_kaggle_server_unreachable(tmp_path):
    with KaggleServer() as server:
        env = server.client_env(tmp_path / "home")
    proc = run_download(make_project(tmp_path), env)  # the port is closed now: connection refused
    line = assert_failed(proc, tmp_path / "project")
    assert "cannot reach the Kaggle API" in line and "data.source=local" in line
    assert server.key not in proc.stdout + proc.stderr


def test_kaggle_no_credentials(kaggle_server, tmp_path):
    home = tmp_path / "home"
    proc = run_download(make_project(tmp_path), kaggle_server.client_env(home, credentials=False))
    line = assert_failed(proc, tmp_path / "project")
    assert "no credentials found" in line and str(home / ".kaggle" / "kaggle.json") in line and "KAGGLE_KEY" in line
    assert kaggle_server.requests == []


# -- submissions ------------------------------------------------------------------------------------
SUBMIT = "from fkd.core.cli import run_stage; from fkd.sources.kaggle_client import submit_to_kaggle; run_stage(lambda a: submit_to_kaggle(*a))"


def test_submit_uploads_file_and_message(kaggle_server, tmp_path):
    csv = tmp_path / "submission.csv"
    csv.write_bytes(b"RowId,Location\n1,66.03\n2,39.00\n")
    proc = run_py(["-c", SUBMIT, str(csv), COMPETITION, "resnet+cnn ensemble"], tmp_path, kaggle_server.client_env(tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr
    (sub,) = kaggle_server.submissions
    assert sub.content == csv.read_bytes()
    assert (sub.competition, sub.file_name, sub.message) == (COMPETITION, "submission.csv", "resnet+cnn ensemble")
    (start,) = kaggle_server.calls("StartSubmissionUpload")
    assert start.json()["contentLength"] == csv.stat().st_size
    assert "Successfully submitted" in proc.stderr
    assert kaggle_server.key not in proc.stdout + proc.stderr


def test_submit_403(kaggle_server, tmp_path):
    csv = tmp_path / "submission.csv"
    csv.write_text("RowId,Location\n1,66.03\n")
    kaggle_server.fail("StartSubmissionUpload", 403)
    proc = run_py(["-c", SUBMIT, str(csv), COMPETITION, "m"], tmp_path, kaggle_server.client_env(tmp_path / "home"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "accept the competition rules at https://www.kaggle.com/c/facial-keypoints-detection/rules" in proc.stderr
    assert kaggle_server.submissions == []
