"""charlm from Python: load a trained run and use it, or train one, without the command line.

    import charlm
    run = charlm.load("checkpoints/tinyshakespeare")          # the newest run when omitted
    text = run.generate("ROMEO:", length=300, temperature=0.8, seed=1)   # seed: of the random draws
    for char in run.stream("ROMEO:", length=300): ...
    stats = run.score("To be, or not to be")                 # nats/char, bits/char, perplexity, surprisal
    names = run.records(10, class_name="Italian")            # a records (--task lines) run
    run.classify(["Satoshi", "Nguyen"])                      # a --task classify run
    french = run.translate(["I am cold."], beam_size=5)        # a --task seq2seq run
    for event in charlm.train("my.txt", hidden_size=128, time_budget="1m"): ...

Errors are charlm's exception types (charlm.CharlmError and its kin) with
the messages the command line prints. This module is the CLI's library
underneath, called the way the CLI calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from charlm.nats import PerCharacter
from charlm.config import build_config, check_applicable
from charlm.decode.sampling import SamplingOptions
from charlm.engine.checkpoint import DEFAULT_ROOT
from charlm.engine.runtime import make_generator
from charlm.errors import CharlmError
from charlm.runs import Checkpoint, load_checkpoint


@dataclass(frozen=True)
class Score(PerCharacter):
    """How well a language model predicts a text. `surprisal` holds (character, bits) for every character
    after the first (nothing predicts the first); their mean in nats is `nats_per_char`."""

    nats_per_char: float
    surprisal: list[tuple[str, float]]


class Run:
    """A trained run, loaded for inference on the CPU (use `.to("cuda")` to move it)."""

    def __init__(self, checkpoint: Checkpoint):
        self._checkpoint = checkpoint
        self._device = torch.device("cpu")

    @property
    def task(self) -> str:
        return self._checkpoint.task

    @property
    def path(self) -> Path:
        """The checkpoint JSON the run was loaded from."""
        return self._checkpoint.path

    @property
    def classes(self) -> list[str]:
        return self._checkpoint.classes

    @property
    def config(self):
        """The run's settings (a frozen TrainConfig)."""
        return self._checkpoint.config

    @property
    def model(self) -> torch.nn.Module:
        """The PyTorch module itself, in eval mode."""
        return self._checkpoint.model

    def to(self, device: str | torch.device) -> "Run":
        self._device = torch.device(device)
        self._checkpoint.model.to(self._device)
        return self

    def _require(self, *tasks: str, use: str) -> None:
        if self.task not in tasks:
            raise CharlmError(f"{self.path.parent} is a {self.task} run; {use} serves {' and '.join(tasks)} runs")

    def stream(self, prime: str | None = None, length: int = 500, temperature: float = 1.0,
               top_k: int | None = None, top_p: float = 1.0, seed: int | None = None, stop: str | None = None,
               line_start: bool = True) -> Iterator[str]:
        """Characters continuing `prime` (default: a new line), one at a time, as they are generated.

        `seed` seeds the random draws (as `charlm sample --rng-seed`); `prime` is the text read first
        (as `charlm sample --seed`).
        """
        from charlm.tasks.lm.generate import default_prime, generate

        self._require("lm", use="stream()")
        if length < 0:
            raise CharlmError(f"length must be 0 or more, got {length}")
        vocab = self._checkpoint.vocab
        return generate(self.model, vocab, default_prime(vocab) if prime is None else prime, length,
                        SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p),
                        make_generator(seed, self._device), stop=stop, line_start=line_start)

    def generate(self, prime: str | None = None, length: int = 500, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float = 1.0, seed: int | None = None, stop: str | None = None,
                 line_start: bool = True) -> str:
        """`prime` followed by up to `length` generated characters, as one string (see stream())."""
        generated = "".join(self.stream(prime, length, temperature, top_k, top_p, seed, stop, line_start))
        return (prime or "") + generated

    def score(self, text: str) -> Score:
        """Cross-entropy of `text` under the model, read as one stream from its first character (fp32)."""
        from charlm.report.surprisal import surprisal_of

        self._require("lm", use="score()")
        ids, _ = self._checkpoint.vocab.encode(text)
        if len(ids) < 2:
            raise CharlmError("score() needs a text of at least two characters the model knows")
        scored = surprisal_of(self.model, ids.numpy(), self._checkpoint.vocab)
        pairs = [(char.text, bits) for char, bits, _ in scored.characters()[1:]]
        return Score(nats_per_char=scored.mean_nats, surprisal=pairs)

    def records(self, count: int = 10, prefix: str = "", class_name: str | None = None,
                temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                seed: int | None = None, max_length: int | None = None, unique: bool = False) -> list[dict]:
        """`count` records of a `--task lines` run generated side by side, each {"text": ..., "class": ...}."""
        from charlm.tasks.lines.inference import sample_records

        self._require("lines", use="records()")
        sampled = sample_records(self._checkpoint, count, SamplingOptions(temperature, top_k, top_p),
                                 make_generator(seed, self._device), max_length=max_length, prefix=prefix,
                                 class_name=class_name, unique=unique)
        return [record.to_dict() for record in sampled]

    def classify(self, texts: str | list[str], top_k: int = 3, strict: bool = False) -> list[dict]:
        """Each text's `top_k` classes with probabilities (a `--task classify` run), as `charlm classify --json`
        gives them: {"text", "class", "top": [{"class", "probability"}, ...]} or {"text", "error"}."""
        from charlm.tasks.classify.inference import Classifier

        self._require("classify", use="classify()")
        texts = [texts] if isinstance(texts, str) else list(texts)
        return [answer.to_dict() for answer in Classifier(self._checkpoint, self._device).classify(texts, top_k,
                                                                                                     strict)]

    def translate(self, texts: str | list[str], beam_size: int = 1, n_best: int = 1, length_penalty: float = 0.6,
                  temperature: float = 0.0, top_k: int | None = None, top_p: float = 1.0, seed: int | None = None,
                  strict: bool = False) -> dict | list[dict]:
        """Translations of a `--task seq2seq` run, as `charlm translate --json` gives them (a dict per text).

        Greedy by default; beam search with beam_size > 1 (n_best outputs each); sampling with temperature > 0.
        Characters the model never saw are left out (listed under "read"), or with strict are an error.
        """
        from charlm.decode.search import BeamOptions
        from charlm.tasks.seq2seq.decode import Decoding, translate
        from charlm.tasks.seq2seq.inference import readable_sources

        self._require("seq2seq", use="translate()")
        given = [texts] if isinstance(texts, str) else list(texts)
        beam = BeamOptions(beam_size=beam_size, length_penalty=length_penalty, n_best=n_best)
        if temperature > 0 and beam_size > 1:
            raise CharlmError("temperature samples and beam_size searches; give one of them")
        decoding = Decoding(sampling=SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p),
                            beam=beam if beam_size > 1 else None)
        known, _ = readable_sources(self._checkpoint, given, strict)
        results = translate(self.model, self._checkpoint.vocab, known, decoding, make_generator(seed, self._device))
        dicts = [t.to_dict(text, n_best > 1) for text, t in zip(given, results)]
        return dicts[0] if isinstance(texts, str) else dicts

    def __repr__(self) -> str:
        return f"charlm.Run({str(self.path.parent)!r}, task={self.task!r})"


def load(path: str | Path | None = None, kind: str = "best") -> Run:
    """A trained run: a run directory, one of its checkpoint JSONs, or None for the newest under checkpoints/."""
    return Run(load_checkpoint(Path(path) if path is not None else None, kind=kind))


def train(data: str | Path | list[str | Path] | None = None, *, out: str | Path | None = None,
          resume: bool = False, config: str | Path | None = None, **settings) -> Iterator[object]:
    """Train as `charlm train` does, yielding its events (RunStarted, StepProgress, Evaluated, RunFinished).

    data: paths (files, folders, globs) or a named corpus; None is the default corpus. settings: any
    key of configs/default.toml (hidden_size=128, time_budget="1m", task="lines", ...), over the
    preset `config` if given. Warnings that the CLI would print (skipped files) are not shown.
    """
    from charlm.cli.inputs import named_corpus_of, open_task, run_name, sizes_to_corpus
    from charlm.config import load_config_file
    from charlm.engine.loop import train as train_run
    from charlm.engine.resume import recorded_run, resumed_config

    arguments = [str(d) for d in ([] if data is None else data if isinstance(data, list) else [data])]
    preset = load_config_file(Path(config)) if config else {}
    run_dir = Path(out) if out is not None else DEFAULT_ROOT / run_name(arguments)
    if resume:
        resolved = resumed_config(run_dir, settings, preset, Path(config) if config else None)
    else:
        named = named_corpus_of(arguments)
        layers = {**preset, **settings}
        if named and "tokenizer" not in layers and layers.get("task", "lm") == "lm":
            settings = dict(settings, tokenizer=named.tokenizer)
        resolved = build_config(preset, settings)
    check_applicable(resolved, set(settings), preset, Path(config) if config else None)
    recorded = recorded_run(run_dir) if resume and not arguments else None
    task = open_task(resolved, arguments, None, False, run_dir, recorded, quiet=True,
                     size_model=sizes_to_corpus(resolved, {*preset, *settings}, resume, 1))
    return train_run(task, run_dir, resume=resume)
