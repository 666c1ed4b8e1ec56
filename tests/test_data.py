import pytest
import torch

from charlm.data import check_trainable, epoch_offset, iter_windows, lay_out_streams, split_train_val
from charlm.errors import CorpusError


def test_split_is_contiguous_with_validation_last():
    ids = torch.arange(100)
    train, val = split_train_val(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_targets_are_inputs_shifted_by_one_and_streams_cover_the_text():
    ids = torch.arange(103)
    layout = lay_out_streams(ids, batch_size=4, seq_len=5)
    stream_len = (103 - 1) // 4
    assert layout.inputs.shape == (stream_len, 4)
    # column b holds text[b*L : (b+1)*L]: contiguous, no gaps, no overlap
    assert layout.inputs.t().reshape(-1).tolist() == list(range(4 * stream_len))
    assert torch.equal(layout.targets, layout.inputs + 1)
    seen = []
    for k in range(layout.num_windows):
        x, y = layout.window(k)
        assert torch.equal(y, x + 1)
        seen.append(x)
    assert torch.equal(torch.cat(seen), layout.inputs)
    assert seen[-1].shape[0] == stream_len - 5 * (layout.num_windows - 1)


def test_windows_are_views_not_copies():
    layout = lay_out_streams(torch.arange(1000), batch_size=8, seq_len=10)
    x, _ = layout.window(3)
    assert x.is_contiguous() and x.untyped_storage().data_ptr() == layout.inputs.untyped_storage().data_ptr()


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
    assert layout.inputs[0, 0] == offsets[1]


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
