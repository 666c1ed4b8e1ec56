"""Memory: a run too big for the machine is refused before anything is built, in one line; so is an
allocation that fails anyway."""

import pytest
import torch

from charlm.engine.loop import train
from charlm.engine.memory import BYTES_PER_PARAMETER, OutOfMemoryError, check_fits, estimate
from charlm.engine.distributed import SINGLE
from charlm.tasks.lm.task import LanguageModelTask
from charlm.text.corpus import read_corpus


def _task(text_file, config):
    task = LanguageModelTask(read_corpus(text_file()), config)
    task.prepare(SINGLE, None)
    return task


def test_the_estimate_counts_a_huge_model_without_allocating_it(text_file, tiny_config):
    task = _task(text_file, tiny_config.replace(hidden_size=100_000, num_layers=2))
    need = estimate(task, SINGLE, None)
    # an LSTM layer has 4H x (input + H) weights and 8H biases (nn.LSTM's layout), by hand:
    H, E, V = 100_000, 16, task.vocab.size
    by_hand = V * E + 4 * H * (E + H) + 8 * H + 4 * H * (2 * H) + 8 * H + H * V + V
    assert need.parameters == by_hand and need.parameter_bytes == BYTES_PER_PARAMETER * by_hand
    averaged = estimate(_task(text_file, tiny_config.replace(hidden_size=100_000, num_layers=2, ema_decay=0.999)),
                        SINGLE, None)
    assert averaged.parameter_bytes == (BYTES_PER_PARAMETER + 4) * by_hand  # the average: one fp32 copy more


def test_a_run_that_cannot_fit_is_refused_with_the_estimate_and_what_to_lower(text_file, tiny_config):
    big_model = _task(text_file, tiny_config.replace(hidden_size=6000))  # 144M parameters: 2.3 GB with Adam's
    with pytest.raises(OutOfMemoryError, match=r"needs about 2\.3 GB .*144,\d{3},\d{3} parameters.* but 1\.0 GB "
                                               r"is available on cpu; lower --hidden-size or --num-layers"):
        check_fits(big_model, torch.device("cpu"), None, SINGLE, available=10**9)
    big_batch = _task(lambda: text_file("the quick brown fox jumps over the lazy dog.\n" * 800),
                      tiny_config.replace(batch_size=32, seq_len=64))
    need = check_fits(big_batch, torch.device("cpu"), None, SINGLE, available=10**12)  # fits
    with pytest.raises(OutOfMemoryError, match="lower --batch-size or --seq-len"):
        check_fits(big_batch, torch.device("cpu"), None, SINGLE, available=need.parameter_bytes + 1)


@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 160000000000 bytes. Error code 12 (Cannot allocate memory)"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of ..."),
])
def test_an_allocation_that_fails_anyway_is_one_line_and_leaves_nothing(tmp_path, text_file, tiny_config,
                                                                        monkeypatch, failure):
    def allocate(*args, **kwargs):
        raise failure

    monkeypatch.setattr(LanguageModelTask, "loss", allocate)
    with pytest.raises(OutOfMemoryError, match=r"ran out of memory on the cpu \(it asked for (160\.0 GB|1\.50 GiB) "
                                               r"more\); lower --batch-size or --seq-len"):
        list(train(LanguageModelTask(read_corpus(text_file()), tiny_config), tmp_path / "run"))
    assert not (tmp_path / "run").exists()
