"""Turning logits into characters: temperature, top-k, top-p, greedy.

`generate` runs the prime text through the model in one call, then produces
one character per step from the carried hidden state (the prefix is never run
again), yielding each character as soon as it exists so callers can stream it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from charlm.errors import CharlmError, VocabularyError
from charlm.tasks.lm.model import CharRNN
from charlm.text.vocab import Vocab


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0  # 0 means greedy (always the most likely character)
    top_k: int | None = None  # keep only the k most likely; None or >= vocab size keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise CharlmError(f"--temperature must be 0 (greedy) or positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharlmError(f"--top-k must be at least 1, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise CharlmError(f"--top-p must be in (0, 1], got {self.top_p}")


def default_prime(vocab: Vocab) -> str:
    """A newline (samples then start like a fresh line), or the first character the model knows."""
    return "\n" if "\n" in vocab.chars else vocab.chars[0]


def scale_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature, shifted so the best is 0: safe for any temperature > 0. logits: (..., V)."""
    # Dividing first, a tiny temperature (1e-20) made every logit +-inf, softmax
    # gave NaN (inf - inf) and argmax picked id 0. Shifted, the best stays 0 and
    # the others go to -inf. Below the dtype's smallest normal number the
    # temperature may round to 0 (0 / 0): that is greedy outright.
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # (..., V), <= 0
    if temperature < torch.finfo(shifted.dtype).tiny:  # it would round to 0 here: greedy
        return shifted.masked_fill(shifted < 0, float("-inf"))
    return shifted.div_(temperature)


def filter_logits(logits: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """Scale by temperature and mask what top-k / top-p exclude with -inf. logits: (..., V)."""
    logits = scale_logits(logits, options.temperature)
    vocab_size = logits.shape[-1]
    if options.top_k is not None and options.top_k < vocab_size:
        kth_best = torch.topk(logits, options.top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if options.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a character when the ones ranked above it already reach top_p;
        # the most likely one is therefore always kept.
        drop_sorted = (torch.cumsum(probs, dim=-1) - probs) >= options.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick_next(logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator) -> torch.Tensor:
    """logits (B, V) -> next ids (B,)."""
    if options.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits.float(), options), dim=-1)
    # Exponential race: argmax(p_i / E_i) with E_i ~ Exp(1) picks i with
    # probability p_i, exactly as torch.multinomial does, in a third of its
    # time for one draw (it matters at one call per character).
    race = torch.empty_like(probs).exponential_(generator=generator)
    # A draw of exactly 0 would make 0 / 0 = NaN for a filtered-out character,
    # and argmax takes NaN as the largest.
    race.clamp_(min=torch.finfo(race.dtype).tiny)
    return probs.div_(race).argmax(dim=-1)


def line_start_context(vocab: Vocab, prime: str) -> str:
    """The unprinted text the model reads before `prime` so that it starts a line.

    A model trained with truncated BPTT almost never sees its zero starting
    state, so from that state it has no idea where it is: after a bare "def" a
    Python model gave " " 12% of the time (and "deferline = ..." the rest),
    after "\ndef" 99.5%. A newline first puts it at the start of a line, which
    is what a seed almost always is.
    """
    if prime.startswith("\n") or vocab.unknown_chars("\n"):
        return ""
    return "\n"


def generate(model: CharRNN, vocab: Vocab, prime: str, length: int, options: SamplingOptions,
             generator: torch.Generator, stop: str | None = None, line_start: bool = True) -> Iterator[str]:
    """Up to `length` characters continuing `prime`, as an iterator; it ends early after `stop`.

    With `line_start` the model first reads a newline that is not part of the
    output (see `line_start_context`); without it, it reads `prime` from its
    zero state. The prime text is checked here, before anything is generated,
    so a bad one fails before any output.
    """
    if not prime:
        raise CharlmError("the prime text (--seed) must not be empty")
    unknown = vocab.unknown_chars(prime)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        raise VocabularyError(f"--seed has characters the model never saw: {shown}; "
                              "use only characters of its training text")
    context = line_start_context(vocab, prime) if line_start else ""
    return _generate(model, vocab, context + prime, length, options, generator, stop)


class _GumbelNoise:
    """Gumbel noise drawn in blocks: sampling becomes argmax(logits + T * noise).

    argmax(l/T + G) with G ~ Gumbel(0, 1) picks i with probability softmax(l/T)_i
    (the Gumbel-max trick), so plain temperature sampling is two small ops per
    character instead of softmax, a draw, a divide and an argmax; drawing the
    noise for many characters at once saves one more.
    """

    def __init__(self, generator: torch.Generator, vocab_size: int, temperature: float, device, block: int = 512):
        self.generator, self.shape, self.temperature, self.device = generator, (block, vocab_size), temperature, device
        self.rows, self.used = None, block

    def next(self) -> torch.Tensor:
        if self.used == self.shape[0]:
            draws = torch.empty(self.shape, device=self.device).exponential_(generator=self.generator)
            draws.clamp_(min=torch.finfo(draws.dtype).tiny)  # a draw of exactly 0 would be a certain win
            self.rows, self.used = draws.log_().mul_(-self.temperature), 0  # T * Gumbel(0, 1)
        self.used += 1
        return self.rows[self.used - 1]


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
    plain = options.temperature > 0 and options.top_p >= 1.0 and (
        options.top_k is None or options.top_k >= last.shape[-1])
    noise = _GumbelNoise(generator, last.shape[-1], options.temperature, device) if plain else None
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
