"""Model files never run code: torch models are safetensors (a pickle is refused, never loaded) with a checked
architecture dict, and Keras files load in safe mode. A hostile file is one line naming it, exit code 2."""
from __future__ import annotations

import io
import json
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from fkd.core.data import parse_raw
from fkd.core.errors import ModelFileError
from fkd.evaluation.inference import load_model_fn
from fkd.models.heatmap import network as heatmap
from fkd.models.resnet import network as resnet
from fkd.core.schema import ParamsError
from fkd.nn.torch_nn import save_checkpoint
from tests.conftest import ROOT, project_env
from tests.test_evaluate import tiny_params_file

TINY_RESNET = {"arch": "resnet", "n_outputs": 34, "stem_channels": 4, "widths": [4, 8], "blocks_per_stage": 1,
               "normalize_targets": True}
TINY_HEATMAP = {"arch": "heatmap", "n_outputs": 34, "widths": [4, 4, 4, 4], "blocks_per_stage": 1, "decoder_channels": 4,
                "heatmap_stride": 4, "normalize_targets": True}


class Payload:
    """Unpickling this writes ``marker``: what a crafted checkpoint pulled from a remote would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def hostile_pickles(marker: Path) -> dict[str, bytes]:
    """A bare pickle and a torch.save archive (the old .pt format), each running code when unpickled."""
    archive = io.BytesIO()
    torch.save({"state_dict": Payload(marker), "config": TINY_RESNET}, archive)
    return {"pickle": pickle.dumps(Payload(marker)), "torch.save": archive.getvalue()}


def tiny_state(config: dict = TINY_RESNET) -> dict:
    torch.manual_seed(0)
    return resnet.build(config).state_dict()


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    return errors[0]


def test_the_payload_is_live(tmp_path):
    """The hostile files of these tests do run code when unpickled (so not running it means something)."""
    for name, data in hostile_pickles(tmp_path / "ran").items():
        (tmp_path / "ran").unlink(missing_ok=True)
        if name == "pickle":
            pickle.loads(data)
        else:
            torch.load(io.BytesIO(data), weights_only=False)
        assert (tmp_path / "ran").read_text() == "code ran", name


# --- the format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("network,config", [(resnet, TINY_RESNET), (heatmap, TINY_HEATMAP)], ids=["resnet", "heatmap"])
def test_a_saved_network_round_trips_and_the_file_holds_no_pickle(network, config, tmp_path):
    torch.manual_seed(0)
    model = network.build(config).eval()
    path = tmp_path / f"{config['arch']}/0.safetensors"
    save_checkpoint(path, model.state_dict(), config)

    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])  # safetensors: u64 header length, JSON header, raw tensor bytes
    header = json.loads(data[8 : 8 + header_len])
    assert header["__metadata__"] == {"config": json.dumps(config, sort_keys=True)}
    with safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == sorted(model.state_dict())
        assert all(f.get_tensor(k).dtype == v.dtype for k, v in model.state_dict().items())
    assert not data.startswith((b"PK", b"\x80")) and b"torch._utils" not in data

    images = np.random.default_rng(0).integers(0, 256, (5, 96, 96), dtype=np.uint8)
    with torch.no_grad():
        expected = model(torch.from_numpy(images).unsqueeze(1).float() / 255).numpy() * 48 + 48
    np.testing.assert_array_equal(network.load_model_fn(path)(images), expected)


def test_architecture_sizes_are_bounded_where_params_make_them(tmp_path):
    from dataclasses import replace

    from fkd.core.config import load_params

    p = load_params(ROOT / "params.yaml").resnet
    with pytest.raises(ParamsError, match=r"'resnet.widths\[0\]' must be in \[1, 4096\], got 100000"):
        resnet.architecture(replace(p, widths=(100_000, 8)))


# --- hostile and damaged torch files, loaded in-process ---------------------------------------------


def safetensors_with(state: dict, metadata: dict | None) -> bytes:
    return save_safetensors({k: v.contiguous() for k, v in state.items()}, metadata=metadata)


def config_json(**changes) -> dict:
    return {"config": json.dumps({**TINY_RESNET, **changes})}


def damaged_files(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, what the one-line error must say)."""
    good = safetensors_with(tiny_state(), config_json())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("model.safetensors", good)
    state = tiny_state()
    fewer = {k: v for k, v in state.items() if k != "head.bias"}
    big = tiny_state({**TINY_RESNET, "widths": [4, 16]})
    return {
        "pickle": (hostile_pickles(marker)["pickle"], "it is a pickle: model files are read as safetensors only, never unpickled"),
        "torch.save": (hostile_pickles(marker)["torch.save"], "it is a zip archive, as an old torch.save checkpoint is: model files "
                       "are read as safetensors only, never unpickled"),
        "truncated": (good[: len(good) // 2], "not a safetensors file: incomplete metadata"),
        "empty": (b"", "not a safetensors file: header too small"),
        "a zip": (zipped.getvalue(), "it is a zip archive"),  # what torch.save writes: refused unread
        "text": (b'{"config": "json, not safetensors"}\n', "not a safetensors file"),
        "no metadata": (safetensors_with(state, None), "its safetensors metadata has the keys [], expected only 'config'"),
        "extra metadata": (safetensors_with(state, {**config_json(), "note": "x"}), "has the keys ['config', 'note']"),
        "config not JSON": (safetensors_with(state, {"config": "{not json"}), "its 'config' metadata is not JSON"),
        "config a list": (safetensors_with(state, {"config": "[1, 2]"}), "its 'config' metadata is a JSON list, not an object"),
        "unknown key": (safetensors_with(state, config_json(hook="os.system")), "unknown key 'config.hook'"),
        "missing key": (safetensors_with(state, {"config": json.dumps({k: v for k, v in TINY_RESNET.items() if k != "widths"})}),
                        "missing key 'config.widths'"),
        "wrong type": (safetensors_with(state, config_json(widths="4,8")), "'config.widths' must be a list"),
        "absurd width": (safetensors_with(state, config_json(widths=[10**9, 8])), "'config.widths[0]' must be in [1, 4096]"),
        "absurd depth": (safetensors_with(state, config_json(blocks_per_stage=10**9)), "'config.blocks_per_stage' must be in [1, 16]"),
        "float outputs": (safetensors_with(state, config_json(n_outputs=34.0)), "its config does not build a resnet network"),
        # the biggest network the bounds allow: built on the meta device only, then its tensors do not match the file's
        "huge config, tiny tensors": (safetensors_with(state, config_json(stem_channels=4096, widths=[4096, 4096])),
                                      "tensor 'stem.0.weight' is float32 [4, 1, 7, 7], its config needs float32 [4096, 1, 7, 7]"),
        "missing tensor": (safetensors_with(fewer, config_json()), "1 missing ('head.bias', ...), 0 unexpected"),
        "extra tensor": (safetensors_with({**state, "evil": torch.zeros(1)}, config_json()), "0 missing, 1 unexpected ('evil', ...)"),
        "other shapes": (safetensors_with(big, config_json()), "its config needs float32"),
        "other dtype": (safetensors_with({k: v.double() if v.is_floating_point() else v for k, v in state.items()}, config_json()),
                        "is float64 [4, 1, 7, 7], its config needs float32 [4, 1, 7, 7]"),
    }


@pytest.mark.parametrize("name", sorted(damaged_files(Path("unused"))))
def test_a_bad_torch_file_is_one_line_naming_it_and_runs_nothing(name, tmp_path):
    marker = tmp_path / "code_ran"
    data, says = damaged_files(marker)[name]
    path = tmp_path / "models/resnet/0.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    with pytest.raises(ModelFileError) as err:
        load_model_fn("resnet", tmp_path / "models")
    message = str(err.value)
    assert "\n" not in message and says in message, message
    assert message.startswith(f"{path}: cannot load the resnet model (")
    assert message.endswith("retrain it with `dvc repro train@resnet-0` (or fetch it with `dvc pull`)"), message
    assert not marker.exists()


def test_a_file_of_another_architecture_is_named(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "models/resnet/0.safetensors"
    save_checkpoint(path, heatmap.build(TINY_HEATMAP).state_dict(), TINY_HEATMAP)
    with pytest.raises(ModelFileError, match=re.escape(f"{path}: holds a 'heatmap' network, expected 'resnet'; ")):
        load_model_fn("resnet", tmp_path / "models")


# --- the commands, as a user runs them, on a crafted model file -------------------------------------


@pytest.fixture(scope="module")
def prepared(synthetic_raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    parse_raw(synthetic_raw, out)
    return out


def crafted_models(root: Path, name: str) -> tuple[Path, Path]:
    """A models folder whose resnet file ``name`` is a torch.save archive that writes a marker; returns (folder, marker)."""
    marker = root / "code_ran"
    models = root / "models"
    (models / "resnet").mkdir(parents=True)
    (models / "resnet" / name).write_bytes(hostile_pickles(marker)["torch.save"])
    return models, marker


def command(name: str, tmp_path: Path, split_dir: Path, synthetic_raw: Path, prepared: Path, models: Path) -> list[str]:
    tiny_params_file(tmp_path, {"submit": {"model": "resnet"}})
    if name == "submit":
        (tmp_path / "split.json").write_text('{"label_offset_x": 0.5, "label_offset_faces": 40}')
        return ["-m", "stages.submit", str(synthetic_raw / "IdLookupTable.csv"), str(prepared), str(models), "split.json", "submission.csv"]
    if name == "evaluate":
        return ["-m", "stages.evaluate", str(split_dir), str(models), "metrics/evaluate", "plots"]
    Image.fromarray(np.full((120, 120), 128, np.uint8)).save(tmp_path / "photo.png")
    return ["-m", "fkd.predict", str(tmp_path / "photo.png"), "--box", "10,10,100,100", "--model", "resnet", "--models", str(models),
            "--params", str(tmp_path / "params.yaml"), "--out", "out"]


@pytest.mark.parametrize("file_name", ["0.safetensors", "0.pt"])
@pytest.mark.parametrize("name", ["submit", "evaluate", "predict"])
def test_commands_refuse_a_crafted_model_file(name, file_name, tmp_path, split_dir, synthetic_raw, prepared):
    models, marker = crafted_models(tmp_path, file_name)
    args = command(name, tmp_path, split_dir, synthetic_raw, prepared, models)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env={**project_env(), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    expected = models / "resnet/0.safetensors"
    if file_name == "0.pt" and name != "predict":  # the stages refuse a file in their model folders that no stage writes
        assert line.startswith(f"error: {models / 'resnet/0.pt'}: no stage of split.folds [0] writes this file"), line
    elif file_name == "0.pt":  # the old name is not a model file any more: the new one is missing
        assert line.startswith(f"error: {expected} not found: run `dvc repro`"), line
    else:
        assert line.startswith(f"error: {expected}: cannot load the resnet model (it is a zip archive, as an old torch.save"), line
        assert "`dvc repro train@resnet-0`" in line
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no submission, metrics, plots or overlays


# --- Keras ------------------------------------------------------------------------------------------


def test_a_keras_file_with_a_lambda_layer_is_refused_whole_on_one_line(tmp_path):
    pytest.importorskip("keras")
    import keras

    from fkd.models.cnn.train import load_for_finetune

    marker = tmp_path / "code_ran"
    inputs = keras.Input((96, 96, 1))
    x = keras.layers.Lambda(eval(f"lambda t: (open({str(marker)!r}, 'w').write('code ran'), t)[1]"))(inputs)
    outputs = keras.layers.Dense(34)(keras.layers.Flatten()(x))
    models = tmp_path / "models"
    for folder in ("cnn_sgd", "cnn_adam"):
        (models / folder).mkdir(parents=True)
        keras.Model(inputs, outputs).save(models / folder / "0.keras")
    marker.unlink()  # building the model ran the lambda once; loading must not

    refused = ("cannot load the cnn model (Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda. "
               "This carries a potential risk of arbitrary code execution and thus it is disallowed by default)")
    with pytest.raises(ModelFileError) as err:
        load_for_finetune(models / "cnn_adam/0.keras", None)
    assert str(err.value) == (f"{models / 'cnn_adam/0.keras'}: {refused}; rebuild it with `dvc repro train_cnn_adam@0` "
                              "(or fetch it with `dvc pull`)")

    Image.fromarray(np.full((120, 120), 128, np.uint8)).save(tmp_path / "photo.png")
    proc = subprocess.run([sys.executable, "-m", "fkd.predict", str(tmp_path / "photo.png"), "--box", "10,10,100,100", "--model", "cnn",
                           "--models", str(models), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc.stderr) == (f"error: {models / 'cnn_sgd/0.keras'}: {refused}; rebuild it with "
                                           "`dvc repro train_cnn_sgd@0` (or fetch it with `dvc pull`)")
    assert not marker.exists() and not (tmp_path / "out").exists()


# --- the source -------------------------------------------------------------------------------------


def test_no_code_path_unpickles():
    unpickling = re.compile(r"torch\.load\b|\bweights_only\b|\bimport pickle\b|pickle\.loads?\b|allow_pickle\s*=\s*True|"
                            r"\bjoblib\b|cloudpickle|\bdill\b|safe_mode\s*=\s*False|enable_unsafe_deserialization")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for folder in ("fkd", "stages", "benchmarks")
             for path in sorted((ROOT / folder).rglob("*.py")) for n, line in enumerate(path.read_text().splitlines(), 1)
             if unpickling.search(line)]
    assert not found, found
