"""Decoding strategies over one step function: greedy (streaming), sampling and beam search.

A task hands the strategies a *step function*: an object that, given the
previous token of each hypothesis and their state, returns log-probabilities
of the next token, the new state and, optionally, a per-step extra (say
attention weights) to keep with each token; and that can `select` hypotheses
of a state by index (expand, reorder). The strategies never look inside the
state, so any task that writes one token at a time can reuse them (the
OpenNMT-py design: strategies over one step function).

All strategies are batched over inputs and stop each input at its own maximum
length (`max_output_lengths`: a * source length + b), so a model that never
writes the end symbol cannot run away.

Beam search ranks finished hypotheses by GNMT's length penalty,
score / ((5 + length) / 6) ** alpha (Wu et al. 2016), length counting the end
symbol. A raw sum of log-probabilities favours short outputs, since every
token lowers it; alpha = 0 is that raw sum, alpha = 1 is close to the mean
per token for long outputs; GNMT tuned alpha in [0.6, 0.7] and Marian defaults
to 0.6, the default here. It only matters between finished hypotheses: live
ones always have the same length, so ranking them by raw score is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import torch

from charlm.decode.sampling import SamplingOptions, pick_next
from charlm.errors import CharlmError

GREEDY = SamplingOptions(temperature=0.0)


class StepFunction(Protocol):
    """Token ids and indices come on the CPU; the step function moves them to its model's device."""

    def __call__(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """tokens (N,) previous ids -> log-probs (N, V), new state, per-step extra (N, ...) or None."""

    def select(self, state: Any, index: torch.Tensor) -> Any:
        """The state of hypotheses `index` (N',), in that order; an index may repeat (beam expansion)."""

    def for_inputs(self, index: torch.Tensor) -> "StepFunction":
        """The step function over inputs `index` (B',) alone, one hypothesis each (greedy drops finished inputs)."""


@dataclass(frozen=True)
class LengthLimit:
    """Outputs stop at ratio * source length + offset tokens (end symbol included)."""

    ratio: float = 2.0
    offset: int = 10

    def __post_init__(self) -> None:
        if not self.ratio >= 0 or self.offset < 0 or (self.ratio == 0 and self.offset == 0):
            raise CharlmError(f"the maximum output length (ratio {self.ratio}, offset {self.offset}) must allow "
                              "at least one token; use a positive ratio or offset")


def max_output_lengths(source_lengths: torch.Tensor, limit: LengthLimit = LengthLimit()) -> torch.Tensor:
    """source_lengths (B,) -> maximum output lengths (B,), each at least 1."""
    lengths = torch.ceil(source_lengths.double() * limit.ratio + limit.offset).long()  # (B,)
    return lengths.clamp_(min=1).cpu()


@dataclass(frozen=True)
class BeamOptions:
    beam_size: int = 5
    length_penalty: float = 0.6  # GNMT's alpha; 0 ranks by the raw sum of log-probabilities
    n_best: int = 1

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise CharlmError(f"--beam-size must be at least 1, got {self.beam_size}")
        if not 1 <= self.n_best <= self.beam_size:
            raise CharlmError(f"--n-best must be between 1 and --beam-size ({self.beam_size}), got {self.n_best}")
        if not self.length_penalty >= 0:
            raise CharlmError(f"--length-penalty must be 0 or more, got {self.length_penalty}")


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha."""
    return ((5 + length) / 6) ** alpha


@dataclass
class Hypothesis:
    tokens: list[int]  # without the start and end symbols
    score: float  # sum of the log-probabilities of the tokens, and of the end symbol if it ended
    ended: bool  # wrote the end symbol (False: cut at the maximum length)
    normalized_score: float  # score / length penalty (beam search ranks by it; greedy and sampling: = score)
    extras: torch.Tensor | None = None  # (steps, ...): the step function's extra per token written, end included


@dataclass
class StepTokens:
    """One step of every input, as produced (for streaming)."""

    tokens: torch.Tensor  # (B,) the id written by each input at this step (the end symbol once it is done)
    live: torch.Tensor  # (B,) bool: the input was still writing, so its token counts (it may be the end symbol)
    log_probs: torch.Tensor  # (B,) log-probability of each token under the model (not the tempered
    # distribution); 0 for an input that is done
    extras: torch.Tensor | None  # (B, ...) the step function's extra (zeros for an input that is done), or None


@torch.inference_mode()
def iter_steps(step: StepFunction, state: Any, start_id: int, end_id: int, max_lengths: torch.Tensor,
               options: SamplingOptions = GREEDY, generator: torch.Generator | None = None) -> Iterator[StepTokens]:
    """Greedy (the default) or sampled tokens, one step of the whole batch at a time.

    Stops when every input has written the end symbol or reached its maximum
    length. An input that is done leaves the batch (its state and its part of
    the step function go): outputs end at different lengths, and stepping the
    done ones until the longest ended cost a batch of 64 sentences about half
    its time. Each StepTokens still has a row per input (done ones: not live).
    """
    batch = max_lengths.shape[0]
    rows = torch.arange(batch)[max_lengths > 0]  # (A,) the inputs still writing
    if len(rows) < batch:
        state, step = step.select(state, rows), step.for_inputs(rows)
    tokens = torch.full((len(rows),), start_id, dtype=torch.long)
    for t in range(max(max_lengths.tolist(), default=0)):
        if not len(rows):
            return
        log_probs, state, extras = step(tokens, state)  # (A, V)
        tokens = pick_next(log_probs, options, generator).cpu()  # (A,)
        chosen = log_probs.gather(1, tokens.to(log_probs.device)[:, None])[:, 0].cpu()  # (A,)
        yield _every_input(batch, rows, tokens, chosen, extras, end_id)
        going = (tokens != end_id) & (t + 1 < max_lengths[rows])  # (A,)
        if not bool(going.all()):
            keep = going.nonzero()[:, 0]  # (A',)
            rows, tokens = rows[keep], tokens[keep]
            state, step = step.select(state, keep), step.for_inputs(keep)


def _every_input(batch: int, rows: torch.Tensor, tokens: torch.Tensor, chosen: torch.Tensor,
                 extras: torch.Tensor | None, end_id: int) -> StepTokens:
    """A step of the inputs `rows` as a row per input of the batch."""
    if len(rows) == batch:  # no input is done yet (always so for one input, streamed): nothing to scatter
        return StepTokens(tokens, torch.ones(batch, dtype=torch.bool), chosen, extras)
    every_token = torch.full((batch,), end_id, dtype=torch.long)  # (B,)
    every_token[rows] = tokens
    live = torch.zeros(batch, dtype=torch.bool)  # (B,)
    live[rows] = True
    log_probs = torch.zeros(batch, dtype=chosen.dtype)  # (B,)
    log_probs[rows] = chosen
    every_extra = None
    if extras is not None:
        every_extra = extras.new_zeros((batch, *extras.shape[1:]))  # (B, ...)
        every_extra[rows.to(extras.device)] = extras
    return StepTokens(every_token, live, log_probs, every_extra)


def generate(step: StepFunction, state: Any, start_id: int, end_id: int, max_lengths: torch.Tensor,
             options: SamplingOptions = GREEDY, generator: torch.Generator | None = None) -> list[Hypothesis]:
    """Greedy decoding (the default options) or sampling: one Hypothesis per input."""
    steps = list(iter_steps(step, state, start_id, end_id, max_lengths, options, generator))
    if not steps:
        return [Hypothesis([], 0.0, False, 0.0) for _ in range(max_lengths.shape[0])]
    tokens = torch.stack([s.tokens for s in steps])  # (T, B)
    live = torch.stack([s.live for s in steps])  # (T, B)
    # rows of inputs that were done hold the end symbol and log-prob 0; only live rows count
    scores = torch.where(live, torch.stack([s.log_probs for s in steps]), 0.0).sum(0)  # (T, B) -> (B,)
    extras = None if steps[0].extras is None else torch.stack([s.extras for s in steps])  # (T, B, ...)
    hypotheses = []
    for b in range(tokens.shape[1]):
        written = tokens[live[:, b], b].tolist()  # ends with the end symbol if it ended
        ended = bool(written) and written[-1] == end_id
        score = float(scores[b])
        hypotheses.append(Hypothesis(written[:-1] if ended else written, score, ended, score,
                                     None if extras is None else extras[live[:, b].to(extras.device), b]))
    return hypotheses


@torch.inference_mode()
def beam_search(step: StepFunction, state: Any, start_id: int, end_id: int, max_lengths: torch.Tensor,
                options: BeamOptions = BeamOptions()) -> list[list[Hypothesis]]:
    """The n-best hypotheses of each input, best first, by length-normalised score.

    Each step extends the K live hypotheses of an input by every token and
    keeps the 2K best extensions: those ending with the end symbol and ranked
    within the first K are finished, the K best others stay live (so an
    ending never costs a live slot). An input is done when K hypotheses have
    finished (fairseq's rule) or at its maximum length, where its K best
    extensions finish as they are.
    """
    batch, beams = max_lengths.shape[0], options.beam_size
    state = step.select(state, torch.arange(batch).repeat_interleave(beams))
    tokens = torch.full((batch * beams,), start_id, dtype=torch.long)
    # Only the first copy of each input may expand at the first step; the others
    # would add the same extensions K times over.
    scores = torch.full((batch, beams), float("-inf"))
    scores[:, 0] = 0.0
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = [int(n) < 1 for n in max_lengths]
    history: list[tuple[list[list[int]], list[list[int]], torch.Tensor | None]] = []  # (origins, tokens, extras)
    for t in range(max(max_lengths.tolist(), default=0)):
        log_probs, state, extras = step(tokens, state)  # (B*K, V)
        vocab_size = log_probs.shape[-1]
        candidates = scores.unsqueeze(-1) + log_probs.float().cpu().view(batch, beams, vocab_size)  # (B, K, V)
        top_scores, top_ids = candidates.view(batch, -1).topk(min(2 * beams, beams * vocab_size), dim=-1)  # (B, 2K)
        origins, words = (top_ids // vocab_size).tolist(), (top_ids % vocab_size).tolist()
        top_scores_list = top_scores.tolist()
        step_extras = None if extras is None else extras.reshape(batch, beams, *extras.shape[1:])  # (B, K, ...)
        new_origins, new_tokens = [[0] * beams for _ in range(batch)], [[end_id] * beams for _ in range(batch)]
        new_scores = torch.full((batch, beams), float("-inf"))
        for b in range(batch):
            if done[b]:
                continue
            last_step = t + 1 >= int(max_lengths[b])
            kept = 0
            for rank, (origin, word, score) in enumerate(zip(origins[b], words[b], top_scores_list[b])):
                if last_step or word == end_id:
                    if rank < beams and math.isfinite(score):
                        finished[b].append(_backtrack(history, step_extras, b, origin, word, score, t,
                                                      word == end_id, options.length_penalty))
                elif kept < beams:
                    new_origins[b][kept], new_tokens[b][kept] = origin, word
                    new_scores[b, kept] = score
                    kept += 1
            done[b] = last_step or len(finished[b]) >= beams
        if all(done):
            break
        history.append((new_origins, new_tokens, step_extras))
        index = (torch.arange(batch)[:, None] * beams + torch.tensor(new_origins)).flatten()  # (B*K,)
        state = step.select(state, index)
        tokens, scores = torch.tensor(new_tokens).flatten(), new_scores
    return [sorted(hypotheses, key=lambda h: -h.normalized_score)[: options.n_best] for hypotheses in finished]


def _backtrack(history, step_extras, b: int, origin: int, word: int, score: float, t: int, ended: bool,
               alpha: float) -> Hypothesis:
    """Rebuild the hypothesis that beam `origin` of input b extends with `word` at step t."""
    tokens = [word] if not ended else []
    extras = [] if step_extras is None else [step_extras[b, origin]]
    beam = origin
    for s in range(t - 1, -1, -1):  # history[s] made the beams that entered step s + 1
        origins, words, extras_s = history[s]
        tokens.append(words[b][beam])
        beam = origins[b][beam]
        if extras_s is not None:
            extras.append(extras_s[b, beam])
    tokens.reverse()
    extras.reverse()
    length = t + 1  # tokens written, the end symbol included
    return Hypothesis(tokens, score, ended, score / length_penalty(length, alpha),
                      torch.stack(extras) if extras else None)
