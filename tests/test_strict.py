"""Strict doors end to end: a stage's bad input is one line and exit 2; TensorFlow starts quietly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fkd.nn.tf_env import filter_log
from tests.conftest import ROOT


def run_module(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FKD_TF_VERBOSE")}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def test_split_stage_leaving_no_validation_rows_is_one_line(tmp_path, synthetic_raw):
    from fkd.core.data import parse_raw

    prepared = tmp_path / "prepared"
    parse_raw(synthetic_raw, prepared)
    for name in ("train_images.npy", "train_keypoints.npy"):
        np.save(prepared / name, np.load(prepared / name)[:1])
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_module(["-m", "stages.split", "prepared", "split", "split.json"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f"error: {Path('prepared') / 'train_keypoints.npy'}: split.val_fraction {params['split']['val_fraction']} "
                    "of 1 rows leaves 0 validation rows; change split.val_fraction or use more training rows")
    assert not (tmp_path / "split").exists()


def test_parse_stage_with_a_lookup_table_naming_an_unknown_image_is_one_line(tmp_path, synthetic_raw):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("training.csv", "test.csv"):
        (raw / name).write_bytes((synthetic_raw / name).read_bytes())
    lookup = (synthetic_raw / "IdLookupTable.csv").read_text().splitlines()
    lookup.append(f"{len(lookup)},999,nose_tip_x,")
    (raw / "IdLookupTable.csv").write_text("\n".join(lookup) + "\n")
    proc = run_module(["-m", "stages.parse", "raw", "prepared"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {Path('raw') / 'IdLookupTable.csv'}: row {len(lookup) - 1} (RowId {len(lookup) - 1}): "
                           "ImageId 999 is not in test.csv")
    assert not (tmp_path / "prepared").exists()


# --- TensorFlow's start-up noise ---------------------------------------------------------------

CAPTURED = """\
not a log line
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795668568.162235    2760 port.cc:153] oneDNN custom operations are on. To turn them off, set `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1795668568.248596    2760 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
/site-packages/tensorflow/x.py:3: UserWarning: a Python warning
  warnings.warn("a Python warning")
W0000 00:00:1795668568.3 2760 gpu_device.cc:2] Cannot dlopen some GPU libraries.
E0000 00:00:1795668570.916227    2760 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)
"""


def test_filter_log_drops_messages_below_the_level_and_keeps_the_rest():
    assert filter_log(CAPTURED, 0) == CAPTURED
    assert filter_log(CAPTURED, 3).splitlines() == [
        "not a log line",
        "/site-packages/tensorflow/x.py:3: UserWarning: a Python warning",
        '  warnings.warn("a Python warning")',
    ]
    at_2 = filter_log(CAPTURED, 2)
    assert "cuInit" in at_2 and "oneDNN" not in at_2 and "To enable" not in at_2 and "Cannot dlopen" not in at_2
    assert "Cannot dlopen" in filter_log(CAPTURED, 1) and "absl::InitializeLog" not in filter_log(CAPTURED, 1)


TF_START = "import fkd.nn.tf_env, os; import tensorflow as tf; tf.constant(1.0) + 1; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"


def test_tensorflow_starts_quietly(tmp_path):
    pytest.importorskip("tensorflow")
    proc = run_module(["-c", TF_START], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.strip() == "3"


@pytest.mark.parametrize("env", [{"FKD_TF_VERBOSE": "1"}, {"TF_CPP_MIN_LOG_LEVEL": "0"}])
def test_tensorflow_messages_can_be_seen_again(tmp_path, env):
    pytest.importorskip("tensorflow")
    proc = run_module(["-c", TF_START.replace("; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])", "")], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    if not proc.stderr:
        pytest.skip("this TensorFlow prints nothing at start-up here")
    assert any(line[:1] in "IWE" and "] " in line for line in proc.stderr.splitlines()), proc.stderr
