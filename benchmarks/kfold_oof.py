"""Out-of-fold predictions of the registered models on a K-fold split, scored as the evaluate stage scores them.

``train`` trains each named model once per fold with the project's trainers and params (``MODELS[name].fit``:
what the pipeline's training stages run, every phase, without dvclive) and saves that fold's validation predictions, direct and with flip TTA,
to ``OUT/<model>/<fold>.npz`` as each fold finishes. ``score`` reads every saved fold and prints the evaluate
stage's table (every model, flip TTA, the ensemble of ``ensemble.members`` fitted and cross-fitted out of fold,
the mean shape). The two halves can run on different machines: the torch models' folds on a GPU machine,
the CNN's here, scored together.

Usage:
  python -m benchmarks.kfold_oof train SPLIT_DIR OUT --models resnet heatmap [--folds 0 1 2] [--set resnet.epochs=20 ...]
  python -m benchmarks.kfold_oof score SPLIT_DIR OUT [--set ensemble.per_keypoint=true ...]
Both take ``--json PATH``: the printed figures (train: one row per fold; score: one row per variant) as a file.
SPLIT_DIR is a split stage's output with K folds, e.g. ``data/split`` after
``dvc exp run split -S 'split.folds=[0,1,2,3,4]'`` (its labels already moved by ``data.label_offset_x``).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import save_benchmark
from fkd.core.cli import run_stage
from fkd.core.config import Params, load_params, load_yaml
from fkd.core.data import load_fold
from fkd.evaluation.evaluate import evaluate_predictions, model_predictions, summary_table, validation_rows
from fkd.models.registry import MODEL_NAMES, MODELS


def with_settings(settings: list[str], params_file: str) -> Params:
    """params.yaml with ``key.sub=value`` settings applied (values read as YAML), as ``dvc exp run -S`` does."""
    overrides: dict = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = load_yaml(value)  # YAML 1.2 floats, as dvc exp run -S reads them
    return load_params(params_file, overrides=overrides)


def train(args, p: Params) -> None:
    out, rows = Path(args.out), []
    for name in args.models:
        for fold in args.folds:
            train_part, val = load_fold(args.split_dir, fold)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / MODELS[name].file(fold)
                path.parent.mkdir(parents=True)
                result = MODELS[name].fit(train_part, val, p, path)
                pred = model_predictions(MODELS[name].load(path), val.images, tta_flip=True)
            (out / name).mkdir(parents=True, exist_ok=True)
            np.savez(out / name / f"{fold}.npz", rows=val.rows, **pred)
            row = {"model": name, "fold": fold, "seconds": round(time.perf_counter() - start, 1), **result.metrics(), **result.speed()}
            print(json.dumps(row), flush=True)
            rows.append(row)
            with open(out / "train_log.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
    save_benchmark(args.json, "kfold_oof", rows)


def score(args, p: Params) -> None:
    out = Path(args.out)
    folds = sorted(int(f.stem) for f in (out / args.models[0]).glob("*.npz")) if args.folds is None else args.folds
    parts = [load_fold(args.split_dir, k, train_images=False) for k in folds]
    base = {}
    for name in args.models:
        saved = [np.load(out / name / f"{k}.npz") for k in folds]
        for k, s, (_, val) in zip(folds, saved, parts):
            if not np.array_equal(s["rows"], val.rows):
                raise SystemExit(f"{out / name / f'{k}.npz'}: saved for other rows than fold {k} of {args.split_dir}")
        base[name] = {kind: np.concatenate([s[kind] for s in saved]) for kind in ("direct", "tta")}
    results, fitted = evaluate_predictions(base, parts, p.ensemble, tta_flip=True)
    print(f"out of fold, {len(folds)} folds, {len(validation_rows(parts).keypoints)} faces")
    print(summary_table(results))
    weights = dict(zip(fitted["members"], np.round(np.asarray(fitted["weights"]), 4).tolist())) if fitted else None
    if weights:
        print("ensemble weights:", weights)
    rows = [{"variant": name, **{k: None if v is None else round(v, 5) for k, v in r.metrics.items()}} for name, r in results.items()]
    save_benchmark(args.json, "kfold_oof", rows, folds=folds, ensemble_weights=weights)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "score"])
    ap.add_argument("split_dir")
    ap.add_argument("out")
    ap.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES))
    ap.add_argument("--folds", nargs="+", type=int)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", metavar="PATH", help="also write the printed figures to PATH (python -m benchmarks.report makes a table of it)")
    args = ap.parse_args(argv)
    p = with_settings(args.set, args.params)
    if args.command == "train":
        if args.folds is None:
            args.folds = sorted(set(np.load(Path(args.split_dir) / "val_fold.npy").tolist()) - {-1})
        train(args, p)
    else:
        score(args, p)


if __name__ == "__main__":
    run_stage(main)
