"""benchmarks.recipe_sweep: its variants are the pipeline's params with a few values changed."""
import subprocess
import sys

import pytest

from benchmarks.recipe_sweep import VARIANTS, params_with, speed
from fkd.core.config import load_params
from fkd.core.schema import ParamsError
from fkd.models.registry import MODELS
from tests.conftest import ROOT

PARAMS = ROOT / "params.yaml"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_a_registered_model_with_valid_params(name):
    model, overrides = VARIANTS[name]
    assert model in MODELS
    p = getattr(params_with(model, overrides, PARAMS), model)
    for key, value in overrides.items():
        assert getattr(p, key) == (tuple(value) if isinstance(value, list) else value)


def test_params_with_keeps_the_rest_of_the_section_and_checks_the_overrides():
    shipped = load_params(PARAMS).heatmap
    p = params_with("heatmap", {"blocks_per_stage": 2}, PARAMS).heatmap
    assert p.blocks_per_stage == 2 and p.map_loss_weight == shipped.map_loss_weight and p.lr == shipped.lr
    with pytest.raises(ParamsError, match="heatmap.map_loss_weight"):
        params_with("heatmap", {"map_loss_weight": -1.0}, PARAMS)


def test_speed_times_the_network_the_params_describe():
    p = params_with("heatmap", {"widths": [4, 8, 8, 8], "decoder_channels": 8}, PARAMS)
    assert speed("heatmap", p, threads=1, steps=1, batch=2) > 0


def test_a_missing_split_folder_is_one_line_and_exit_code_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.recipe_sweep", str(tmp_path / "no-split"), "--only", "resnet_e40"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'no-split' / 'val_fold.npy'}: not found")
