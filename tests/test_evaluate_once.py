"""The evaluate run checks each variant's metrics once, where they are scored; writing them does not check again."""
from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

from fkd.core.config import EnsembleParams
from fkd.core.data import load_fold
from fkd.evaluation import evaluate, metrics, outputs


def test_each_variants_metrics_are_checked_once_between_scoring_and_the_files(split_dir, tmp_path, monkeypatch):
    checked = Counter()

    def spy(values, name="metrics"):
        checked[name] += 1
        return metrics.check_metrics(values, name)

    monkeypatch.setattr(evaluate, "check_metrics", spy)
    train, val = load_fold(split_dir)
    shape = evaluate.mean_shape_fn(train.keypoints)
    p = EnsembleParams(members=("resnet", "cnn"), weights=(0.5, 0.5), per_keypoint=False)
    results, _ = evaluate.evaluate_models({"resnet": [shape], "cnn": [shape]}, [(train, val)], p, tta_flip=False)
    outputs.write_outputs(results, val, SimpleNamespace(grid_faces=2, worst_faces=1), tmp_path / "metrics", tmp_path / "plots")
    assert checked == {name: 1 for name in ("resnet", "cnn", "ensemble", "mean_shape")}
    assert json.loads((tmp_path / "metrics" / "cnn.json").read_text()) == {k: None if v is None else round(v, 5) for k, v in results["cnn"].metrics.items()}
    assert not hasattr(outputs, "check_metrics")
