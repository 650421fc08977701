"""The run's ``keypoints.csv``: one row per face (or per photo without one), in the photo's pixels."""
from __future__ import annotations

from pathlib import Path

from fkd.core.io import atomic_path
from fkd.core.keypoints import COLUMNS
from fkd.predict.chain import FaceResult

CSV_NAME = "keypoints.csv"
CSV_COLUMNS = ("image", "face", "box_x", "box_y", "box_w", "box_h", *COLUMNS)


def is_own_csv(path: Path) -> bool:
    """Whether ``path`` is a keypoints.csv this command wrote (it starts with :data:`CSV_COLUMNS`'s header)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.readline(64 * 1024).rstrip("\r\n") == ",".join(CSV_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def csv_rows(image: str, results: list[FaceResult]) -> list[dict]:
    """CSV rows of one photo: one per face, or one with empty fields when no face was found."""
    if not results:
        return [{"image": image}]
    rows = []
    for i, r in enumerate(results):
        row = {"image": image, "face": i, "box_x": r.box.x, "box_y": r.box.y, "box_w": r.box.w, "box_h": r.box.h}
        row.update(zip(COLUMNS, r.keypoints))
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    """The rows of :func:`csv_rows` as ``path`` (:data:`CSV_COLUMNS`, two decimals), atomically."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    frame["face"] = frame["face"].astype("Int64")
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.2f")
