"""benchmarks/kfold_oof: each fold's model trained as the pipeline trains it, its validation predictions saved,
and the saved folds scored together out of fold by the evaluate stage's code."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.test_evaluate import tiny_params_file


def kfold_oof_main(monkeypatch, capsys, *argv: str) -> str:
    """``python -m benchmarks.kfold_oof ARGV`` in this process (what a subprocess would add: only imports): stdout."""
    from benchmarks import kfold_oof

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["kfold_oof", *argv])
    kfold_oof.main()
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def two_fold_split(synthetic_raw, tmp_path_factory):
    from fkd.core.data import parse_raw, write_split

    prepared = tmp_path_factory.mktemp("prepared")
    parse_raw(synthetic_raw, prepared)
    out = tmp_path_factory.mktemp("split2")
    write_split(prepared, out, val_fraction=0.2, seed=0, folds=2)
    return out


@pytest.mark.slow
def test_train_then_score_covers_every_row_once(two_fold_split, tmp_path, monkeypatch, capsys):
    params = tiny_params_file(tmp_path, {"ensemble": {"members": ["resnet", "heatmap"]}})
    out = tmp_path / "oof"
    args = [str(two_fold_split), str(out), "--models", "resnet", "heatmap", "--params", str(params)]
    trained = kfold_oof_main(monkeypatch, capsys, "train", *args)
    log = [json.loads(line) for line in trained.splitlines() if line.startswith("{")]
    assert [(r["model"], r["fold"]) for r in log] == [("resnet", 0), ("resnet", 1), ("heatmap", 0), ("heatmap", 1)]
    assert all(r["epochs_run"] == 1 for r in log)

    n_rows = len(np.load(two_fold_split / "val_fold.npy"))
    for name in ("resnet", "heatmap"):
        saved = [np.load(out / name / f"{k}.npz") for k in (0, 1)]
        rows = np.concatenate([s["rows"] for s in saved])
        assert sorted(rows.tolist()) == list(range(n_rows))  # out of fold: every row predicted once
        assert all(s["direct"].shape == s["tta"].shape == (len(s["rows"]), 34) for s in saved)

    scored = kfold_oof_main(monkeypatch, capsys, "score", *args)
    assert f"out of fold, 2 folds, {n_rows} faces" in scored
    variants = {line.split()[0] for line in scored.splitlines()[2:] if line and not line.startswith("ensemble weights")}
    assert {"resnet", "resnet_tta", "heatmap_tta", "ensemble", "ensemble_tta", "mean_shape"} <= variants, scored
    assert "ensemble weights: {'resnet':" in scored


def test_score_refuses_predictions_saved_for_another_split(two_fold_split, tmp_path, monkeypatch, capsys):
    params = tiny_params_file(tmp_path, {"ensemble": {"members": ["resnet"]}})
    out = tmp_path / "oof"
    for k in (0, 1):
        (out / "resnet").mkdir(parents=True, exist_ok=True)
        np.savez(out / "resnet" / f"{k}.npz", rows=np.arange(3), direct=np.zeros((3, 34)), tta=np.zeros((3, 34)))
    with pytest.raises(SystemExit, match="0.npz: saved for other rows than fold 0"):  # a message: exit status 1
        kfold_oof_main(monkeypatch, capsys, "score", str(two_fold_split), str(out), "--models", "resnet", "--params", str(params))
