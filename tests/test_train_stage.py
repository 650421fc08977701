"""``python -m stages.train``: the one training stage module; a bad model, phase, path or argument list is one line."""
from __future__ import annotations

import pytest

from stages import train as train_stage


def run(argv, capsys) -> str:
    from fkd.core.cli import run_stage

    with pytest.raises(SystemExit) as exit_:
        run_stage(train_stage.main, argv)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


@pytest.mark.parametrize("argv,message", [
    (["vit", "data/split", "0", "m", "models/vit/0.x"], "error: train: no model 'vit' in fkd/models/ (there are: cnn, heatmap, resnet)"),
    (["resnet.adam", "data/split", "0", "m", "models/resnet/0.safetensors"],
     "error: train: model 'resnet' has no phase 'adam' (it has: none)"),
    (["cnn.rmsprop", "data/split", "0", "m", "models/cnn_sgd/0.keras"], "error: train: model 'cnn' has no phase 'rmsprop' (it has: adam, sgd)"),
    (["heatmap", "data/split", "0", "m", "models/heatmap/0.keras"],
     "error: train: models/heatmap/0.keras: model 'heatmap' writes .safetensors files; give its output path that suffix in dvc.yaml"),
    (["resnet", "data/split", "0"], "error: usage: python -m stages.train MODEL[.PHASE] SPLIT_DIR FOLD METRICS_DIR PATH..."),
])
def test_a_bad_command_line_is_one_line(argv, message, capsys):
    assert run(argv, capsys) == message


def test_each_phase_and_each_model_resolves_to_its_trainer():
    from fkd.models import cnn, heatmap, resnet
    from fkd.models.cnn import train

    assert train_stage.trainer("resnet") == ("resnet", resnet, resnet.fit)
    assert train_stage.trainer("heatmap") == ("heatmap", heatmap, heatmap.fit)
    assert train_stage.trainer("cnn") == ("cnn", cnn, cnn.fit)
    assert train_stage.trainer("cnn.adam") == ("cnn", cnn, train.train_adam)
    assert train_stage.trainer("cnn.sgd") == ("cnn", cnn, train.train_sgd)
