"""Each stage loads only the params sections it reads: a data stage imports no model code, a model's section class is
found by its name, and a section a stage does not read is not checked there, but a typo'd section name is refused by every load."""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fkd.core.cli import run_stage
from fkd.core.config import MODEL_NAMES, SECTIONS, ParamsError, load_params, section_class, to_dict
from tests.conftest import ROOT

#: The sections a params.yaml may have: the pipeline's, with the models' (the folders of fkd/models/, by name) after split.
ALLOWED = "data, synthetic, split, cnn, heatmap, resnet, ensemble, tta, evaluate, submit"

DATA_STAGES = """
import json, sys
from stages.download import main as download
from stages.parse import main as parse
from stages.split import main as split
download(["data/raw"]); parse(["data/raw", "data/prepared"]); split(["data/prepared", "data/split", "split.json"])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[:2] == ["fkd", "models"] or m in ("fkd.nn.torch_params", "fkd.models.registry"))))
"""


def write_params(folder: Path, change=None) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    if change:
        change(raw)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_data_stages_import_no_model_code(tmp_path):
    """download, parse and split run end to end (synthetic faces) without importing fkd.models, fkd.nn.torch_params or the registry."""
    write_params(tmp_path, lambda r: r["synthetic"].update(n_train=40, n_test=4))
    proc = subprocess.run([sys.executable, "-c", DATA_STAGES], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []
    assert (tmp_path / "data/split/val_fold.npy").is_file()


def typo(raw: dict) -> None:
    raw["resnett"] = raw["resnet"]


def test_a_typo_in_a_section_name_is_refused_by_every_load(tmp_path):
    path = write_params(tmp_path, typo)
    for sections in (("split",), ("data", "synthetic"), ("cnn",), ()):
        with pytest.raises(ParamsError, match=rf"^params: unknown key 'resnett' \(allowed here: {ALLOWED}\)$"):
            load_params(*sections, path=path)


def test_a_stage_turns_a_typo_section_into_one_line(tmp_path, monkeypatch, capsys):
    from stages.split import main as split_main

    write_params(tmp_path, typo)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage(split_main, ["prepared", "split", "split.json"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: params: unknown key 'resnett' (allowed here: {ALLOWED})"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_load_checks_only_its_sections(tmp_path):
    """A bad cnn section stops whoever reads cnn, not the split; a section asked for must be there."""
    path = write_params(tmp_path, lambda r: (r["cnn"].update(kernel=0), r.pop("heatmap")))
    p = load_params("data", "split", path=path)
    assert [f.name for f in dataclasses.fields(p)] == ["data", "split"] and p.split.folds == (0,)
    with pytest.raises(ParamsError, match=r"^params: 'cnn.kernel' must be in \[1, 96\], got 0$"):
        load_params("cnn", path=path)
    with pytest.raises(ParamsError, match=r"^params: missing key 'heatmap'$"):
        load_params("split", "heatmap", path=path)
    with pytest.raises(ParamsError, match=r"^params: missing key 'heatmap'$"):  # all sections: missing ones first, as before
        load_params(path)


def test_a_models_section_is_found_by_its_name_in_its_folder():
    """config finds the models' sections by their folders (no import), the same models the registry lists; each
    section's class is ``Params`` of that model's package."""
    from fkd.models import registry

    folders = sorted(p.parent.name for p in (ROOT / "fkd" / "models").glob("*/__init__.py"))
    assert list(MODEL_NAMES) == folders == sorted(registry.MODEL_NAMES)
    assert SECTIONS == ("data", "synthetic", "split", *MODEL_NAMES, "ensemble", "tta", "evaluate", "submit")
    for name in MODEL_NAMES:
        assert section_class(name) is importlib.import_module(f"fkd.models.{name}").Params
        assert section_class(name).__module__.split(".")[:3] == ["fkd", "models", name]  # declared in its folder
        assert type(getattr(load_params(name, path=ROOT / "params.yaml"), name)) is section_class(name)


def test_sections_give_the_same_dicts_as_the_whole_file():
    """Model files and logs hold to_dict(section): the same keys in the same order, lists not tuples, floats as floats."""
    whole = to_dict(load_params(ROOT / "params.yaml"))
    assert list(whole) == list(SECTIONS)
    for names in (("resnet",), ("split", "cnn"), ("data", "synthetic")):
        part = to_dict(load_params(*names, path=ROOT / "params.yaml"))
        assert json.dumps(part) == json.dumps({n: whole[n] for n in names})
    assert whole["resnet"]["widths"] == [32, 64, 128, 256, 512] and isinstance(whole["cnn"]["target_scale"], float)
