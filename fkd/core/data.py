"""Kaggle CSVs -> numpy arrays, and the train/validation split.

Parsing is the hot path of the data stages: a Kaggle-sized training.csv (7,049 rows,
~230 MB) parses in about a second because the pixel strings are cut out of the raw bytes
and converted per row as small integers, never as Python objects or float64.
"""
from __future__ import annotations

import codecs
import io
import mmap
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fkd.core.config import ParamsError
from fkd.core.errors import FkdError
from fkd.core.io import save_npy
from fkd.core.keypoints import COLUMNS, complete_mask, shift_x

IMAGE_SIZE = 96
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
TRAIN_FILE, TEST_FILE, LOOKUP_FILE = "training.csv", "test.csv", "IdLookupTable.csv"


class DataError(FkdError, ValueError):
    """Bad input data; the message names the file, the row and the problem."""


#: Byte-order marks of the encodings a spreadsheet may save a CSV in instead of UTF-8 (UTF-32's before UTF-16's,
#: whose little-endian mark starts UTF-32's).
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def check_utf8(label: str, data: bytes, row: int = 0) -> None:
    """:class:`DataError` naming the problem if ``data``, the text of file ``label`` from row ``row`` on (0: the
    header), is not UTF-8; a UTF-8 byte-order mark is fine."""
    def fail(problem: str) -> DataError:
        return DataError(f"{label}: not UTF-8 text ({problem}); save it as UTF-8")

    if row == 0:
        for bom, name in _BOMS:
            if data.startswith(bom):
                raise fail(f"looks like {name}: it starts with a byte-order mark")
    nul = data.find(b"\0")
    if nul >= 0:
        line = row + data.count(b"\n", 0, nul)
        raise fail(f"looks like UTF-16 or UTF-32: row {line} has NUL bytes between its characters")
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = row + data.count(b"\n", 0, exc.start)
        raise fail(f"row {line} has byte 0x{data[exc.start]:02X}, which UTF-8 does not allow there; "
                   "it may be Latin-1 or Windows-1252") from None


def _lines(path: Path) -> tuple[list[str], list[bytes]]:
    """Header names and the data rows as bytes (read through mmap: rows are copied once, small)."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise DataError(f"{path}: the file is empty")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            end = mm.find(b"\n")
            end = len(mm) if end < 0 else end
            check_utf8(str(path), mm[:end])
            header = mm[:end].decode("utf-8").strip().lstrip("\ufeff").split(",")
            rows, pos, size = [], end + 1, len(mm)
            while pos < size:
                end = mm.find(b"\n", pos)
                end = size if end < 0 else end
                rows.append(mm[pos : end - 1] if mm[end - 1 : end] == b"\r" else mm[pos:end])
                pos = end + 1
    while rows and not rows[-1].strip():
        rows.pop()
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    for i, row in enumerate(rows):
        if not row.isascii() or b"\0" in row:  # Kaggle's rows are ASCII: only the odd row is looked at closer
            check_utf8(str(path), row, i + 1)
    return [h.strip().strip('"') for h in header], rows


def check_header(label: str | Path, found: Sequence[str], expected: Sequence[str]) -> None:
    """:class:`DataError` naming the first difference unless the header ``found`` of file ``label`` is ``expected``."""
    found, expected = list(found), list(expected)
    if found == expected:
        return
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing:
        raise DataError(f"{label}: row 0 (header): missing column '{missing[0]}'" + (f"; unexpected column '{extra[0]}'" if extra else ""))
    if extra:
        raise DataError(f"{label}: row 0 (header): unexpected column '{extra[0]}'")
    i = next((i for i, (f, e) in enumerate(zip(found, expected)) if f != e), len(expected))
    if i == len(expected):  # the expected columns, then one of them again
        raise DataError(f"{label}: row 0 (header): column {i + 1} '{found[i]}' repeats an earlier one")
    raise DataError(f"{label}: row 0 (header): columns are out of order: column {i + 1} is '{found[i]}', expected '{expected[i]}'")


def _parse_pixels(path: Path, images: list[bytes]) -> np.ndarray:
    """Pixel strings -> uint8 (N, 96, 96); rows are numbered from 1 after the header."""
    out = np.empty((len(images), N_PIXELS), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fromstring warns on text it cannot read
        for i, text in enumerate(images):
            if text[:1] in b' "' or text[-1:] in b' "':  # quoted or padded; rare, so strip only then
                text = text.strip().strip(b'"')
            n = text.count(b" ") + 1 if text else 0
            if n != N_PIXELS:
                raise DataError(f"{path}: row {i + 1}: Image has {n} pixel values, expected {N_PIXELS}")
            try:
                values = np.fromstring(text, dtype=np.int16, sep=" ")
            except ValueError:  # numpy >= 2.3 raises where older versions warned and stopped early
                values = np.zeros(0, np.int16)
            if values.size != N_PIXELS:
                tokens = text.split(b" ")
                j = next(k for k, t in enumerate(tokens) if not t.isdigit())
                raise DataError(f"{path}: row {i + 1}: pixel {j + 1} is not a number: {tokens[j].decode(errors='replace')!r}")
            if values.min() < 0 or values.max() > 255:
                j = int(np.flatnonzero((values < 0) | (values > 255))[0])
                raise DataError(f"{path}: row {i + 1}: pixel {j + 1} is {int(values[j])}, outside 0-255")
            out[i] = values
    return out.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def _split_last_field(path: Path, rows: list[bytes], n_fields: int) -> tuple[list[bytes], list[bytes]]:
    heads, tails = [], []
    for i, row in enumerate(rows):
        cut = row.rfind(b",")
        if row.count(b",", 0, max(cut, 0)) != n_fields - 2 or cut < 0:
            raise DataError(f"{path}: row {i + 1}: expected {n_fields} fields, found {row.count(b',') + 1}")
        heads.append(row[:cut])
        tails.append(row[cut + 1 :])
    return heads, tails


def parse_training_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """training.csv -> images uint8 (N, 96, 96), keypoints float32 (N, 30) with NaN where missing."""
    path = Path(path)
    header, rows = _lines(path)
    check_header(path, header, [*COLUMNS, "Image"])
    heads, images = _split_last_field(path, rows, len(COLUMNS) + 1)
    try:
        kp = pd.read_csv(io.BytesIO(b"\n".join(heads)), header=None, names=list(COLUMNS), dtype=np.float64, skip_blank_lines=False)
    except ValueError:
        kp = pd.read_csv(io.BytesIO(b"\n".join(heads)), header=None, names=list(COLUMNS), dtype=str, skip_blank_lines=False)
        for col in COLUMNS:
            bad = pd.to_numeric(kp[col], errors="coerce").isna() & kp[col].notna()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{path}: row {i + 1}: {col} is not a number: {kp[col].iloc[i]!r}") from None
        raise DataError(f"{path}: the keypoint columns cannot be read as numbers; check the file's quoting") from None
    keypoints = kp.to_numpy(dtype=np.float32)
    # NaN is a missing label; inf and points off the 96x96 image are errors (checked on the float32 kept)
    with np.errstate(invalid="ignore"):
        off = ~np.isnan(keypoints) & ~((keypoints >= 0) & (keypoints < IMAGE_SIZE))
    if off.any():
        i, j = (int(v) for v in np.argwhere(off)[0])
        value = float(kp.iloc[i, j])
        stored = f" ({float(keypoints[i, j])!r} as float32)" if 0 <= value < IMAGE_SIZE else ""
        raise DataError(f"{path}: row {i + 1}: {COLUMNS[j]} is {value!r}{stored}, outside the image [0, {IMAGE_SIZE}); "
                        f"fix the label or leave it empty (missing)")
    empty = np.flatnonzero(np.isnan(keypoints).all(axis=1))
    if len(empty):
        raise DataError(f"{path}: row {empty[0] + 1}: no keypoint is labelled")
    return _parse_pixels(path, images), keypoints


def parse_test_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """test.csv -> images uint8 (N, 96, 96) and ImageIds int64 (N,)."""
    path = Path(path)
    ids, images = _test_rows(path)
    return _parse_pixels(path, images), ids


def read_test_ids(path: str | Path) -> np.ndarray:
    """test.csv's ImageIds int64 (N,), checked (integers, unique) without converting the pixels."""
    return _test_rows(Path(path))[0]


def _test_rows(path: Path) -> tuple[np.ndarray, list[bytes]]:
    header, rows = _lines(path)
    check_header(path, header, ["ImageId", "Image"])
    heads, images = _split_last_field(path, rows, 2)
    ids = []
    for i, h in enumerate(heads):
        try:
            ids.append(int(h))
        except ValueError:
            raise DataError(f"{path}: row {i + 1}: ImageId is not an integer: {h.decode(errors='replace')!r}") from None
    ids = np.array(ids, dtype=np.int64)
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        rows_ = np.flatnonzero(ids == dup) + 1
        raise DataError(f"{path}: row {rows_[1]}: duplicate ImageId {dup} (first at row {rows_[0]})")
    return ids, images


LOOKUP_HEADER = ("RowId", "ImageId", "FeatureName", "Location")


@dataclass(frozen=True)
class Lookup:
    """IdLookupTable.csv: per row its RowId, ImageId and the column index of its FeatureName in :data:`COLUMNS`."""

    path: str  # as named in error messages
    row_ids: np.ndarray
    image_ids: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.row_ids)

    def where(self, i: int) -> str:
        """Where lookup row ``i`` is, for error messages (file line 1 is the header)."""
        return f"{self.path}: row {i + 1} (RowId {self.row_ids[i]})"


def read_lookup(path: str | Path, label: str | None = None) -> Lookup:
    """Read and check IdLookupTable.csv: header, integer RowIds (unique) and ImageIds, and a FeatureName
    that is a training.csv keypoint column. ``label`` names the file in errors (default: its path)."""
    path = Path(path)
    label = label or str(path)
    try:
        text = path.read_bytes()
        check_utf8(label, text)
        table = pd.read_csv(io.BytesIO(text), dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{label}: cannot read the lookup table: {exc}") from None
    header = tuple(c.strip() for c in table.columns)
    if header != LOOKUP_HEADER:
        raise DataError(f"{label}: row 0 (header): expected {','.join(LOOKUP_HEADER)}, found {','.join(header)}")
    if table.empty:
        raise DataError(f"{label}: no rows after the header")
    ids = {}
    for col in ("RowId", "ImageId"):
        text = table[col].str.strip()
        good = text.str.fullmatch(r"[+-]?\d{1,18}")  # int64 holds 18 digits
        if not good.all():
            i = int(np.flatnonzero(~good.to_numpy())[0])
            raise DataError(f"{label}: row {i + 1}: {col} is not an integer: {table[col].iloc[i]!r}")
        ids[col] = text.astype(np.int64).to_numpy()
    _, first, counts = np.unique(ids["RowId"], return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = ids["RowId"][first[counts > 1][0]]
        where = np.flatnonzero(ids["RowId"] == dup) + 1
        raise DataError(f"{label}: row {where[1]}: duplicate RowId {dup} (first at row {where[0]})")
    names = table["FeatureName"].str.strip()
    unknown = ~names.isin(COLUMNS)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(f"{label}: row {i + 1} (RowId {ids['RowId'][i]}): unknown FeatureName {names.iloc[i]!r}; "
                        f"it must be one of training.csv's keypoint columns ({COLUMNS[0]}, ..., {COLUMNS[-1]})")
    column = {name: j for j, name in enumerate(COLUMNS)}
    features = np.array([column[name] for name in names.tolist()], dtype=np.int64)
    return Lookup(label, ids["RowId"], ids["ImageId"], features)


def check_lookup(path: str | Path, test_ids: np.ndarray, label: str | None = None) -> int:
    """:func:`read_lookup`, and every ImageId must be one of test.csv's ``test_ids``; returns the row count."""
    lookup = read_lookup(path, label)
    missing = ~np.isin(lookup.image_ids, np.asarray(test_ids))
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{lookup.where(i)}: ImageId {lookup.image_ids[i]} is not in test.csv "
                        f"({int(missing.sum())} lookup rows name images test.csv lacks); the two files do not belong together")
    return len(lookup)


def parse_raw(raw_dir: str | Path, out_dir: str | Path) -> dict:
    """Parse training.csv and test.csv (and check IdLookupTable.csv) from ``raw_dir`` into .npy files in ``out_dir``;
    returns counts, the training images' duplicates among them (:func:`duplicate_counts`)."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    images, keypoints = parse_training_csv(raw_dir / TRAIN_FILE)
    test_images, test_ids = parse_test_csv(raw_dir / TEST_FILE)
    check_lookup(raw_dir / LOOKUP_FILE, test_ids)  # submit needs it to match test.csv
    # nothing is written until all files parsed cleanly
    save_npy(out_dir / "train_images.npy", images)
    save_npy(out_dir / "train_keypoints.npy", keypoints)
    save_npy(out_dir / "test_images.npy", test_images)
    save_npy(out_dir / "test_ids.npy", test_ids)
    return {"train_rows": len(images), "complete_rows": int(complete_mask(keypoints).sum()), "test_rows": len(test_images),
            **duplicate_counts(duplicate_groups(images))}


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """For every row, the first row whose image is pixel-identical to its own (itself if none is): int64 (N,).

    Kaggle's training.csv repeats some images; the split keeps each group of copies in one fold."""
    first: dict[bytes, int] = {}
    return np.array([first.setdefault(image.tobytes(), i) for i, image in enumerate(images)], dtype=np.int64)


def duplicate_counts(groups: np.ndarray) -> dict[str, int]:
    """``duplicate_groups``: images that occur more than once; ``duplicate_rows``: the rows holding them (all copies)."""
    sizes = np.bincount(groups, minlength=len(groups))
    return {"duplicate_groups": int((sizes > 1).sum()), "duplicate_rows": int(sizes[sizes > 1].sum())}


def _centred_thumbnails(images: np.ndarray, block: int) -> np.ndarray:
    """Each image's (96/block)² thumbnail of block×block pixel sums, times its length minus its sum: float64 holding
    integers, so that products of two of them sum exactly (below 2**53 for block 4)."""
    side = IMAGE_SIZE // block
    sums = images.reshape(len(images), side, block, side, block).sum(axis=(2, 4), dtype=np.int64).reshape(len(images), -1)
    return (sums * sums.shape[1] - sums.sum(axis=1, keepdims=True)).astype(np.float64)


def thumbnail_correlation(images: np.ndarray, other: np.ndarray | None = None, block: int = 4,
                          chunk: int = 1024) -> np.ndarray:
    """Pearson correlation (N, M) float64 of the thumbnails of ``images`` with those of ``other`` (``images`` itself
    if None); a flat image correlates 0 with every image. Frames of one video score far above two people.

    With block 4 (24×24 thumbnails) the products are exact, so the figures are the same on any BLAS and the
    matrix of a set with itself is symmetric."""
    a = _centred_thumbnails(images, block)
    b = a if other is None else _centred_thumbnails(other, block)
    norm_a, norm_b = np.sqrt(np.einsum("ij,ij->i", a, a)), np.sqrt(np.einsum("ij,ij->i", b, b))
    out = np.zeros((len(a), len(b)), np.float64)
    for i in range(0, len(a), chunk):
        scale = np.outer(norm_a[i : i + chunk], norm_b)
        np.divide(a[i : i + chunk] @ b.T, scale, out=out[i : i + chunk], where=scale > 0)
    return out


def similar_groups(images: np.ndarray, copies: np.ndarray, min_corr: float) -> np.ndarray:
    """For every row, the first row of its group of look-alikes: images whose thumbnails all correlate at
    ``min_corr`` or more with each other (complete linkage, so no chain of look-alikes joins two different faces),
    with ``copies`` (:func:`duplicate_groups`) always together. ``min_corr`` 1 gives ``copies`` itself."""
    distinct = np.flatnonzero(copies == np.arange(len(copies)))  # one row per image
    if min_corr >= 1.0 or len(distinct) < 2:
        return copies
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distance = thumbnail_correlation(images[distinct])
    np.subtract(1.0, distance, out=distance)
    np.clip(distance, 0.0, 2.0, out=distance)
    np.fill_diagonal(distance, 0.0)
    labels = fcluster(linkage(squareform(distance, checks=False), "complete"), t=1.0 - min_corr, criterion="distance")
    del distance
    first: dict[int, int] = {}
    group_of_distinct = np.array([first.setdefault(label, row) for label, row in zip(labels.tolist(), distinct.tolist())],
                                 dtype=np.int64)
    return group_of_distinct[np.searchsorted(distinct, copies)]


def near_duplicate_counts(copies: np.ndarray, groups: np.ndarray) -> dict[str, int]:
    """``near_duplicate_groups``: groups of :func:`similar_groups` holding more than one distinct image;
    ``near_duplicate_rows``: the rows in them."""
    distinct = copies == np.arange(len(copies))
    images_per_group = np.bincount(groups[distinct], minlength=len(groups))
    rows_per_group = np.bincount(groups, minlength=len(groups))
    several = images_per_group > 1
    return {"near_duplicate_groups": int(several.sum()), "near_duplicate_rows": int(rows_per_group[several].sum())}


@dataclass(frozen=True)
class Part:
    """One part of the split: images uint8 (N, 96, 96), keypoints float32 (N, 30), source rows (N,)."""

    images: np.ndarray
    keypoints: np.ndarray
    rows: np.ndarray


def split_indices(keypoints: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split stratified by label completeness; returns sorted (train_rows, val_rows)."""
    if not 0.0 < val_fraction < 1.0:
        raise ParamsError(f"params: 'split.val_fraction' must be in (0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    complete = complete_mask(keypoints)
    val = []
    for group in (np.flatnonzero(complete), np.flatnonzero(~complete)):
        n_val = int(round(len(group) * val_fraction))
        if len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        val.append(rng.permutation(group)[:n_val])
    val_rows = np.sort(np.concatenate(val)).astype(np.int64)
    train_rows = np.setdiff1d(np.arange(len(keypoints)), val_rows).astype(np.int64)
    return train_rows, val_rows


def fold_assignment(keypoints: np.ndarray, folds: int, val_fraction: float, seed: int,
                    groups: np.ndarray | None = None) -> np.ndarray:
    """The validation fold of every row (N,): with ``folds`` 1, 0 for a held-out ``val_fraction`` of the rows
    and -1 (training only) for the rest (:func:`split_indices`); with ``folds`` K > 1, 0..K-1 for K
    near-equal folds. Both are seeded and stratified by label completeness.

    ``groups`` (:func:`duplicate_groups` or :func:`similar_groups`) keeps rows together: every row then takes the
    fold of its group's first row, so a duplicated image never sits on both sides. Without duplicates nothing moves."""
    fold = _assign_folds(keypoints, folds, val_fraction, seed)
    return fold if groups is None else fold[groups]


def _assign_folds(keypoints: np.ndarray, folds: int, val_fraction: float, seed: int) -> np.ndarray:
    if folds == 1:
        _, val_rows = split_indices(keypoints, val_fraction, seed)
        fold = np.full(len(keypoints), -1, dtype=np.int64)
        fold[val_rows] = 0
        return fold
    rng = np.random.default_rng(seed)
    fold = np.empty(len(keypoints), dtype=np.int64)
    offset = 0  # the second group continues the first's rotation, so fold sizes differ by at most one
    complete = complete_mask(keypoints)
    for group in (np.flatnonzero(complete), np.flatnonzero(~complete)):
        fold[rng.permutation(group)] = (offset + np.arange(len(group))) % folds
        offset += len(group)
    return fold


def write_split(prepared_dir: str | Path, out_dir: str | Path, val_fraction: float, seed: int, folds: int = 1,
                label_offset_x: float = 0.0, near_duplicate_corr: float = 1.0) -> dict:
    """Split the parsed training rows into ``out_dir``: ``images.npy``, ``keypoints.npy`` (the labelled rows, x moved
    by ``-label_offset_x`` onto the image features, see :mod:`fkd.core.label_offset`) and ``val_fold.npy``
    (:func:`fold_assignment`, pixel-identical images, and look-alikes at ``near_duplicate_corr`` below 1, kept in one
    fold: :func:`similar_groups`); :func:`load_fold` reads a fold's two parts from them. Returns the training and
    validation row counts of each fold, :func:`duplicate_counts` and :func:`near_duplicate_counts`."""
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    images = np.load(prepared_dir / "train_images.npy")
    keypoints = np.load(prepared_dir / "train_keypoints.npy")
    source = prepared_dir / "train_keypoints.npy"
    if folds > 1 and len(keypoints) < 2 * folds:
        raise DataError(f"{source}: {len(keypoints)} rows cannot make {folds} folds (at least 2 rows per fold); "
                        "list fewer split.folds or use more training rows")
    copies = duplicate_groups(images)
    groups = similar_groups(images, copies, near_duplicate_corr)
    duplicates = {**duplicate_counts(copies), **near_duplicate_counts(copies, groups)}
    fold = fold_assignment(keypoints, folds, val_fraction, seed, groups)
    counts = []
    for k in range(folds):
        n_val = int((fold == k).sum())
        for name, n in (("validation", n_val), ("training", len(fold) - n_val)):
            if n == 0:
                together = (f" ({duplicates['duplicate_rows']} rows are copies of {duplicates['duplicate_groups']} images, "
                            "each kept on one side)" if duplicates["duplicate_groups"] else "")
                if duplicates["near_duplicate_groups"]:
                    together += (f" ({duplicates['near_duplicate_rows']} rows are look-alikes in "
                                 f"{duplicates['near_duplicate_groups']} groups, each kept on one side; raise "
                                 "split.near_duplicate_corr to group fewer)")
                raise DataError(f"{source}: split.val_fraction {val_fraction} of {len(keypoints)} rows leaves 0 {name} rows"
                                f"{together}; change split.val_fraction or use more training rows")
        counts.append({"train": len(fold) - n_val, "val": n_val})
    save_npy(out_dir / "images.npy", images)
    save_npy(out_dir / "keypoints.npy", shift_x(keypoints, -label_offset_x))
    save_npy(out_dir / "val_fold.npy", fold)
    return {"folds": counts, **duplicates}


def _split_array(split_dir: Path, name: str, mmap_mode: str | None = None) -> np.ndarray:
    """``split_dir/name`` as the split stage wrote it, or :class:`DataError` saying which folder is meant."""
    path = split_dir / name
    if not path.is_file():
        where = ("folder" if split_dir.is_dir() else "folder, not a file" if split_dir.exists()
                 else "folder, which does not exist")
        raise DataError(f"{path}: not found; {split_dir} must be the split stage's output {where} "
                        "(data/split after `dvc repro split`)")
    return np.load(path, mmap_mode=mmap_mode)


def _fold_rows(split_dir: Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``fold``'s (train_rows, val_rows) from ``val_fold.npy``, or :class:`DataError` if the split has no such fold."""
    val_fold = _split_array(split_dir, "val_fold.npy")
    if not 0 <= fold <= val_fold.max(initial=0):
        raise DataError(f"{split_dir / 'val_fold.npy'}: has no fold {fold} (folds 0..{int(val_fold.max(initial=0))}): "
                        "re-run the split stage after changing split.folds")
    return np.flatnonzero(val_fold != fold).astype(np.int64), np.flatnonzero(val_fold == fold).astype(np.int64)


def load_fold(split_dir: str | Path, fold: int = 0, train_images: bool = True) -> tuple[Part, Part]:
    """Fold ``fold``'s (train, val) parts from the split stage's output folder, each file read once.
    With ``train_images=False`` the training part's images are an empty (0, 96, 96) array, for callers
    that need only its labels (the mean-shape baseline), so its images are never read."""
    split_dir = Path(split_dir)
    train_rows, val_rows = _fold_rows(split_dir, fold)
    keypoints = _split_array(split_dir, "keypoints.npy")
    pixels = _split_array(split_dir, "images.npy", mmap_mode="r")
    no_images = np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    train = Part(pixels[train_rows] if train_images else no_images, keypoints[train_rows], train_rows)
    return train, Part(pixels[val_rows], keypoints[val_rows], val_rows)
