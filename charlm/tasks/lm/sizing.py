"""Model size from the corpus and the run's bounds, for `charlm train FILE` without a size.

The question char-rnn users ask most is which size to pick. The answer
depends on two things charlm knows before the first step: how much text
there is, and how many characters the run will get through (its time budget
times the speed of each candidate on this machine, or its steps or epochs).

- Compute: a model should see enough characters per parameter, and more
  the fewer times it reads its text (chars_per_parameter_needed). For a
  text read 5 times or more, `CHARS_PER_PARAMETER` = 4: where the
  plain-dropout Tiny Shakespeare preset of before stood at its best (LSTM
  512x2 with dropout 0.25, 1.4323 nats/char after 12.8M characters: 3.9 per
  parameter; bench/results/time_to_quality_30m.json). For a text read once,
  Chinchilla's 20 tokens per parameter (`FRESH_CHARS_PER_PARAMETER`), and
  20 / passes in between.
- Data: characters seen again are worth less than new ones (Muennighoff et
  al. 2023, "Scaling Data-Constrained Language Models"): at most
  `USEFUL_PASSES` passes over the training text count.

The largest candidate that meets both is chosen. Its regularisation grows
with the parameters per training character (none at one per character,
strength 0.25 at four) and is AWD-LSTM's: weight drop of that strength on
the hidden-to-hidden matrices and locked dropout of three quarters of it,
no plain dropout. On Tiny Shakespeare for 30 minutes (LSTM 512x2, strength
0.2) that is the 30-minute preset, which reached 1.4014 nats/char still
falling where plain dropout 0.25 turned back up at 1.4323
(bench/results/time_to_quality_30m_awd.json, _30m.json; one run each, in
fp32 and bf16 on different CPUs), and stayed ahead of weight drop 0.3 /
locked 0.2 and, by 0.002, of 0.15 / 0.1 with a lower learning-rate floor
(_30m_awd_stronger.json, _weaker.json).
bench/sizing.py checks the choice against the fixed defaults on three corpora.

Speeds come from a short probe of each candidate: a few training steps on
random ids, on the run's device and in its precision.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from charlm.config import SIZED_FOR_LM, TrainConfig
from charlm.engine.step import make_optimizer
from charlm.tasks.lm.model import CharRNN, ModelSpec

HIDDEN_SIZES = (128, 256, 384, 512, 768, 1024)
NUM_LAYERS = 2
CHARS_PER_PARAMETER = 4
FRESH_CHARS_PER_PARAMETER = 20  # Chinchilla's tokens per parameter, for text read once
USEFUL_PASSES = 16
# A preset or flag that sets any of these leaves the size to the user: what sizing chooses, plain dropout
# (which it turns off), and embedding dropout (a run with it has been regularised by hand).
SIZE_KEYS = (*SIZED_FOR_LM, "dropout", "embedding_dropout")
_PROBE_WARMUP, _PROBE_STEPS = 2, 3
_PROBE_MASK_RATE = 0.1


@dataclass(frozen=True)
class Sizing:
    cell: str
    hidden_size: int
    num_layers: int
    weight_drop: float
    locked_dropout: float
    parameters: int
    reason: str

    def settings(self) -> dict:
        """The config values chosen (plain dropout off: locked dropout takes its place)."""
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers, "dropout": 0.0,
                "weight_drop": self.weight_drop, "locked_dropout": self.locked_dropout}

    def message(self) -> str:
        regularised = (f"weight drop {self.weight_drop:g}, locked dropout {self.locked_dropout:g}"
                       if self.weight_drop or self.locked_dropout else "no dropout")
        return (f"sized {self.cell} {self.num_layers}x{self.hidden_size}, {regularised} "
                f"({self.parameters / 1e6:.2f}M parameters) for {self.reason}; set --hidden-size, --num-layers "
                "or a regulariser (or a preset) to choose yourself")


def candidate_spec(config: TrainConfig, vocab_size: int, hidden_size: int, regularised: bool = False) -> ModelSpec:
    # A regularised candidate is probed with masks: they cost 6-7% of the speed whatever their rate
    # (bench/results/regularise_cost.json), and a probe without them would promise more than the run gets.
    rate = _PROBE_MASK_RATE if regularised else 0.0
    return ModelSpec(vocab_size=vocab_size, cell=config.cell, hidden_size=hidden_size, num_layers=NUM_LAYERS,
                     embedding_size=config.embedding_size, tie_weights=config.tie_weights, weight_drop=rate,
                     locked_dropout=rate)


def parameter_count(config: TrainConfig, vocab_size: int, hidden_size: int) -> int:
    with torch.device("meta"):  # shapes only: nothing allocated or initialised
        model = CharRNN(candidate_spec(config, vocab_size, hidden_size))
    return sum(p.numel() for p in model.parameters())


def chars_per_parameter_needed(passes: float) -> float:
    """4 for a text read 5 times or more, rising to Chinchilla's 20 for one read once or less.

    A run that reads its text many times is bounded by the text: a larger model, regularised, still gains
    on a smaller one that has stopped learning. One that reads it a few times is bounded by compute, where a
    smaller model that gets through more characters wins: on the Python corpus in 10 minutes LSTM 2x384 at
    5.4 characters per parameter (2.9 passes) lost to 2x256 at 21 (bench/results/sizing_10m.json).
    """
    return max(CHARS_PER_PARAMETER, min(FRESH_CHARS_PER_PARAMETER, FRESH_CHARS_PER_PARAMETER / max(passes, 1e-9)))


def regularisation_strength(parameters: int, train_chars: int, passes: float) -> float:
    """From parameters per training character: 0 at one (or below), 0.25 at four, at most 0.5."""
    if passes < 2:
        return 0.0  # a text read about once cannot be memorised
    ratio = parameters / max(train_chars, 1)
    return _nearest_twentieth(min(0.5, max(0.0, 0.125 * math.log2(ratio))))


def awd_regularisation(strength: float) -> tuple[float, float]:
    """(weight drop, locked dropout) of a strength: the 30-minute preset's 0.2 and 0.15 at 0.2."""
    return strength, _nearest_twentieth(0.75 * strength)


def _nearest_twentieth(value: float) -> float:
    return math.floor(value * 20 + 0.5) / 20  # half up: round() would send 0.075 to 0.1 but 0.025 to 0.0


def choose_size(config: TrainConfig, vocab_size: int, train_chars: int, chars_per_step: int,
                rate_of: Callable[[int], float]) -> Sizing:
    """The largest candidate the run's bounds can train (the config guarantees at least one bound).

    rate_of(hidden_size) -> training characters per second. It is asked only when a time budget bounds the
    run and the other bounds leave the candidate a chance, in increasing size, and never past the first
    candidate that falls short (larger ones are slower as well as bigger).
    """
    budget = config.time_budget_seconds
    counted = [float(b) for b in (config.max_steps and config.max_steps * chars_per_step,
                                  config.epochs and config.epochs * train_chars) if b]
    repeat_limit = USEFUL_PASSES * train_chars  # characters seen again are worth less: count this many at most
    chosen = None
    for hidden in HIDDEN_SIZES:
        parameters = parameter_count(config, vocab_size, hidden)
        needed = CHARS_PER_PARAMETER * parameters  # the least any run needs: whether a probe could pay
        probe = budget is not None and min([*counted, repeat_limit]) >= needed  # else it cannot fit anyway
        rate = rate_of(hidden) if probe else None
        bounds = counted + ([rate * budget] if rate is not None else [])
        trained = min(bounds) if bounds else None  # None: only a time budget, at a speed not measured
        useful = min(trained if trained is not None else math.inf, repeat_limit)
        passes = trained / max(train_chars, 1) if trained is not None else float(USEFUL_PASSES)
        needed = chars_per_parameter_needed(passes) * parameters
        if useful < needed and chosen is not None:
            break
        chosen = (hidden, parameters, trained, useful, rate, passes)
        if useful < needed:
            break  # even the smallest falls short: take it
    hidden, parameters, trained, useful, rate, passes = chosen
    if trained is None:
        reason = (f"{_count(train_chars)} training characters, too few for a larger model "
                  f"({USEFUL_PASSES} passes are {useful / parameters:.1f} characters per parameter)")
    else:
        speed = f" at {_count(rate)} characters/s measured here" if rate is not None else ""
        reason = (f"{_count(train_chars)} training characters and {_count(trained)} to train on in the run's "
                  f"bounds{speed} ({passes:.2g} passes, {useful / parameters:.2g} useful characters per parameter)")
    weight_drop, locked_dropout = awd_regularisation(regularisation_strength(parameters, train_chars, passes))
    return Sizing(config.cell, hidden, NUM_LAYERS, weight_drop, locked_dropout, parameters, reason)


def _count(number: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if number >= size:
            return f"{number / size:.3g}{suffix}"
    return f"{number:.0f}"


def size_for_corpus(config: TrainConfig, vocab_size: int, train_chars: int) -> Sizing:
    """choose_size with each candidate's speed probed on the run's device, now (a speed kept from another
    day would be another machine's load; the probe costs seconds, and the note says how many)."""
    from charlm.engine.runtime import resolve_device, resolve_precision

    device = resolve_device(config.device)
    amp_dtype = resolve_precision(config.precision, device, config.cell)
    started = time.perf_counter()

    def rate_of(hidden: int) -> float:
        # Whether it will be regularised, supposing it reads its text twice or more (as any run worth probing
        # for does): then only its parameters per training character decide.
        regularised = regularisation_strength(parameter_count(config, vocab_size, hidden), train_chars,
                                              USEFUL_PASSES) > 0
        return probe_rate(config, vocab_size, hidden, device, amp_dtype, regularised)

    sizing = choose_size(config, vocab_size, train_chars, config.seq_len * config.batch_size, rate_of)
    probed = time.perf_counter() - started
    if probed >= 0.5:
        sizing = dataclasses.replace(sizing, reason=f"{sizing.reason}; probing took {probed:.1f} s")
    return sizing


# -- measured speed ------------------------------------------------------------------------------------------

def probe_rate(config: TrainConfig, vocab_size: int, hidden_size: int, device: torch.device,
               amp_dtype: torch.dtype | None, regularised: bool = False) -> float:
    """Training characters per second of one candidate: a few AdamW steps on random ids, as the loop takes them."""
    model = CharRNN(candidate_spec(config, vocab_size, hidden_size, regularised)).to(device)
    optimizer = make_optimizer(model, config)  # the loop's own (fused where it can be)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(vocab_size, (config.seq_len + 1, config.batch_size), generator=generator).to(device)
    seconds = 0.0
    for step in range(_PROBE_WARMUP + _PROBE_STEPS):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits, _ = model(ids[:-1])  # (T, B, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step >= _PROBE_WARMUP:
            seconds += time.perf_counter() - start
    return _PROBE_STEPS * config.seq_len * config.batch_size / seconds


def _sync(device: torch.device) -> None:
    """Wait for the device's queued work (GPU calls return before it is done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
