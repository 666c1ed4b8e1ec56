"""Pairs (`--task seq2seq`): translation quality in a wall-clock budget, against the Keras example's model.

    python bench/seq2seq_quality.py keras [--time-budget 10m] [--config FILE] [--out ...]
    python bench/seq2seq_quality.py full [--time-budget 30m] [--config configs/eng-fra.toml] [--out ...]

keras: the Keras example's own data, the first 10,000 pairs of
../shared/data/eng-fra.txt, split by distinct source (seeded, 90/10, the
split charlm trains on). Side by side in one process, for the same
wall-clock time each: charlm's default seq2seq (`charlm train --task
seq2seq`, evaluations included in its time), and a re-implementation of the
Keras example "Character-level recurrent sequence-to-sequence model"
(keras-io examples/nlp/lstm_seq2seq.py): one-hot characters, an LSTM of 256
encoder whose final (h, c) starts an LSTM of 256 decoder, no attention, a
softmax layer; "\\t" starts and "\\n" ends each target; inputs and targets
padded with spaces that the encoder reads and the loss counts (the example
masks nothing); Keras's initialisation (Glorot inputs, orthogonal recurrence,
forget-gate bias 1); RMSprop with Keras's defaults (lr 1e-3, rho 0.9, eps
1e-7), batch 64, reshuffled each epoch, on all of the training split (the
example holds out 20% more, unused here). Both are scored on the same
validation sources against all their targets: chrF, exact match and BLEU
(sacrebleu), greedy; charlm also with beam search (beam 5).

full: all 135,842 pairs for the budget; chrF, exact match and BLEU on the
source-disjoint validation split (greedy and beam 5), and five example
translations.

Both figures depend on the machine: run on an otherwise idle one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, machine_facts  # noqa: E402

from charlm.config import build_config, load_config_file, parse_duration  # noqa: E402
from charlm.decode.search import BeamOptions  # noqa: E402
from charlm.engine.events import Evaluated, RunFinished  # noqa: E402
from charlm.engine.loop import train  # noqa: E402
from charlm.runs import load_checkpoint  # noqa: E402
from charlm.tasks.seq2seq.decode import Decoding  # noqa: E402
from charlm.tasks.seq2seq.inference import evaluate_seq2seq, recorded_validation  # noqa: E402
from charlm.tasks.seq2seq.metrics import translation_scores  # noqa: E402
from charlm.tasks.seq2seq.task import Seq2SeqTask, decoded_subset  # noqa: E402
from charlm.text.pairs import group_references, read_pairs, split_by_source  # noqa: E402

ENG_FRA = REPO.parent / "shared" / "data" / "eng-fra.txt"
KERAS_PAIRS = 10_000


def data_file(count: int | None) -> Path:
    if count is None:
        return ENG_FRA
    lines = ENG_FRA.read_text(encoding="utf-8").splitlines()[:count]
    path = Path(tempfile.mkdtemp()) / f"eng-fra-{count}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_charlm(path: Path, budget: str, preset: Path | None) -> dict:
    """charlm's seq2seq trained for the budget, scored greedy and with beam 5 on its validation split."""
    config = build_config({"task": "seq2seq", **(load_config_file(preset) if preset else {})},
                          {"time_budget": budget, "max_steps": "none", "epochs": "none"})
    run = Path(tempfile.mkdtemp()) / "run"
    curve, finished = [], None
    for event in train(Seq2SeqTask(read_pairs(path, reverse=config.reverse,
                                              max_source_length=config.max_source_length,
                                              max_target_length=config.max_target_length), config), run):
        if isinstance(event, Evaluated):
            curve.append({"step": event.step, "seconds": round(event.elapsed_seconds, 1),
                          **{k: round(v, 4) for k, v in event.metrics.items()}})
            print(f"charlm step {event.step}: {curve[-1]}", file=sys.stderr)
        finished = event if isinstance(event, RunFinished) else finished
    loaded = load_checkpoint(run)
    greedy, translations = evaluate_seq2seq(loaded)
    beam, _ = evaluate_seq2seq(loaded, decoding=Decoding(beam=BeamOptions(beam_size=5)))
    examples = [{"source": t.source, "output": t.text, "references": refs}
                for t, (_, refs) in zip(decoded_subset(translations, 5),
                                        decoded_subset(group_references(recorded_validation(loaded)), 5))]
    return {"config": {k: v for k, v in config.to_dict().items() if k in (
                "cell", "hidden_size", "num_layers", "embedding_size", "attention", "dropout", "batch_size", "lr",
                "precision")},
            "parameters": loaded.model.num_parameters(), "steps": finished.step, "best_step": finished.best_step,
            "greedy": _figures(greedy), "beam_5": _figures(beam), "examples": examples, "evaluations": curve}


def _figures(stats) -> dict:
    return {"chrf": round(stats.chrf, 2), "exact_match": round(stats.exact_match, 4), "bleu": round(stats.bleu, 2),
            "nats_per_char": round(stats.nats_per_char, 4), "sources": stats.sources}


class KerasStyle(nn.Module):
    """The Keras example's model: one-hot characters, LSTM 256 encoder -> its (h, c) -> LSTM 256 decoder -> softmax."""

    def __init__(self, source_size: int, target_size: int, latent: int = 256):
        super().__init__()
        self.encoder = nn.LSTM(source_size, latent, batch_first=True)
        self.decoder = nn.LSTM(target_size, latent, batch_first=True)
        self.head = nn.Linear(latent, target_size)
        for lstm in (self.encoder, self.decoder):  # Keras: glorot_uniform, orthogonal, zero biases, forget bias 1
            nn.init.xavier_uniform_(lstm.weight_ih_l0)
            nn.init.orthogonal_(lstm.weight_hh_l0)
            nn.init.zeros_(lstm.bias_ih_l0)
            nn.init.zeros_(lstm.bias_hh_l0)
            lstm.bias_ih_l0.data[latent:2 * latent] = 1.0
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, source: torch.Tensor, decoder_in: torch.Tensor) -> torch.Tensor:
        """source (B, S) ids, decoder_in (B, T) ids -> logits (B, T, V); one-hot inputs as in the example."""
        _, state = self.encoder(F.one_hot(source, self.encoder.input_size).float())
        out, _ = self.decoder(F.one_hot(decoder_in, self.decoder.input_size).float(), state)  # (B, T, H)
        return self.head(out)  # (B, T, V)


def run_keras_style(path: Path, budget_seconds: float, seed: int = 1337) -> dict:
    config = build_config({"task": "seq2seq"})
    pairs = read_pairs(path).pairs
    train_pairs, val_pairs = split_by_source(pairs, config.val_frac, config.rng_seed)
    source_chars = sorted({c for p in pairs for c in p.source} | {" "})
    target_chars = sorted({c for p in pairs for c in p.target} | {" ", "\t", "\n"})
    source_index = {c: i for i, c in enumerate(source_chars)}
    target_index = {c: i for i, c in enumerate(target_chars)}
    max_source = max(len(p.source) for p in pairs)
    max_target = max(len(p.target) for p in pairs) + 2  # with "\t" and "\n"

    def encode(texts, index, length):
        ids = torch.full((len(texts), length), index[" "], dtype=torch.long)  # padded with spaces
        for row, text in enumerate(texts):
            ids[row, :len(text)] = torch.tensor([index[c] for c in text])
        return ids

    source = encode([p.source for p in train_pairs], source_index, max_source)
    target = encode(["\t" + p.target + "\n" for p in train_pairs], target_index, max_target + 1)
    decoder_in, expected = target[:, :-1], target[:, 1:]  # expected: shifted by one, space after "\n"
    torch.manual_seed(seed)
    model = KerasStyle(len(source_chars), len(target_chars))
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    start, steps, epochs = time.monotonic(), 0, 0
    while time.monotonic() - start < budget_seconds:
        order = torch.randperm(len(train_pairs))
        for begin in range(0, len(order), 64):
            rows = order[begin:begin + 64]
            logits = model(source[rows], decoder_in[rows])  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), expected[rows].flatten())  # every position, padding too
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if time.monotonic() - start >= budget_seconds:
                break
        epochs += 1
    references = group_references(val_pairs)
    outputs = keras_greedy(model, [s for s, _ in references], source_index, target_chars, max_source, max_target)
    scores = translation_scores(outputs, [targets for _, targets in references])
    return {"parameters": sum(p.numel() for p in model.parameters()), "steps": steps, "epochs_started": epochs,
            "greedy": {"chrf": round(scores["chrf"], 2), "exact_match": round(scores["exact_match"], 4),
                       "bleu": round(scores["bleu"], 2), "sources": len(references)},
            "examples": [{"source": s, "output": o} for (s, _), o in zip(decoded_subset(references, 5),
                                                                           decoded_subset(outputs, 5))]}


@torch.inference_mode()
def keras_greedy(model: KerasStyle, sources: list[str], source_index: dict, target_chars: list[str],
                 max_source: int, max_target: int) -> list[str]:
    """The example's decode_sequence, batched: from "\\t", the most likely character until "\\n" or max_target."""
    ids = torch.full((len(sources), max_source), source_index[" "], dtype=torch.long)
    for row, text in enumerate(sources):
        known = [source_index[c] for c in text if c in source_index][:max_source]
        ids[row, :len(known)] = torch.tensor(known, dtype=torch.long)
    _, state = model.encoder(F.one_hot(ids, model.encoder.input_size).float())
    token = torch.full((len(sources), 1), target_chars.index("\t"), dtype=torch.long)
    written, end = [], target_chars.index("\n")
    for _ in range(max_target):
        out, state = model.decoder(F.one_hot(token, model.decoder.input_size).float(), state)  # (B, 1, H)
        token = model.head(out).argmax(-1)  # (B, 1)
        written.append(token[:, 0])
    rows = torch.stack(written, dim=1).tolist()  # (B, max_target)
    texts = []
    for row in rows:
        cut = row.index(end) if end in row else len(row)
        texts.append("".join(target_chars[i] for i in row[:cut]))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["keras", "full"])
    parser.add_argument("--time-budget", help="per model; default 10m (keras) or 30m (full)")
    parser.add_argument("--config", type=Path, help="a preset for charlm's side (default: its seq2seq defaults)")
    parser.add_argument("--out")
    args = parser.parse_args()
    budget = args.time_budget or ("10m" if args.mode == "keras" else "30m")
    path = data_file(KERAS_PAIRS if args.mode == "keras" else None)
    result = {"benchmark": f"seq2seq_quality {args.mode}", "machine": machine_facts(), "time_budget": budget,
              "data": f"first {KERAS_PAIRS:,} pairs of {ENG_FRA}" if args.mode == "keras" else str(ENG_FRA)}
    result["charlm"] = run_charlm(path, budget, args.config)
    if args.mode == "keras":
        result["keras_style"] = run_keras_style(path, parse_duration(budget))
        result["chrf_gain_over_keras_style"] = round(result["charlm"]["greedy"]["chrf"]
                                                     - result["keras_style"]["greedy"]["chrf"], 2)
    result["beam_5_chrf_gain_over_greedy"] = round(result["charlm"]["beam_5"]["chrf"]
                                                   - result["charlm"]["greedy"]["chrf"], 2)
    emit(result, args.out)


if __name__ == "__main__":
    main()
