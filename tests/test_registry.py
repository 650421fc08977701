"""The model registry and the one-folder-per-model layout: every registered model is a folder whose contract module
exports its params section, file suffix, builder, trainer and loader, and the dvc.yaml stage that writes its file;
a saved torch model loads only as the network it holds."""
from __future__ import annotations

import dataclasses
import importlib
import inspect

import numpy as np
import pytest
import torch

from fkd.core.config import Params, load_params
from fkd.core.errors import ModelFileError
from fkd.models.registry import MODELS, check_model_names
from fkd.core.schema import ParamsError
from tests.conftest import ROOT


#: What every model's contract module ``fkd/models/<name>/__init__.py`` exports, and the arguments of its functions.
CONTRACT = {"build": ["p"], "fit": ["train", "val", "p", "model_path", "live"], "load": ["path"]}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_registered_model_is_one_folder(name):
    assert (ROOT / "fkd" / "models" / name / "__init__.py").is_file(), f"fkd/models/{name}/__init__.py missing"
    plugin = importlib.import_module(f"fkd.models.{name}")
    assert MODELS[name].module is plugin
    assert isinstance(plugin.SUFFIX, str) and plugin.SUFFIX.startswith(".")
    for function, args in CONTRACT.items():
        assert list(inspect.signature(getattr(plugin, function)).parameters) == args, f"fkd.models.{name}.{function}"
    # its params section is declared in its folder and is a field of Params
    fields = {f.name: f for f in dataclasses.fields(Params)}
    assert name in fields
    section = type(getattr(load_params(ROOT / "params.yaml"), name))
    assert section is plugin.Params and section.__module__.split(".")[:3] == ["fkd", "models", name]


def test_every_registered_model_file_is_written_by_a_stage():
    """Each fold's file of every model is an out of a stage of dvc.yaml as DVC expands it (the train matrix, foreach)."""
    from tests.test_deps import resolved_stages

    stages = resolved_stages(ROOT)
    outs = {out if isinstance(out, str) else next(iter(out)) for stage in stages.values() for out in stage.get("outs", [])}
    for fold in load_params("split", path=ROOT / "params.yaml").split.folds:
        for name, spec in MODELS.items():
            assert f"models/{spec.file(fold)}" in outs, f"no dvc.yaml stage writes models/{spec.file(fold)} ({name})"


def test_model_folders_import_no_other_model():
    """A model's folder stands alone: no module of one model imports another model's folder."""
    for name in MODELS:
        for path in (ROOT / "fkd" / "models" / name).glob("*.py"):
            text = path.read_text()
            others = [o for o in MODELS if o != name and f"fkd.models.{o}" in text]
            assert not others, f"{path.relative_to(ROOT)} imports {others}"


def test_unknown_model_name_is_a_params_error():
    with pytest.raises(ParamsError, match=r"'ensemble.members\[1\]' is 'vit'.*resnet"):
        check_model_names(["resnet", "vit"], "ensemble.members")


def test_a_torch_checkpoint_loads_only_as_its_own_network(tmp_path):
    from fkd.models.heatmap import network as heatmap
    from fkd.models.resnet import network as resnet
    from fkd.nn.torch_nn import save_checkpoint

    p = load_params(ROOT / "params.yaml")
    config = heatmap.architecture(p.heatmap)
    save_checkpoint(tmp_path / "heatmap.safetensors", heatmap.build(config).state_dict(), config)
    with pytest.raises(ModelFileError, match=r"heatmap.safetensors: holds a 'heatmap' network, expected 'resnet'"):
        resnet.load_model_fn(tmp_path / "heatmap.safetensors")
    torch.manual_seed(0)
    pred = heatmap.load_model_fn(tmp_path / "heatmap.safetensors")(np.zeros((2, 96, 96), np.uint8))
    assert pred.shape == (2, 34) and np.isfinite(pred).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_trains_every_phase_and_writes_a_file_its_loader_reads(name, split_dir, tmp_path):
    """``MODELS[name].fit``: the whole training of one fold (both CNN phases), as the training stages run it."""
    from fkd.core.data import load_fold
    from fkd.nn.train_result import TrainResult
    from tests.conftest import TINY_PARAMS

    p = load_params(ROOT / "params.yaml", overrides=TINY_PARAMS)
    train, val = load_fold(split_dir)
    path = tmp_path / MODELS[name].file(0)
    path.parent.mkdir(parents=True)
    result = MODELS[name].fit(train, val, p, path)
    assert isinstance(result, TrainResult) and result.epochs_run == 1
    if name == "cnn":  # phase 2 started from a phase-1 model it scored first
        assert np.isfinite(result.adam_val_rmse)
    assert sorted(f.name for f in tmp_path.rglob("*") if f.is_file()) == [path.name]  # no phase-1 file left behind
    pred = MODELS[name].load(path)(val.images[:3])
    assert pred.shape == (3, 34) and np.isfinite(pred).all()
