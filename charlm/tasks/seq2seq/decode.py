"""Turning source texts into target texts with a trained model: greedy, sampling or beam search, batched.

The strategies are charlm.decode.search's, over the model's step function
(Seq2SeqStep), which never writes <pad> or <start>. Sources are decoded in
batches of similar length (at most `batch_size` each) and come back in the
order given; an empty source gets an empty translation without being
decoded (the encoder cannot read nothing). Each output stops at its end
symbol or at its maximum length, a multiple of its source's length
(`LengthLimit`), so a model that never ends cannot run away.

`stream_translation` decodes one source and yields its characters as they
are produced, for `charlm translate` at a terminal.

Sources must hold only characters of the source vocabulary; `split_unknown`
separates the others out first (the CLI warns about them or refuses them).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from charlm.decode.sampling import SamplingOptions
from charlm.decode.search import GREEDY, BeamOptions, LengthLimit, beam_search, generate, iter_steps, max_output_lengths
from charlm.tasks.seq2seq.batch import pad_batch
from charlm.tasks.seq2seq.data import END, PAD, START, PairVocabs, length_batches
from charlm.tasks.seq2seq.model import Seq2Seq

DECODE_BATCH = 64  # sources decoded side by side
DECODE_TOKENS = 64 * 64  # and at most this many padded source characters per batch


@dataclass(frozen=True)
class Decoding:
    """How outputs are chosen: greedy (the default), sampling (temperature > 0) or beam search (beam)."""

    sampling: SamplingOptions = GREEDY
    beam: BeamOptions | None = None  # beam search when set (beam_size 1 is greedy, and is run as greedy)
    limit: LengthLimit = field(default_factory=LengthLimit)

    def describe(self) -> str:
        if self.beam is not None:
            return f"beam {self.beam.beam_size}, length penalty {self.beam.length_penalty:g}"
        return "greedy" if self.sampling.temperature == 0 else "sampled"


@dataclass
class Candidate:
    text: str
    score: float  # summed log-probability in nats (the end symbol's included when it ended)
    normalized_score: float  # beam search's ranking score (GNMT length penalty); = score otherwise
    ended: bool  # wrote the end symbol (False: cut at the maximum length)
    attention: torch.Tensor | None = None  # (steps, source length): one row per character written, end included


@dataclass
class Translation:
    source: str  # the characters the model read
    candidates: list[Candidate]  # best first (n-best with beam search, else one)

    @property
    def text(self) -> str:
        return self.candidates[0].text

    def to_dict(self, given: str, n_best: bool = False) -> dict:
        """As `charlm translate --json` prints it; `given` is the input as given (unknown characters included)."""
        best = self.candidates[0]
        result = {"source": given, "translation": best.text, "score": round(best.score, 4), "ended": best.ended}
        if given != self.source:
            result["read"] = self.source  # the input without the characters the model never saw
        if n_best:
            result["n_best"] = [{"text": c.text, "score": round(c.score, 4),
                                 "normalized_score": round(c.normalized_score, 4), "ended": c.ended}
                                for c in self.candidates]
        return result


def split_unknown(texts: list[str], vocabs: PairVocabs) -> tuple[list[str], list[str]]:
    """(the texts without characters the source vocabulary lacks, those characters sorted)."""
    known = set(vocabs.source.chars)
    unknown = sorted({c for text in texts for c in text} - known)
    if not unknown:
        return list(texts), []
    missing = set(unknown)
    return ["".join(c for c in text if c not in missing) for text in texts], unknown


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then the mode the model had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _encode(model: Seq2Seq, vocabs: PairVocabs, sources: list[str]):
    device = model.head.weight.device
    src, src_lengths = pad_batch([vocabs.source.encode(s)[0] for s in sources], PAD)  # (S, B), (B,)
    memory, state = model.encode(src.to(device), src_lengths.to(device))
    return src_lengths, memory, state


@torch.inference_mode()
def translate(model: Seq2Seq, vocabs: PairVocabs, sources: list[str], decoding: Decoding = Decoding(),
              generator: torch.Generator | None = None, batch_size: int = DECODE_BATCH) -> list[Translation]:
    """One Translation per source, in the order given."""
    results: list[Translation | None] = [None] * len(sources)
    lengths = np.array([len(s) for s in sources])
    for index in np.flatnonzero(lengths == 0):
        results[index] = Translation("", [Candidate("", 0.0, 0.0, True)])
    readable = np.flatnonzero(lengths > 0)
    with evaluating(model):
        for rows in length_batches(lengths[readable], DECODE_TOKENS, batch_size):
            indices = readable[rows]
            for index, translation in zip(indices, _translate_batch(model, vocabs, [sources[i] for i in indices],
                                                                    decoding, generator)):
                results[index] = translation
    return results


def _translate_batch(model: Seq2Seq, vocabs: PairVocabs, sources: list[str], decoding: Decoding,
                     generator: torch.Generator | None) -> list[Translation]:
    src_lengths, memory, state = _encode(model, vocabs, sources)
    step = model.step_function(memory, banned_ids=(PAD, START))
    max_lengths = max_output_lengths(src_lengths, decoding.limit)  # (B,)
    if decoding.beam is not None and decoding.beam.beam_size > 1:
        found = beam_search(step, state, START, END, max_lengths, decoding.beam)
    else:
        found = [[h] for h in generate(step, state, START, END, max_lengths, decoding.sampling, generator)]
    translations = []
    for source, hypotheses in zip(sources, found):
        translations.append(Translation(source, [
            Candidate(vocabs.target.decode(h.tokens), h.score, h.normalized_score, h.ended,
                      None if h.extras is None else h.extras[:, :len(source)].float().cpu())  # (steps, S)
            for h in hypotheses]))
    return translations


@torch.inference_mode()
def stream_translation(model: Seq2Seq, vocabs: PairVocabs, source: str, sampling: SamplingOptions = GREEDY,
                       generator: torch.Generator | None = None, limit: LengthLimit = LengthLimit()) -> Iterator[str]:
    """The characters of one source's translation, each as soon as it is decoded (greedy or sampled)."""
    if not source:
        return
    with evaluating(model):
        src_lengths, memory, state = _encode(model, vocabs, [source])
        step = model.step_function(memory, banned_ids=(PAD, START))
        for produced in iter_steps(step, state, START, END, max_output_lengths(src_lengths, limit), sampling,
                                   generator):
            token = int(produced.tokens[0])
            if token == END:
                return
            yield vocabs.target.decode([token])
