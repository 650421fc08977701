"""download: the competition files -> ``data/raw`` (training.csv, test.csv, IdLookupTable.csv), checked.

Sources (params ``data.source``):
- ``kaggle``: the official client downloads the competition zip (see :mod:`fkd.sources.kaggle_client`);
- ``local``: ``data.path`` is that zip, or a folder with its files unpacked (training.csv and
  test.csv directly, or still as training.zip and test.zip);
- ``synthetic``: drawn faces (:func:`fkd.sources.synthetic.write_dataset`).

Kaggle's zip holds training.zip (-> training.csv), test.zip (-> test.csv), IdLookupTable.csv and
SampleSubmission.csv; only the first three are kept. Every member is read to its end, which makes
zipfile check its CRC, so a damaged or truncated archive is an error naming the file. Members that
declare more than :data:`MAX_UNPACKED_BYTES` or a compression ratio beyond :data:`MAX_RATIO` (a zip
bomb) are refused before any of their zip is unpacked, and no member is unpacked past
:data:`MAX_UNPACKED_BYTES` whatever its header says. Each CSV must be UTF-8 and carry Kaggle's header
and at least one row; IdLookupTable.csv must name only keypoint columns and test.csv's ImageIds. A
``data.path`` that is a link must lead inside ``competition/`` (or into DVC's cache). Everything is
built in a staging folder beside the output (``data/.raw.<pid>.<random>.tmp``, :func:`fkd.core.io.staged_dir`)
and renamed into place only after all checks passed: a failed run leaves no ``data/raw``. A run that
was killed cannot remove its staging folder; the next run removes the staging folders whose process is gone.
"""
from __future__ import annotations

import logging
import math
import shutil
import zipfile
import zlib
from pathlib import Path

from fkd.core.cli import StageError
from fkd.core.config import DataParams, ParamsError, SyntheticParams
from fkd.core.data import LOOKUP_FILE, TEST_FILE, TRAIN_FILE, DataError, check_header, check_lookup, check_utf8, read_test_ids
from fkd.core.io import staged_dir
from fkd.sources.kaggle_client import human_size
from fkd.core.keypoints import COLUMNS

log = logging.getLogger("fkd.sources.download")

#: The files the pipeline needs and the header each must have, in order.
RAW_FILES: dict[str, tuple[str, ...]] = {
    TRAIN_FILE: (*COLUMNS, "Image"),
    TEST_FILE: ("ImageId", "Image"),
    LOOKUP_FILE: ("RowId", "ImageId", "FeatureName", "Location"),
}
#: Kaggle ships these two zipped once more inside the competition zip.
INNER_ZIPS: dict[str, str] = {TRAIN_FILE: "training.zip", TEST_FILE: "test.zip"}
#: What reading a damaged zip can raise (bad CRC, truncated deflate stream, unknown method, ...).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError)
#: Limits on what the members of one zip may unpack to, together. Kaggle's largest file is training.csv,
#: ~228 MB; its pixel strings deflate ~3-5x. A zip bomb declares ~1000x (1 GiB from 1 MB).
MAX_UNPACKED_BYTES = 1 << 30
MAX_RATIO = 50
#: A member smaller than this may compress better than MAX_RATIO (a test.csv of blank images): it is not held to it.
RATIO_FREE_BYTES = 1 << 20


def fetch_raw(data: DataParams, synthetic: SyntheticParams, out_dir: str | Path) -> dict[str, dict[str, int]]:
    """Fetch, unpack and check the competition files into ``out_dir``; returns {file: {bytes, rows}}."""
    out_dir = Path(out_dir)
    local_path = resolve_local_path(data.path) if data.source == "local" else None  # a bad path writes nothing
    with staged_dir(out_dir) as raw:  # raw.parent: the private staging folder, removed with it
        log.info("source: %s", data.source)
        if data.source == "kaggle":
            from fkd.sources.kaggle_client import download_competition

            zip_path = download_competition(data.competition, raw.parent / "download")
            origins = unpack_competition_zip(zip_path, raw, label=f"downloaded {zip_path.name}")
        elif data.source == "local":
            origins = unpack_local(local_path, raw)
        elif data.source == "synthetic":
            log.info("drawing %d training and %d test faces (seed %d)", synthetic.n_train, synthetic.n_test, synthetic.seed)
            write_dataset(raw, synthetic)
            origins = {name: f"synthetic {name}" for name in RAW_FILES}
        else:  # config.py allows only the three above
            raise ParamsError(f"params: data.source must be kaggle, local or synthetic, got {data.source!r}")
        summary = check_raw_dir(raw, origins)
    for path in sorted(out_dir.iterdir()):
        rows = summary.get(path.name, {}).get("rows")
        log.info("wrote %s: %s%s", path, f"{rows:,} rows, " if rows is not None else "", human_size(path.stat().st_size))
    return summary


def write_dataset(out_dir: Path, p: SyntheticParams) -> None:
    from fkd.sources.synthetic import write_dataset as draw

    draw(out_dir, p.n_train, p.n_test, p.partial_fraction, p.seed)


#: Where a local competition zip lives: a folder of the repo that the download stage depends on, so a
#: DVC-tracked zip in it is hashed, cached, pushed and copied into every experiment's workspace.
COMPETITION_DIR = "competition"


def resolve_local_path(path: str) -> Path:
    """``data.path`` as a path inside :data:`COMPETITION_DIR` (relative to the project root, the stage's cwd)."""
    given = Path(path)
    inside = not given.is_absolute() and ".." not in given.parts and given.parts[:1] == (COMPETITION_DIR,)
    if not inside:
        raise ParamsError(
            f"params: 'data.path' is {path!r}, outside {COMPETITION_DIR}/: put the competition zip in the repo so DVC tracks it "
            f"(cp ZIP {COMPETITION_DIR}/ && dvc add {COMPETITION_DIR}/facial-keypoints-detection.zip) and set data.path to "
            f"{COMPETITION_DIR}/facial-keypoints-detection.zip"
        )
    resolved = Path.cwd() / given
    if not resolved.exists():
        raise StageError(
            f"data.path: {path} does not exist (looked at {resolved}); set it to the competition zip "
            "(facial-keypoints-detection.zip) or to a folder holding its files"
        )
    target = resolved.resolve()
    if not any(target.is_relative_to(root) for root in _allowed_roots(target)):
        raise ParamsError(
            f"params: 'data.path' {path} is a link to {target}, outside {COMPETITION_DIR}/ where DVC versions the data: "
            f"put the file itself there (cp --remove-destination {target} {path} && dvc add {path})"
        )
    return resolved


def _allowed_roots(target: Path) -> list[Path]:
    """Where a link in :data:`COMPETITION_DIR` may lead: inside it, or into the DVC cache (``cache.type: symlink``)."""
    roots = [Path.cwd().resolve() / COMPETITION_DIR]
    if not target.is_relative_to(roots[0]):  # only then is DVC's config worth reading
        dvc_dir = Path.cwd() / ".dvc"
        roots.append((dvc_dir / "cache").resolve())
        from dvc.config import Config
        from dvc.exceptions import DvcException

        try:
            configured = Config(dvc_dir=str(dvc_dir))["cache"].get("dir")
        except DvcException:  # an unreadable DVC config: the default cache only
            configured = None
        if configured:
            roots.append(Path(configured).resolve())
    return roots


def unpack_local(path: Path, out_dir: Path) -> dict[str, str]:
    """A competition zip or a folder -> the three CSVs in ``out_dir``; returns {file: where it came from}."""
    if path.is_dir():
        log.info("local: copying from folder %s", path)
        return copy_competition_folder(path, out_dir)
    log.info("local: unpacking %s: %s", path, human_size(path.stat().st_size))
    return unpack_competition_zip(path, out_dir)


def unpack_competition_zip(zip_path: str | Path, out_dir: str | Path, label: str | None = None) -> dict[str, str]:
    """Kaggle's competition zip -> training.csv, test.csv, IdLookupTable.csv in ``out_dir``.

    A CSV may sit in the zip directly or, as Kaggle ships it, inside training.zip/test.zip.
    ``label`` names the zip in errors (default: its path). Returns {file: where it came from},
    e.g. ``x.zip/training.zip/training.csv``.
    """
    zip_path, out_dir = Path(zip_path), Path(out_dir)
    label = label or str(zip_path)
    origins = {}
    with _open_zip(zip_path, label) as zf:
        members = {}  # file -> (its member, whether that is the inner zip holding it)
        for name in RAW_FILES:
            member = _find_member(zf, name)
            if member is not None:
                members[name] = member, False
                continue
            inner = INNER_ZIPS.get(name)
            inner_member = _find_member(zf, inner) if inner else None
            if inner_member is None:
                raise DataError(f"{label}: missing {name}{f' (or {inner})' if inner else ''}; the zip holds: {_listing(zf.namelist())}")
            members[name] = inner_member, True
        _check_sizes([member for member, _ in members.values()], label)
        for name, (member, is_inner) in members.items():
            if not is_inner:
                _extract(zf, member, out_dir / name, label)
                origins[name] = f"{label}/{member.filename}"
                continue
            tmp = out_dir / f".{INNER_ZIPS[name]}"
            try:
                _extract(zf, member, tmp, label)
                origins[name] = _from_inner_zip(tmp, name, out_dir / name, f"{label}/{member.filename}")
            finally:
                tmp.unlink(missing_ok=True)
    return origins


def copy_competition_folder(folder: str | Path, out_dir: str | Path) -> dict[str, str]:
    """A folder with the unpacked competition files (CSVs, or training.zip/test.zip) -> ``out_dir``."""
    folder, out_dir = Path(folder), Path(out_dir)
    origins = {}
    for name in RAW_FILES:
        inner = INNER_ZIPS.get(name)
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out_dir / name)
            origins[name] = str(folder / name)
        elif inner and (folder / inner).is_file():
            origins[name] = _from_inner_zip(folder / inner, name, out_dir / name, str(folder / inner))
        else:
            holds = _listing(sorted(p.name for p in folder.iterdir()))
            raise DataError(f"{folder}: missing {name}{f' (or {inner})' if inner else ''}; the folder holds: {holds}")
    return origins


def check_raw_dir(raw_dir: str | Path, origins: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """Check each CSV's header and that it has rows, and the lookup table against test.csv; returns {file: {bytes, rows}}.

    ``origins`` names where each file came from, for the error messages.
    """
    raw_dir = Path(raw_dir)
    origins = origins or {}
    summary = {}
    for name, expected in RAW_FILES.items():
        path = raw_dir / name
        label = origins.get(name, str(path))
        if not path.is_file():
            raise DataError(f"{label}: missing")
        check_csv(path, expected, label)
        summary[name] = {"bytes": path.stat().st_size, "rows": count_rows(path)}
    test_path = raw_dir / TEST_FILE
    try:
        test_ids = read_test_ids(test_path)
    except DataError as exc:
        raise DataError(str(exc).replace(str(test_path), origins.get(TEST_FILE, str(test_path)), 1)) from None
    check_lookup(raw_dir / LOOKUP_FILE, test_ids, origins.get(LOOKUP_FILE))
    return summary


def check_csv(path: Path, expected: tuple[str, ...], label: str) -> None:
    """The header must be ``expected`` exactly and at least one data row must follow."""
    with open(path, "rb") as fh:
        header = fh.readline(1 << 16)
        first_row = fh.readline(1 << 16)
    if not header.strip():
        raise DataError(f"{label}: the file is empty")
    check_utf8(label, header)
    found = header.decode("utf-8", errors="replace").lstrip("\ufeff").strip().split(",")
    check_header(label, [c.strip().strip('"') for c in found], expected)
    if not first_row.strip():
        raise DataError(f"{label}: no data rows after the header")


def count_rows(path: Path) -> int:
    """Data rows (lines after the header; the last line may lack its newline)."""
    newlines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    return newlines - 1 + (last != b"\n")


def _open_zip(path: Path, label: str) -> zipfile.ZipFile:
    if path.stat().st_size == 0:
        raise DataError(f"{label}: the file is empty")
    try:
        return zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise DataError(f"{label}: not a valid zip file (truncated, damaged, or not a zip at all): {exc}") from None


def _find_member(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo | None:
    """The member called ``name``, at the top or in a folder (a zip made by hand); the shallowest wins."""
    matches = [
        info for info in zf.infolist()
        if not info.is_dir() and info.filename.rsplit("/", 1)[-1] == name and not info.filename.startswith("__MACOSX/")
    ]
    return min(matches, key=lambda info: info.filename.count("/")) if matches else None


def _check_sizes(members: list[zipfile.ZipInfo], label: str) -> None:
    """Refuse, before any is unpacked, members whose headers declare more than :data:`MAX_UNPACKED_BYTES`
    (alone or together) or a compression ratio beyond :data:`MAX_RATIO`."""
    limits = f"far beyond the real competition files (allowed: {human_size(MAX_UNPACKED_BYTES)}, {MAX_RATIO}x)"
    for m in members:
        ratio = m.file_size / m.compress_size if m.compress_size else math.inf
        if m.file_size > MAX_UNPACKED_BYTES or (m.file_size > RATIO_FREE_BYTES and ratio > MAX_RATIO):
            raise DataError(f"{label}: {m.filename} would unpack to {human_size(m.file_size)} from {human_size(m.compress_size)} "
                            f"({ratio:.0f}x), {limits}: refused as a possible zip bomb; get the zip again from Kaggle")
    total = sum(m.file_size for m in members)
    if total > MAX_UNPACKED_BYTES:
        raise DataError(f"{label}: {', '.join(m.filename for m in members)} would unpack to {human_size(total)} together, "
                        f"{limits}: refused as a possible zip bomb; get the zip again from Kaggle")


def _extract(zf: zipfile.ZipFile, member: zipfile.ZipInfo, dest: Path, label: str) -> None:
    """Copy one member out, reading it to the end so that zipfile checks its CRC, and never past
    :data:`MAX_UNPACKED_BYTES` (whatever its header declared); a failed copy leaves no ``dest``."""
    try:
        with zf.open(member) as src, open(dest, "wb") as dst:
            written = 0
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > MAX_UNPACKED_BYTES:
                    raise DataError(f"{label}: {member.filename} unpacks to more than {human_size(MAX_UNPACKED_BYTES)} "
                                    f"(its header declares {human_size(member.file_size)}): refused as a possible zip bomb; "
                                    "get the zip again from Kaggle")
                dst.write(chunk)
    except ZIP_ERRORS as exc:
        dest.unlink(missing_ok=True)
        raise DataError(f"{label}: {member.filename} is damaged ({exc}); get the file again") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _from_inner_zip(inner_zip: Path, name: str, dest: Path, label: str) -> str:
    with _open_zip(inner_zip, label) as zf:
        member = _find_member(zf, name)
        if member is None:
            raise DataError(f"{label}: missing {name}; the zip holds: {_listing(zf.namelist())}")
        _check_sizes([member], label)
        _extract(zf, member, dest, label)
    return f"{label}/{member.filename}"


def _listing(names: list[str], limit: int = 10) -> str:
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")

