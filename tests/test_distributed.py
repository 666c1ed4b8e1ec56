"""Training over several processes: torchrun with Gloo on 127.0.0.1, against one process."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from charlm.engine.checkpoint import read_tensors
from charlm.engine.distributed import World, DistributedError
from charlm.tasks.lm.evaluate import choose_streams, score_ids
from charlm.tasks.lm.model import CharRNN, ModelSpec
from conftest import REPO

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}.\n" for i in range(300))
FLAGS = ["--config", str(REPO / "configs" / "tiny.toml"), "--num-layers", "2", "--sample-length", "0",
         "--device", "cpu", "--precision", "fp32", "--dist-timeout", "60s"]


def _torchrun(cwd, nproc, *args, wait=True):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "charlm", "train", *args]
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        proc.out = out
    return proc


def _charlm(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "charlm", "train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def _last(run_dir):
    record = json.loads((run_dir / "last.json").read_text())
    return read_tensors(run_dir / record["weights"]), record


def _metrics(run_dir, key):
    return [json.loads(line)[key] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if key in json.loads(line)]


@pytest.mark.slow
def test_two_gloo_processes_train_the_weights_of_one_process_with_the_same_global_batch(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    # With a moving average of the weights: the weights files hold the average, the state files the weights.
    steps = ["--max-steps", "20", "--eval-every", "10", "--ema-decay", "0.9"]
    ddp = _torchrun(tmp_path, 2, "corpus.txt", "--out", "ddp", "--batch-size", "4", *FLAGS, *steps)
    single = _charlm(tmp_path, "corpus.txt", "--out", "single", "--batch-size", "8", *FLAGS, *steps)
    assert single.returncode == 0, single.stderr
    assert "2 processes x batch 4 = effective batch 8 streams" in ddp.out
    got, record = _last(tmp_path / "ddp")
    expected, expected_record = _last(tmp_path / "single")
    assert record["step"] == expected_record["step"] == 20
    got_live, expected_live = (read_tensors(tmp_path / run / record["state"]) for run, record in
                               (("ddp", record), ("single", expected_record)))
    for name in expected:  # the same sums, added in another order: equal to fp32 rounding
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
        live = f"training_weights.{name}"
        torch.testing.assert_close(got_live[live], expected_live[live], rtol=1e-4, atol=1e-5, msg=live)
    assert record["val_loss"] == pytest.approx(expected_record["val_loss"], abs=1e-5)  # sharded evaluation
    assert _metrics(tmp_path / "ddp", "train_loss") == pytest.approx(_metrics(tmp_path / "single", "train_loss"),
                                                                     abs=1e-5)


@pytest.mark.slow
def test_sigterm_under_torchrun_saves_and_the_resumed_run_is_bitwise_identical(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    flags = [*FLAGS, "--batch-size", "4", "--max-steps", "120", "--eval-every", "25", "--dropout", "0.2"]
    _torchrun(tmp_path, 2, "corpus.txt", "--out", "straight", *flags)
    proc = _torchrun(tmp_path, 2, "corpus.txt", "--out", "stopped", *flags, wait=False)
    metrics, deadline = tmp_path / "stopped" / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and '"step": 40' in metrics.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to every worker
    out, err = proc.communicate(timeout=120)
    stopped_at = json.loads((tmp_path / "stopped" / "last.json").read_text())["step"]
    assert 40 <= stopped_at < 120 and "interrupted" in out, err
    assert "the same torchrun command (2 processes) with --resume" in err  # not a 1-process command
    _torchrun(tmp_path, 2, "--resume", "--out", "stopped", *flags)
    straight, _ = _last(tmp_path / "straight")
    resumed, record = _last(tmp_path / "stopped")
    assert record["step"] == 120
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


@pytest.mark.slow
def test_resuming_with_another_number_of_processes_is_refused(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    _torchrun(tmp_path, 2, "corpus.txt", "--out", "run", *FLAGS, "--max-steps", "10", "--eval-every", "10")
    alone = _charlm(tmp_path, "--resume", "--out", "run", *FLAGS, "--max-steps", "20")
    assert alone.returncode == 1 and len(alone.stderr.strip().splitlines()) == 1
    assert "trained by 2 process(es) and is resumed by 1" in alone.stderr and "--nproc-per-node 2" in alone.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_rank_that_dies_or_hangs_makes_the_others_exit_with_a_clear_error(tmp_path, how):
    """Launched as SLURM or a hand-written script would, without torchrun's agent to clean up."""
    (tmp_path / "corpus.txt").write_text(TEXT)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
               OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "charlm", "train", "corpus.txt", "--out", "run", *FLAGS, "--batch-size", "4",
            "--max-steps", "1000000", "--eval-every", "20", "--dist-timeout", "10s"]
    ranks = [subprocess.Popen(argv, cwd=tmp_path, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "last.json").exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in ranks)
            time.sleep(0.01)
        ranks[1].send_signal(signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        started = time.monotonic()
        err = ranks[0].communicate(timeout=60)[1]
        assert ranks[0].returncode == 1, err
        assert time.monotonic() - started < 40  # the 10 s timeout, not a hang
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "lost contact with the other processes of this run" in lines[0]
    finally:
        for proc in ranks:
            proc.kill()
            proc.wait()


def test_world_comes_from_torchruns_environment():
    assert World.from_environment({}) == World(rank=0, local_rank=0, size=1)
    world = World.from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (world.rank, world.local_rank, world.size, world.is_main, world.distributed) == (3, 1, 4, False, True)
    assert world.share(8) == slice(24, 32)
    for bad in ({"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}):
        with pytest.raises(DistributedError, match="torchrun"):
            World.from_environment(bad)


@pytest.mark.parametrize("world_size", [2, 3, 100])
def test_evaluation_shards_add_up_to_the_whole_pass(world_size):
    torch.manual_seed(0)
    model = CharRNN(ModelSpec(vocab_size=20, cell="gru", hidden_size=16, num_layers=2, embedding_size=8))
    ids = torch.randint(0, 20, (20_000,))
    streams = choose_streams(len(ids))
    whole = score_ids(model, ids, streams=streams)
    shards = sum(score_ids(model, ids, streams=streams, shard=(rank, world_size)) for rank in range(world_size))
    assert streams > 1 and float(shards) == pytest.approx(float(whole), rel=1e-6)  # fp32 sums per chunk


def test_a_second_join_gives_the_same_device_as_the_first(monkeypatch):
    # The CLI joins before opening the corpus and train() joins again: on a GPU
    # both must name this rank's GPU, not the bare "cuda" the config says.
    from charlm.engine import distributed
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    world = World(rank=3, local_rank=1, size=4)
    assert distributed.join(world, torch.device("cuda"), 60) == torch.device("cuda", 1)
    assert distributed.join(world, torch.device("cpu"), 60) == torch.device("cpu")
