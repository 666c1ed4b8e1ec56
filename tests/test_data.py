import numpy as np
import pytest
import torch

from charlm.tasks.lm.data import check_trainable, epoch_offset, iter_windows, lay_out_streams
from charlm.text.encoding import split_train_val
from charlm.errors import CorpusError


def test_split_is_contiguous_with_validation_last():
    ids = torch.arange(100)
    train, val = split_train_val(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def _all_inputs(layout):
    return torch.cat([layout.window(k)[0] for k in range(layout.num_windows)])  # (L, B)


def test_targets_are_inputs_shifted_by_one_and_streams_cover_the_text():
    ids = torch.arange(103)
    layout = lay_out_streams(ids, batch_size=4, seq_len=5)
    stream_len = (103 - 1) // 4
    inputs = _all_inputs(layout)
    assert inputs.shape == (stream_len, 4)
    # column b holds text[b*L : (b+1)*L]: contiguous, no gaps, no overlap
    assert inputs.t().reshape(-1).tolist() == list(range(4 * stream_len))
    for k in range(layout.num_windows):
        x, y = layout.window(k)
        assert x.dtype == torch.int64 and torch.equal(y, x + 1)
    assert layout.window(layout.num_windows - 1)[0].shape[0] == stream_len - 5 * (layout.num_windows - 1)


def test_a_memory_mapped_corpus_is_laid_out_without_copying(tmp_path):
    path = tmp_path / "ids.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    ids = np.memmap(path, dtype=np.uint16, mode="r")
    layout = lay_out_streams(ids, batch_size=8, seq_len=10)
    assert np.shares_memory(layout.streams, ids)  # the epoch's layout is a view of the file
    x, y = layout.window(3)
    assert x[0].tolist() == [30 + b * 124 for b in range(8)] and torch.equal(y, x + 1)


def test_consecutive_windows_continue_each_stream():
    layout = lay_out_streams(torch.arange(500), batch_size=3, seq_len=7)
    x0, _ = layout.window(0)
    x1, _ = layout.window(1)
    assert torch.equal(x1[0], x0[-1] + 1)  # row 0 of window 1 follows the last row of window 0


def test_offset_moves_between_epochs_deterministically():
    offsets = [epoch_offset(e, 64, rng_seed=7) for e in range(20)]
    assert offsets[0] == 0 and all(0 <= o < 64 for o in offsets)
    assert len(set(offsets[1:])) > 5
    assert offsets == [epoch_offset(e, 64, rng_seed=7) for e in range(20)]
    layout = lay_out_streams(torch.arange(1000), 4, 16, offset=offsets[1])
    assert layout.window(0)[0][0, 0] == offsets[1]


def test_eval_windows_read_the_text_once_in_order():
    ids = torch.arange(50)
    pairs = list(iter_windows(ids, 8))
    xs = torch.cat([x for x, _ in pairs]).flatten()
    ys = torch.cat([y for _, y in pairs]).flatten()
    assert xs.tolist() == list(range(49)) and ys.tolist() == list(range(1, 50))


def test_too_short_for_one_batch():
    with pytest.raises(CorpusError, match="one batch needs 65"):
        check_trainable(n_train=40, n_val=10, batch_size=4, seq_len=16)
    with pytest.raises(CorpusError, match="validation split"):
        check_trainable(n_train=400, n_val=1, batch_size=4, seq_len=16)
