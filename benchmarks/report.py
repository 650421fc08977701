"""The figure tables of README.md and docs/*.md, written from the files that hold the figures.

    python -m benchmarks.report                 # rewrite every generated region
    python -m benchmarks.report --check         # write nothing; exit 1 naming each stale region
    python -m benchmarks.report --save-run NAME [--probe IMG_S] [--command CMD] [--wall-seconds S]

A generated region is the text between ``<!-- report:KIND SOURCE -->`` and ``<!-- /report:KIND -->``:

- ``summary``, ``evaluate``, ``train``, ``split``: SOURCE is a folder holding ``metrics/`` as the pipeline
  writes it: ``.`` (the committed pipeline's metrics) or ``docs/results/NAME`` (a run saved with ``--save-run``).
- ``runs``: SOURCE is ``docs/results``; one row per saved run.
- ``bench``: SOURCE is a JSON file a benchmark wrote with ``--json PATH``.

Each table gets one line above it naming its source: its commit and date (``git log`` of the committed
metrics; a saved run's or a benchmark's own record otherwise) and the machine's CPU probe.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from fkd.core.cli import StageError, run_stage

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/*.md")
RESULTS = "docs/results"
RUN_FILE = "run.json"
OPEN = re.compile(r"^<!-- report:(?P<kind>[a-z]+) (?P<source>\S+) -->\n", re.M)
NOT_MEASURED = "not measured"
#: Metric files a saved run keeps, as the pipeline lays them out (relative to the repo root).
RUN_METRICS = ("metrics/evaluate/*.json", "metrics/split.json", "metrics/train_*/*/metrics.json")
RUN_VARIANTS = ("heatmap_tta", "ensemble_tta")  # the runs table's RMSE columns: the main model and the ensemble
TRAIN_KEYS = ("best_val_rmse", "best_epoch", "epochs_run", "device", "precision", "improved_on_adam")


# ---------------------------------------------------------------- provenance


def git(root: Path, *args: str) -> str | None:
    """``git ARGS`` in ``root``: its stdout, or None when git cannot answer (no repo, no git)."""
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def head_commit(root: Path) -> str:
    """HEAD's short hash, ``-dirty`` when tracked files differ from it (as ``git describe --dirty``)."""
    commit = git(root, "rev-parse", "--short", "HEAD") or "unknown"
    return commit + "-dirty" if git(root, "status", "--porcelain", "--untracked-files=no") else commit


def machine_probe(root: Path, given: float | None = None) -> float | str:
    """The machine's speed in img/s: ``given``, else what ``../shared/tools/cpu_probe.py`` measures, else "not measured"."""
    if given is not None:
        return given
    script = root.parent / "shared" / "tools" / "cpu_probe.py"
    if script.is_file():
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True).stdout
        if found := re.search(r"probe_img_s=([\d.]+)", out):
            return float(found.group(1))
    return NOT_MEASURED


def record(root: Path, command: str, probe: float | None = None) -> dict:
    """What a result file says about where it came from: commit, date, machine probe, command."""
    return {"commit": head_commit(root), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "probe_img_s": machine_probe(root, probe), "command": command}


def save_benchmark(path: str | Path | None, benchmark: str, rows: list[dict], **extra) -> None:
    """A benchmark's ``--json PATH`` (nothing without one): its printed figures as ``rows``, with :func:`record`'s provenance."""
    from fkd.core.io import save_json

    if not path:
        return
    command = f"python -m benchmarks.{benchmark} " + shlex.join(sys.argv[1:])
    save_json(path, {"benchmark": benchmark, **record(ROOT, command.strip()), "rows": rows, **extra})


def named_models(parser, items: list[str]) -> list[tuple[str, object]]:
    """A benchmark's ``MODEL=PATH`` or ``MODEL:LABEL=PATH`` arguments as (label, model function) pairs, MODEL a registered
    model name (its loader reads PATH; the label defaults to it, and tells two files of one model apart); anything else is
    ``parser.error`` naming the argument."""
    from fkd.models.registry import MODELS

    models = []
    for item in items:
        named, sep, path = item.partition("=")
        name, _, label = named.partition(":")
        if not sep or name not in MODELS:
            parser.error(f"{item!r}: give MODEL=PATH or MODEL:LABEL=PATH with MODEL one of {', '.join(MODELS)}")
        models.append((label or name, MODELS[name].module.load(path)))
    return models


# ---------------------------------------------------------------- reading sources


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: not found") from None
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise StageError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def metric_files(base: Path, pattern: str) -> list[Path]:
    files = sorted(base.glob(pattern))
    if not files:
        raise StageError(f"{base / pattern}: no such files (a run's metrics are saved with `python -m benchmarks.report --save-run NAME`)")
    return files


def variant_order(name: str) -> tuple:
    from fkd.models.registry import MODEL_NAMES

    base = name.removesuffix("_tta")
    known = [*MODEL_NAMES, "ensemble", "mean_shape"]
    return (known.index(base) if base in known else len(MODEL_NAMES) - 0.5, base, name.endswith("_tta"))


def evaluate_metrics(base: Path) -> dict[str, dict]:
    files = metric_files(base, "metrics/evaluate/*.json")
    return {f.stem: read_json(f) for f in sorted(files, key=lambda f: variant_order(f.stem))}


def provenance(root: Path, base: Path, files: list[Path], label: str) -> str:
    """The line above a metrics table: a saved run's run.json, or git's record of the committed files."""
    if (base / RUN_FILE).is_file():
        run = read_json(base / RUN_FILE)
        return (f"run `{base.name}` ({rel(root, base / RUN_FILE)}): commit {run.get('commit', 'unknown')}, {run.get('date', 'date unknown')}, "
                f"machine probe {probe_text(run.get('probe_img_s'))}, `{run.get('command', '?')}`, "
                f"{wall_text(run.get('wall_seconds'), ' s')}")
    names = [rel(root, f) for f in files]
    if git(root, "status", "--porcelain", "--", *names):
        when = "uncommitted changes (commit them, then run the report again)"
    else:
        when = "commit " + (git(root, "log", "-1", "--format=%h, %cs", "--", *names) or "unknown")
    return f"`{label}`, {when}; machine probe not recorded"


@contextlib.contextmanager
def committed_tree(root: Path):
    """HEAD of ``root`` checked out in a temporary git worktree, to read the committed figures from: a local
    ``dvc repro`` rewrites the metrics in the working tree with this machine's numbers, and those are not what
    the committed docs describe. Outside git it is ``root`` itself."""
    if git(root, "rev-parse", "--verify", "--quiet", "HEAD") is None:
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="fkd-head-") as tmp:
        tree = Path(tmp) / "head"
        # no hooks: a `dvc install` post-checkout hook must not run in the throwaway tree
        if git(root, "-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--quiet", str(tree), "HEAD") is None:
            raise StageError(f"{root}: `git worktree add` failed, so HEAD's metrics cannot be read")
        try:
            yield tree
        finally:
            git(root, "worktree", "remove", "--force", str(tree))


def rel(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


# ---------------------------------------------------------------- formatting


def fmt(value, decimals: int | None = None) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if decimals is not None:
            return f"{value:.{decimals}f}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100 or value.is_integer():
            return f"{value:.1f}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def wall_text(seconds, unit: str = "") -> str:
    """A run's wall time in whole seconds; a value that is no finite number (a damaged run.json) is shown as it is."""
    if seconds is None:
        return NOT_MEASURED
    finite = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
    return fmt(round(seconds) if finite else seconds) + unit


def probe_text(probe) -> str:
    return f"{probe:.0f} img/s" if isinstance(probe, (int, float)) and not isinstance(probe, bool) else str(probe or NOT_MEASURED)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def metric_decimals(key: str) -> int:
    return 4 if key in ("nme", "mae") else 3


# ---------------------------------------------------------------- the kinds of region


def summary(root: Path, base: Path, doc_dir: Path) -> tuple[str, str]:
    """Each model and the ensemble: RMSE, with TTA, PCK@0.05 with TTA."""
    metrics = evaluate_metrics(base)
    rows = []
    for name, m in metrics.items():
        if name.endswith("_tta"):
            continue
        tta = metrics.get(f"{name}_tta", {})
        rows.append([f"`{name}`", fmt(m.get("rmse"), 3), fmt(tta.get("rmse"), 3), fmt(tta.get("pck_05", m.get("pck_05")), 3)])
    header = ["variant", "RMSE (px)", "with TTA", "PCK@0.05"]
    return provenance(root, base, list((base / "metrics/evaluate").glob("*.json")), "metrics/evaluate/*.json"), table(header, rows)


def evaluate(root: Path, base: Path, doc_dir: Path) -> tuple[str, str]:
    """Every variant evaluate scored, every metric."""
    metrics = evaluate_metrics(base)
    keys = list(dict.fromkeys(k for m in metrics.values() for k in m))
    rows = [[f"`{name}`", *(fmt(m.get(k), metric_decimals(k)) for k in keys)] for name, m in metrics.items()]
    return provenance(root, base, list((base / "metrics/evaluate").glob("*.json")), "metrics/evaluate/*.json"), table(["variant", *keys], rows)


def training_stage_names(root: Path) -> dict[str, str]:
    """A training stage's metrics folder under metrics/ -> its stage in dvc.yaml without the fold: ``train_resnet`` ->
    ``train@resnet-``, ``train_cnn_sgd`` -> ``train_cnn_sgd@`` (the fold's number follows)."""
    from dvc.repo import Repo

    names = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            for out in stage.metrics:
                rel = Path(out.def_path)
                if rel.parts[0] == "metrics" and rel.name == "metrics.json" and len(rel.parts) == 4:
                    names[rel.parts[1]] = stage.name.removesuffix(rel.parts[2])  # not addressing: it is relative to the cwd
    return names


def train(root: Path, base: Path, doc_dir: Path) -> tuple[str, str]:
    """Each training stage's final metrics, per fold."""
    files = metric_files(base, "metrics/train_*/*/metrics.json")
    stages = training_stage_names(root)
    data = {stages.get(f.parent.parent.name, f"{f.parent.parent.name}@") + f.parent.name: read_json(f) for f in files}
    keys = [k for k in TRAIN_KEYS if any(k in m for m in data.values())]
    rows = [[f"`{stage}`", *(fmt(m.get(k), 3) for k in keys)] for stage, m in data.items()]
    return provenance(root, base, files, "metrics/train_*/*/metrics.json"), table(["stage", *keys], rows)


def split(root: Path, base: Path, doc_dir: Path) -> tuple[str, str]:
    """The split stage's figures (label offset, duplicate groups, ...)."""
    path = base / "metrics/split.json"
    rows = [[f"`{k}`", fmt(v, 2 if isinstance(v, float) else None)] for k, v in read_json(path).items()]
    return provenance(root, base, [path], "metrics/split.json"), table(["key", "value"], rows)


def runs(root: Path, folder: Path, doc_dir: Path) -> tuple[str, str]:
    """One row per run saved under ``folder``."""
    rows = []
    for run_file in sorted(folder.glob(f"*/{RUN_FILE}")):
        run = read_json(run_file)
        scores = []
        for variant in RUN_VARIANTS:
            path = run_file.parent / f"metrics/evaluate/{variant}.json"
            scores.append(fmt(read_json(path).get("rmse"), 3) if path.is_file() else "–")
        rows.append([f"[`{run_file.parent.name}`]({rel(doc_dir, run_file.parent)}/)", str(run.get("commit", "unknown")),
                     str(run.get("date", "")), probe_text(run.get("probe_img_s")), f"`{run.get('command', '?')}`",
                     wall_text(run.get("wall_seconds")), *scores])
    note = f"every `{rel(root, folder)}/*/{RUN_FILE}`"
    if not rows:
        return note, "No run saved yet."
    return note, table(["run", "commit", "date", "machine probe", "command", "wall s",
                        *(f"{variant} RMSE" for variant in RUN_VARIANTS)], rows)


def bench(root: Path, path: Path, doc_dir: Path) -> tuple[str, str]:
    """A benchmark's ``--json`` file: its rows as they are."""
    data = read_json(path)
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise StageError(f"{path}: 'rows' must be a non-empty list of objects (written by a benchmark's --json)")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = (f"`{rel(root, path)}`: `{data.get('command', '?')}` at commit {data.get('commit', 'unknown')}, "
            f"{data.get('date', 'date unknown')}, machine probe {probe_text(data.get('probe_img_s'))}")
    return head, table(keys, [[fmt(r.get(k)) for k in keys] for r in rows])


KINDS = {"summary": summary, "evaluate": evaluate, "train": train, "split": split, "runs": runs, "bench": bench}


# ---------------------------------------------------------------- regions


def render_region(kind: str, source: str, root: Path, doc_dir: Path) -> str:
    root = root.resolve()
    head, body = KINDS[kind](root, (root / source).resolve(), doc_dir.resolve())
    return f"<sub>From {head}. Written by `python -m benchmarks.report`.</sub>\n\n{body}\n"


def render_text(text: str, root: Path, name: str = "text", doc_dir: Path | None = None) -> str:
    """``text`` with every generated region rewritten from its source (links relative to ``doc_dir``, default ``root``)."""
    out, pos = [], 0
    for match in OPEN.finditer(text):
        kind, source = match["kind"], match["source"]
        line = text.count("\n", 0, match.start()) + 1
        if match.start() < pos:
            raise StageError(f"{name}: line {line}: a report region opens inside another; close the first with <!-- /report:KIND -->")
        if kind not in KINDS:
            raise StageError(f"{name}: line {line}: unknown report kind {kind!r}; use one of {', '.join(KINDS)}")
        close = f"<!-- /report:{kind} -->"
        end = text.find(close, match.end())
        if end < 0:
            raise StageError(f"{name}: line {line}: <!-- report:{kind} {source} --> has no closing {close}")
        try:
            body = render_region(kind, source, root, doc_dir or root)
        except StageError as exc:
            raise StageError(f"{name}: line {line}: {exc}") from None
        out += [text[pos:match.end()], body]
        pos = end
    return "".join(out) + text[pos:]


def doc_files(root: Path) -> list[Path]:
    return [p for pattern in DOCS for p in sorted(root.glob(pattern))]


def report(root: Path, check: bool = False) -> list[str]:
    """Rewrite (or with ``check`` only compare) every doc file's regions; returns the files that were stale."""
    stale = []
    for path in doc_files(root):
        text = path.read_text()
        new = render_text(text, root, rel(root, path), path.parent)
        if new != text:
            stale.append(rel(root, path))
            if not check:
                from fkd.core.io import save_bytes

                save_bytes(path, new.encode())
    return stale


def save_run(name: str, root: Path, probe: float | None, command: str, wall_seconds: float | None) -> Path:
    """Copy the workspace's metrics and params.yaml to docs/results/NAME/ with a run.json; all of it or nothing."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise StageError(f"--save-run {name!r}: use letters, digits, '.', '_' and '-' only")
    dest = root / RESULTS / name
    if dest.exists():
        raise StageError(f"{rel(root, dest)} already exists: pick another name, or remove it first")
    files = [f for pattern in RUN_METRICS for f in sorted(root.glob(pattern))]
    if not any(f.parent.name == "evaluate" for f in files):
        raise StageError(f"{root / 'metrics/evaluate'}: no metrics in the workspace; run `dvc repro` (or `dvc exp run`) first")
    for f in files:
        read_json(f)  # only readable metrics get saved
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        for f in [*files, root / "params.yaml"]:
            target = tmp / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
        run = {**record(root, command, probe), "wall_seconds": wall_seconds}
        (tmp / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated region is stale")
    ap.add_argument("--save-run", metavar="NAME", help=f"copy the workspace's metrics into {RESULTS}/NAME/, then rewrite the docs")
    ap.add_argument("--probe", type=float, help="--save-run: the machine's CPU probe in img/s (default: run ../shared/tools/cpu_probe.py if there)")
    ap.add_argument("--command", default="dvc repro", help="--save-run: the command that made the metrics (default: dvc repro)")
    ap.add_argument("--wall-seconds", type=float, help="--save-run: how long that command ran")
    args = ap.parse_args(argv)
    if args.save_run:
        print(f"saved {rel(ROOT, save_run(args.save_run, ROOT, args.probe, args.command, args.wall_seconds))}/; "
              f"show it with <!-- report:evaluate {RESULTS}/{args.save_run} --> ... <!-- /report:evaluate --> in a doc")
    stale = report(ROOT, check=args.check)
    for name in stale:
        print(f"{name}: {'stale, run `python -m benchmarks.report`' if args.check else 'rewritten'}")
    if args.check and stale:
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
