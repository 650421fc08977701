"""The Kaggle submission: one ``RowId,Location`` row per IdLookupTable row, in each image's marking scheme.

An image whose lookup rows ask only for the partial features (Kaggle: the 8 coordinates of eye
centres, nose tip and bottom lip) is scored in scheme B, so it gets the scheme-B nose tip and bottom
lip; an image asked for more (Kaggle: all 30) is scheme A. Predictions are clipped to the image,
[0, 96]. The CSV text is parsed back and checked against the lookup table (count, RowIds in order,
finite values in range) before it is written, atomically.
"""
from __future__ import annotations

import io
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from fkd.core.data import DataError, Lookup
from fkd.evaluation.inference import ModelFn
from fkd.core.errors import PredictionError
from fkd.models.registry import check_predictions
from fkd.core.io import atomic_path
from fkd.core.keypoints import COLUMNS, PARTIAL_KEYPOINTS, from_extended, shift_x

log = logging.getLogger("fkd.evaluation.submit")

SUBMISSION_HEADER = ("RowId", "Location")
LOCATION_RANGE = (0.0, 96.0)
#: The coordinates a scheme-B (partial) image may be asked for.
PARTIAL_COLUMNS = frozenset(f"{name}_{axis}" for name in PARTIAL_KEYPOINTS for axis in ("x", "y"))


def scheme_b_images(lookup: Lookup) -> dict[int, bool]:
    """ImageId -> True when all its lookup rows ask for partial features only (scheme B)."""
    partial = np.array([COLUMNS[j] in PARTIAL_COLUMNS for j in lookup.features])
    out: dict[int, bool] = {}
    for image_id, is_partial in zip(lookup.image_ids.tolist(), partial.tolist()):
        out[image_id] = out.get(image_id, True) and is_partial
    return out


def predict_locations(lookup: Lookup, test_images: np.ndarray, test_ids: np.ndarray, predict: ModelFn,
                      label_offset_x: float = 0.0) -> np.ndarray:
    """Location (M,) for every lookup row: the model's keypoint in the image's scheme, its x moved by
    ``label_offset_x`` back into the labels' frame (:mod:`fkd.core.label_offset`), clipped to [0, 96]."""
    position = {int(image_id): i for i, image_id in enumerate(np.asarray(test_ids).tolist())}
    unknown = [i for i, image_id in enumerate(lookup.image_ids.tolist()) if image_id not in position]
    if unknown:
        i = unknown[0]
        raise DataError(f"{lookup.where(i)}: ImageId {lookup.image_ids[i]} is not in test.csv "
                        f"({len(unknown)} lookup rows name images test.csv lacks)")
    schemes = scheme_b_images(lookup)
    asked = np.array(sorted(schemes, key=position.get))  # images the lookup asks for, in test order
    # only the values the lookup asks for must be finite (checked below, naming the row)
    pred = check_predictions(predict(test_images[[position[i] for i in asked.tolist()]]), len(asked), "the model", finite=False)
    coords = from_extended(shift_x(pred, label_offset_x), np.array([schemes[i] for i in asked.tolist()]))
    row_of = {image_id: k for k, image_id in enumerate(asked.tolist())}
    values = coords[[row_of[i] for i in lookup.image_ids.tolist()], lookup.features]
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise PredictionError(f"the model predicted a non-finite value for {lookup.where(int(bad[0]))} "
                              f"({COLUMNS[lookup.features[bad[0]]]}) and {bad.size - 1} more rows")
    return np.clip(values, *LOCATION_RANGE)


def format_submission(row_ids: np.ndarray, locations: np.ndarray) -> str:
    """Kaggle's submission text: header ``RowId,Location``, one row per lookup row."""
    lines = [",".join(SUBMISSION_HEADER)]
    lines += [f"{rid},{loc:.4f}" for rid, loc in zip(np.asarray(row_ids).tolist(), np.asarray(locations).tolist())]
    return "\n".join(lines) + "\n"


def check_submission(text: str, lookup: Lookup, label: str = "submission") -> None:
    """Parse submission ``text`` back and check it answers ``lookup`` exactly: header, count, RowIds in order, finite, in range."""
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if tuple(table.columns) != SUBMISSION_HEADER:
        raise ValueError(f"{label}: header is {','.join(table.columns)}, expected {','.join(SUBMISSION_HEADER)}")
    if len(table) != len(lookup):
        raise ValueError(f"{label}: {len(table)} rows, but {lookup.path} has {len(lookup)}")
    row_ids = pd.to_numeric(table["RowId"], errors="coerce").to_numpy()
    mismatch = np.flatnonzero(row_ids != lookup.row_ids)
    if mismatch.size:
        i = int(mismatch[0])
        raise ValueError(f"{label}: row {i + 1} has RowId {table['RowId'].iloc[i]}, expected {lookup.row_ids[i]} ({lookup.where(i)})")
    locations = pd.to_numeric(table["Location"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(locations) | (locations < LOCATION_RANGE[0]) | (locations > LOCATION_RANGE[1]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{label}: row {i + 1} (RowId {lookup.row_ids[i]}): Location {table['Location'].iloc[i]!r} "
                         f"is not a number in [{LOCATION_RANGE[0]:g}, {LOCATION_RANGE[1]:g}]")


def write_submission(path: str | Path, lookup: Lookup, locations: np.ndarray) -> None:
    """Check the submission text against ``lookup``, then write it atomically to ``path``."""
    text = format_submission(lookup.row_ids, locations)
    check_submission(text, lookup, str(path))
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def git_commit(cwd: str | Path = ".") -> str | None:
    """The short commit hash of ``cwd``'s git HEAD, or None outside a git repository."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def submission_message(message: str, model: str, tta_flip: bool, exp_name: str | None = None, commit: str | None = None) -> str:
    """Kaggle's submission description: params ``submit.message``, the model, and the experiment and commit it came from."""
    parts = [message.strip() or "fkd submission", f"model {model}{' + TTA' if tta_flip else ''}"]
    if exp_name:
        parts.append(f"exp {exp_name}")
    if commit:
        parts.append(f"commit {commit}")
    return "; ".join(parts)


def experiment_message(message: str, model: str, tta_flip: bool) -> str:
    """:func:`submission_message` for this run: DVC_EXP_NAME (set by ``dvc exp run``) and the git HEAD."""
    return submission_message(message, model, tta_flip, os.environ.get("DVC_EXP_NAME"), git_commit())
