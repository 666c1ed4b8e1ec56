import pytest
import torch

import charlm.engine.runtime as runtime
from charlm.errors import DeviceError
from charlm.engine.runtime import precision_name, resolve_device, resolve_precision

CPU = torch.device("cpu")


def test_auto_takes_bf16_for_the_lstm_only_on_a_cpu_with_amx(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: True)
    assert resolve_precision("auto", CPU, "lstm") is torch.bfloat16
    # oneDNN's GRU and tanh-RNN are no faster in bf16 on such a CPU (bench/train_throughput.py).
    assert resolve_precision("auto", CPU, "gru") is None and resolve_precision("auto", CPU, "rnn") is None
    monkeypatch.setattr(runtime, "cpu_has_amx", lambda: False)
    assert resolve_precision("auto", CPU, "lstm") is None


def test_named_precisions():
    assert resolve_precision("fp32", CPU, "lstm") is None
    assert resolve_precision("bf16", CPU, "gru") is torch.bfloat16
    with pytest.raises(DeviceError, match="fp16 needs a GPU"):
        resolve_precision("fp16", CPU, "lstm")
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]


def test_auto_device_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(DeviceError, match="sees no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_on_cuda_is_bf16_where_supported():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert resolve_precision("auto", torch.device("cuda"), "lstm") is expected
    assert resolve_precision("fp16", torch.device("cuda"), "lstm") is torch.float16
