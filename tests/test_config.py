import pytest
import yaml

from fkd.config import ParamsError, load_params, parse_params, to_dict
from tests.conftest import ROOT


def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_load_and_round_trip():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source in ("kaggle", "local", "synthetic")
    assert parse_params(to_dict(p)) == p


def test_unknown_key_is_named():
    r = raw()
    r["resnet"]["learning_rate"] = 0.1
    with pytest.raises(ParamsError, match=r"unknown key 'resnet.learning_rate'"):
        parse_params(r)


def test_missing_nested_key_is_named():
    r = raw()
    del r["cnn"]["sgd"]["momentum"]
    with pytest.raises(ParamsError, match=r"missing key 'cnn.sgd.momentum'"):
        parse_params(r)


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("resnet", "epochs", "ten", "resnet.epochs' must be an integer"),
        ("resnet", "lr", "fast", "resnet.lr' must be a number"),
        ("resnet", "bf16", "yes", "resnet.bf16' must be true or false"),
        ("data", "source", "ftp", "data.source' must be one of kaggle, local, synthetic"),
        ("resnet", "widths", 64, "resnet.widths' must be a list"),
    ],
)
def test_wrong_types_are_named(section, key, value, message):
    r = raw()
    r[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(r)


def test_scientific_notation_strings_are_numbers():
    r = raw()
    r["resnet"]["lr"] = "1e-4"  # YAML 1.1 reads 1e-4 as a string
    assert parse_params(r).resnet.lr == pytest.approx(1e-4)


def test_every_param_a_stage_reads_is_declared_in_dvc_yaml():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = {name: set(map(str, s.get("params", []))) for name, s in stages.items()}
    assert {"data", "synthetic"} <= declared["download"]
    assert "split" in declared["split"]
    assert "resnet" in declared["train_resnet"]
    assert "cnn.adam" in declared["train_cnn_adam"] and "cnn.sgd" not in declared["train_cnn_adam"]
    assert "cnn.sgd" in declared["train_cnn_sgd"] and "cnn.adam" not in declared["train_cnn_sgd"]
