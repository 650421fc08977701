"""The bf16 choice and the thread count of both trainers (torch and Keras) come from one place, fkd.nn.train_result."""
from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest

from fkd.nn import train_result


@pytest.mark.parametrize("native", [True, False])
def test_both_trainers_choose_bf16_alike(native, monkeypatch, caplog):
    torch = pytest.importorskip("torch")
    from fkd.models.cnn import train as cnn_train
    from fkd.nn import torch_train

    monkeypatch.setattr(train_result, "cpu_has_native_bf16", lambda: native)
    caplog.set_level(logging.INFO)
    assert torch_train.use_bf16(SimpleNamespace(bf16=False, cpu_bf16=True), torch.device("cpu")) is native
    assert cnn_train.use_bf16(SimpleNamespace(bf16=True), "cpu") is native
    assert cnn_train.use_bf16(SimpleNamespace(bf16=True), "NVIDIA H200") is True  # a GPU: no CPU check
    assert torch_train.use_bf16(SimpleNamespace(bf16=False, cpu_bf16=False), torch.device("cpu")) is False
    warned = [r.getMessage() for r in caplog.records if "no bf16 instructions" in r.getMessage()]
    assert warned == ([] if native else [f"{key} is on, but this CPU has no bf16 instructions (AVX512-BF16, AMX): training in fp32"
                                         for key in ("cpu_bf16", "cnn.bf16")])


def test_cpu_threads_zero_means_every_core_this_process_may_use():
    assert train_result.cpu_threads(3) == 3
    assert train_result.cpu_threads(0) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("flags, expected", [
    ("fpu avx512f avx512_bf16 avx512_vnni", ["avx512_bf16"]),
    ("avx512f avx512_bf16 amx_bf16 amx_tile", ["avx512_bf16", "amx_bf16"]),
    ("fpu avx2 avx512f", []),
])
def test_the_cpus_bf16_instruction_sets_are_read_from_its_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert train_result.cpu_bf16_instructions(cpuinfo) == expected
    assert train_result.cpu_bf16_instructions(tmp_path / "missing") == []  # not Linux: no bf16, fp32
