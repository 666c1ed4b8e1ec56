"""Generating text from a language model: the prime read in one call, then one character per step.

`generate` runs the prime text through the model in one call, then produces
one character per step from the carried hidden state (the prefix is never run
again), yielding each character as soon as it exists so callers can stream it.
"""

from __future__ import annotations

from typing import Iterator

import torch

from charlm.decode.sampling import GumbelNoise, SamplingOptions, is_plain, pick_next
from charlm.errors import CharlmError, VocabularyError
from charlm.tasks.lm.model import CharRNN
from charlm.text.vocab import Vocab


def line_ending(vocab: Vocab) -> str:
    """The line ending of the text the model learned: CRLF if its characters include CR and LF, else LF.

    (A byte-level model's vocabulary is every byte, so it cannot tell: LF.)
    """
    crlf = vocab.tokenizer == "chars" and "\r" in vocab.chars and "\n" in vocab.chars
    return "\r\n" if crlf else "\n"


def with_line_ending(vocab: Vocab, text: str) -> str:
    """text with its line ends written as the model's corpus writes them (a typed seed has LF)."""
    ending = line_ending(vocab)
    return text if ending == "\n" else text.replace("\r\n", "\n").replace("\n", ending)


def default_prime(vocab: Vocab) -> str:
    """A line end (samples then start like a fresh line), or the first character the model knows."""
    return line_ending(vocab) if "\n" in vocab.chars else vocab.chars[0]


def line_start_context(vocab: Vocab, prime: str) -> str:
    """The unprinted text the model reads before `prime` so that it starts a line.

    A model trained with truncated BPTT almost never sees its zero starting
    state, so from that state it has no idea where it is: after a bare "def" a
    Python model gave " " 12% of the time (and "deferline = ..." the rest),
    after "\ndef" 99.5%. A newline first puts it at the start of a line, which
    is what a seed almost always is.
    """
    if prime.startswith(("\n", "\r")) or vocab.unknown_chars("\n"):
        return ""
    return line_ending(vocab)


def generate(model: CharRNN, vocab: Vocab, prime: str, length: int, options: SamplingOptions,
             generator: torch.Generator, stop: str | None = None, line_start: bool = True) -> Iterator[str]:
    """Up to `length` characters continuing `prime`, as an iterator; it ends early after `stop`.

    With `line_start` the model first reads a newline that is not part of the
    output (see `line_start_context`); without it, it reads `prime` from its
    zero state. The prime text is checked here, before anything is generated,
    so a bad one fails before any output.
    """
    _check_prime(vocab, prime, stop)
    context = line_start_context(vocab, prime) if line_start else ""
    return _generate(model, vocab, context + prime, length, options, generator, stop)


def _check_prime(vocab: Vocab, prime: str, stop: str | None = None) -> None:
    if not prime:
        raise CharlmError("the prime text (--seed) must not be empty")
    if stop == "":  # it would be "found" before the first character, or (as it was) silently ignored
        raise CharlmError("--stop must not be empty; leave it out to sample all of --length")
    unknown = vocab.unknown_chars(prime)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        raise VocabularyError(f"--seed has characters the model never saw: {shown}; "
                              "use only characters of its training text")


@torch.inference_mode()
def generate_many(model: CharRNN, vocab: Vocab, prime: str, length: int, count: int, options: SamplingOptions,
                  generator: torch.Generator, stop: str | None = None, line_start: bool = True) -> list[str]:
    """`count` independent continuations of `prime`, generated side by side (one batched step per character).

    Each is cut after its first `stop`, if any. Not streamed: the samples
    finish together.
    """
    if count < 1:
        raise CharlmError(f"--num-samples must be at least 1, got {count}")
    _check_prime(vocab, prime, stop)
    context = line_start_context(vocab, prime) if line_start else ""
    device = next(model.parameters()).device
    model.eval()
    ids, _ = vocab.encode(context + prime)
    logits, hidden = model(ids.to(device).unsqueeze(1).expand(-1, count))  # (P, N, V)
    last = logits[-1]  # (N, V)
    layers = model.split_hidden(hidden, count)
    step = model.stepper()
    produced = []
    for _ in range(length):
        next_id = pick_next(last, options, generator)  # (N,)
        produced.append(next_id)
        last, layers = step(next_id, layers)  # (N, V)
    rows = torch.stack(produced, dim=1).tolist() if produced else [[] for _ in range(count)]  # (N, length)
    samples = []
    for row in rows:
        decoder = vocab.stream_decoder()
        text = "".join(decoder.feed(token) for token in row) + decoder.flush()
        if stop and stop in text:
            text = text[:text.index(stop) + len(stop)]
        samples.append(text)
    return samples


@torch.inference_mode()
def _generate(model: CharRNN, vocab: Vocab, prime: str, length: int, options: SamplingOptions,
              generator: torch.Generator, stop: str | None) -> Iterator[str]:
    device = next(model.parameters()).device
    model.eval()
    ids, _ = vocab.encode(prime)
    logits, hidden = model(ids.to(device).unsqueeze(1))  # (T, 1, V)
    last = logits[-1]  # (1, V)
    layers = model.split_hidden(hidden, 1)
    step = model.stepper()
    noise = GumbelNoise(generator, last.shape[-1], options.temperature, device) if is_plain(
        options, last.shape[-1]) else None
    tail, decoder = "", vocab.stream_decoder()
    for _ in range(length):
        if noise is not None:
            next_id = (last + noise.next()).argmax(dim=-1)  # (1,)
        else:
            next_id = pick_next(last, options, generator)  # (1,)
        char = decoder.feed(int(next_id))  # "" while a byte-level UTF-8 sequence is incomplete
        if char:
            yield char
            if stop:
                tail = (tail + char)[-len(stop):]
                if tail == stop:
                    return
        last, layers = step(next_id, layers)  # (1, V)
    # The length ran out, maybe mid-character (--length counts bytes for a
    # byte-level model): what the decoder holds comes out as U+FFFD, not nothing.
    # A stop string returns above without this: those bytes come after the stop.
    rest = decoder.flush()
    if rest:
        yield rest
