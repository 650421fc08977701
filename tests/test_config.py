import os
import subprocess
import sys

import pytest
import yaml

from fkd.core.config import ParamsError, load_params, parse_params, to_dict
from tests.conftest import ROOT


def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_shipped_params_load_and_round_trip():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source in ("kaggle", "local", "synthetic")
    assert parse_params(to_dict(p)) == p


def test_overrides_merge_key_by_key_and_are_checked_like_the_file():
    shipped = load_params(ROOT / "params.yaml")
    p = load_params(ROOT / "params.yaml", overrides={"cnn": {"adam": {"epochs": 3}}, "heatmap": {"widths": [8, 8, 8, 8]}})
    assert p.cnn.adam.epochs == 3 and p.cnn.adam.lr == shipped.cnn.adam.lr and p.cnn.sgd == shipped.cnn.sgd
    assert p.heatmap.widths == (8, 8, 8, 8) and p.resnet == shipped.resnet
    with pytest.raises(ParamsError, match=r"heatmap.map_loss_weight"):
        load_params("heatmap", path=ROOT / "params.yaml", overrides={"heatmap": {"map_loss_weight": -1.0}})
    with pytest.raises(ParamsError, match=r"unknown key 'cnn.adam.epoch'"):
        load_params("cnn", path=ROOT / "params.yaml", overrides={"cnn": {"adam": {"epoch": 3}}})


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


def test_scientific_notation_is_a_number(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.003", "  lr: 1e-4", 1)  # YAML 1.1 would read a string
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").resnet.lr == pytest.approx(1e-4)


def test_every_param_a_stage_reads_is_declared_in_dvc_yaml():
    from tests.test_deps import resolved_stages

    declared = {name: set(map(str, s.get("params", []))) for name, s in resolved_stages(ROOT).items()}  # as DVC expands them
    assert {"data.source", "data.path", "data.competition", "synthetic"} <= declared["download"]
    assert "data.label_offset_x" not in declared["download"]  # a new offset re-splits, it does not re-download
    assert {"split", "data.label_offset_x"} <= declared["split"]
    assert "resnet" in declared["train@resnet-0"] and "heatmap" in declared["train@heatmap-0"]
    assert "cnn.adam" in declared["train_cnn_adam@0"] and "cnn.sgd" not in declared["train_cnn_adam@0"]
    assert "cnn.sgd" in declared["train_cnn_sgd@0"] and "cnn.adam" not in declared["train_cnn_sgd@0"]


@pytest.mark.parametrize("value,parsed", [("auto", "auto"), (1.25, 1.25), (0, 0.0), (-4, -4.0)])
def test_the_label_offset_is_auto_or_a_number(value, parsed):
    assert parse_params(set_key(raw(), "data.label_offset_x", value)).data.label_offset_x == parsed


def set_key(r: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = r
    for p in parents:
        node = node[p]
    node[last] = value
    return r


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("resnet.epochs", -1, r"'resnet.epochs' must be >= 1, got -1"),
        ("resnet.epochs", 0, r"'resnet.epochs' must be >= 1, got 0"),
        ("resnet.lr", -0.1, r"'resnet.lr' must be > 0, got -0.1"),
        ("resnet.lr", float("inf"), r"'resnet.lr' must be a finite number, got inf"),
        ("resnet.lr", "inf", r"'resnet.lr' must be a number, got 'inf'"),  # a string: YAML's infinity is .inf
        ("resnet.lr", float("nan"), r"'resnet.lr' must be a finite number, got nan"),
        ("cnn.adam.lr", 0.0, r"'cnn.adam.lr' must be > 0, got 0.0"),
        ("cnn.sgd.lr", float("-inf"), r"'cnn.sgd.lr' must be a finite number"),
        ("resnet.batch_size", 0, r"'resnet.batch_size' must be >= 1, got 0"),
        ("cnn.batch_size", 0, r"'cnn.batch_size' must be >= 1, got 0"),
        ("synthetic.partial_fraction", 2, r"'synthetic.partial_fraction' must be in \[0, 1\], got 2.0"),
        ("synthetic.n_train", -5, r"'synthetic.n_train' must be >= 1, got -5"),
        ("synthetic.seed", -1, r"'synthetic.seed' must be in \[0, 4294967295\], got -1"),
        ("data.label_offset_x", 9.0, r"'data.label_offset_x' must be in \[-4, 4\], got 9.0"),
        ("data.label_offset_x", "left", r"'data.label_offset_x' must be 'auto' or a number, got 'left'"),
        ("ensemble.weights", "equal", r"'ensemble.weights' must be 'fitted' or a list, got 'equal'"),
        ("split.val_fraction", 1.5, r"'split.val_fraction' must be in \(0, 1\), got 1.5"),
        ("split.val_fraction", 0, r"'split.val_fraction' must be in \(0, 1\), got 0.0"),
        ("split.near_duplicate_corr", 0.4, r"'split.near_duplicate_corr' must be in \[0.5, 1\], got 0.4"),
        ("split.near_duplicate_corr", 1.2, r"'split.near_duplicate_corr' must be in \[0.5, 1\], got 1.2"),
        ("resnet.patience", 0, r"'resnet.patience' must be >= 1"),
        ("resnet.weight_decay", -1e-4, r"'resnet.weight_decay' must be >= 0"),
        ("resnet.warmup_fraction", 1.0, r"'resnet.warmup_fraction' must be in \[0, 1\)"),
        ("resnet.step_size", 0, r"'resnet.step_size' must be >= 1"),
        ("resnet.step_gamma", 0, r"'resnet.step_gamma' must be in \(0, 1\]"),
        ("resnet.threads", -1, r"'resnet.threads' must be >= 0"),
        ("resnet.widths", [], r"'resnet.widths' must have at least 1 items, got 0"),
        ("resnet.widths", [32, 0], r"'resnet.widths\[1\]' must be >= 1, got 0"),
        ("resnet.augment.scale", 1.0, r"'resnet.augment.scale' must be in \[0, 1\)"),
        ("resnet.augment.rotate_deg", -5.0, r"'resnet.augment.rotate_deg' must be in \[0, 180\]"),
        ("cnn.sgd.momentum", 1.0, r"'cnn.sgd.momentum' must be in \[0, 1\), got 1.0"),
        ("cnn.sgd.plateau_factor", 1.0, r"'cnn.sgd.plateau_factor' must be in \(0, 1\)"),
        ("cnn.sgd.plateau_patience", -1, r"'cnn.sgd.plateau_patience' must be >= 0"),
        ("cnn.dropout", [0.05, 1.0, 0.15], r"'cnn.dropout\[1\]' must be in \[0, 1\), got 1.0"),
        ("cnn.dropout", [0.05, 0.1], r"'cnn.dropout' must have one rate per cnn.filters entry \(3\), got 2"),
        ("cnn.filters", [8] * 7, r"'cnn.filters' must have 1 to 6 items, got 7"),
        ("cnn.dense", [16, 0], r"'cnn.dense\[1\]' must be >= 1"),
        ("cnn.kernel", 0, r"'cnn.kernel' must be in \[1, 96\]"),
        ("cnn.huber_delta", 0, r"'cnn.huber_delta' must be > 0"),
        ("cnn.leaky_alpha", -0.1, r"'cnn.leaky_alpha' must be in \[0, 1\]"),
        ("ensemble.weights", [-1, 2, 1], r"'ensemble.weights\[0\]' must be >= 0, got -1.0"),
        ("ensemble.weights", [0, 0, 0], r"'ensemble.weights' must have a positive sum, got \[0.0, 0.0, 0.0\]"),
        ("evaluate.grid_faces", 0, r"'evaluate.grid_faces' must be >= 1, got 0"),
        ("evaluate.worst_faces", 13, r"'evaluate.worst_faces' must be between 0 and evaluate.grid_faces \(12\), got 13"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(key, value, message):
    r = set_key(raw(), key, value)
    with pytest.raises(ParamsError, match=message):
        parse_params(r)


def test_yaml_infinity_is_rejected(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.003", "  lr: .inf", 1)
    assert "lr: .inf" in text
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=r"'resnet.lr' must be a finite number, got inf"):
        load_params(tmp_path / "params.yaml")


def test_edges_of_the_ranges_are_accepted():
    r = raw()
    for key, value in [("resnet.epochs", 1), ("resnet.warmup_fraction", 0.0), ("resnet.step_gamma", 1.0),
                       ("synthetic.partial_fraction", 1.0), ("cnn.sgd.momentum", 0.0), ("ensemble.weights", [0, 1, 0]),
                       ("evaluate.worst_faces", 12), ("synthetic.seed", 2**32 - 1), ("cnn.dense", [])]:
        set_key(r, key, value)
    p = parse_params(r)
    assert p.resnet.epochs == 1 and p.ensemble.weights == (0.0, 1.0, 0.0) and p.cnn.dense == ()


def test_a_stage_turns_a_range_error_into_one_line(tmp_path):
    """The split stage with split.val_fraction: 1.5: exit 2, one line naming the key, no traceback, no output."""
    r = set_key(raw(), "split.val_fraction", 1.5)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(r))
    proc = subprocess.run([sys.executable, "-m", "stages.split", "prepared", "split", "split.json"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: params: 'split.val_fraction' must be in (0, 1), got 1.5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_a_python_tag_in_params_yaml_runs_nothing_and_is_one_line(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "params.yaml"
    path.write_text(f'data: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ParamsError) as err:
        load_params(path=path)
    assert str(err.value).startswith(f"params: {path} is not valid YAML") and not marker.exists()
