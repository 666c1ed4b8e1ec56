"""How surprised a language model is by each character of a text, and what it expected instead.

The surprisal of a character is -log2 p(character | the text before it), in
bits. The text is read as one stream from its first character with the
hidden state carried across it, exactly as `charlm eval --exact --precision
fp32` reads it, so the mean of these surprisals (in nats) is that command's
cross-entropy. The first character has no prediction and no surprisal.

For a byte-level model the tokens are bytes; a character made of several
bytes is shown once, with the sum of its bytes' surprisals (the bits it cost)
and the predictions made for its first byte.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from charlm.tasks.lm.data import iter_windows
from charlm.tasks.lm.evaluate import EVAL_CHUNK_LEN
from charlm.tasks.lm.model import CharRNN
from charlm.text.vocab import ByteVocab, Vocab

TOP_K = 5


@contextmanager
def one_thread():
    """Run torch on one thread for a while: a batch-1 pass over a text is a chain of small matrix-vector
    products, which a second thread cannot share out but must synchronise on at every character. On the
    2-core test machine, busy with other work, one thread read 4,096 characters 13x (LSTM 2x128), 7x
    (2x256) and 2.4x (2x512) faster than two, best of 3 runs each."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Character:
    """One character of the text as shown: its tokens are ids[first : first + count]."""

    text: str
    first: int
    count: int = 1


def characters_of(vocab: Vocab | ByteVocab, ids: np.ndarray) -> list[Character]:
    """The text's characters: one per id, or for bytes one per UTF-8 sequence (U+FFFD for a broken one)."""
    if not isinstance(vocab, ByteVocab):
        return [Character(vocab.chars[i], index) for index, i in enumerate(ids.tolist())]
    raw = bytes(ids.astype(np.uint8).tolist())
    out, index = [], 0
    while index < len(raw):
        lead = raw[index]
        length = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else \
            4 if lead >> 3 == 0b11110 else 1
        piece = raw[index:index + length]
        try:
            text = piece.decode("utf-8")
        except UnicodeDecodeError:
            text, length = "\ufffd", 1
        out.append(Character(text, index, length))
        index += length
    return out


def token_label(vocab: Vocab | ByteVocab, token: int) -> str:
    """A token as a person reads it in a list of predictions."""
    if isinstance(vocab, ByteVocab) and token >= 0x80:
        return f"\\x{token:02x}"
    return vocab.chars[token]


@dataclass(frozen=True)
class Surprisal:
    """Per-token surprisal of a text and the model's top predictions for each token."""

    ids: np.ndarray  # (N,) the text's tokens
    nats: np.ndarray  # (N,) -ln p(token | tokens before); nan for the first
    top_ids: np.ndarray  # (N, K) the K most likely tokens at each position, most likely first; -1 in row 0
    top_probs: np.ndarray  # (N, K)
    vocab: Vocab | ByteVocab

    @property
    def bits(self) -> np.ndarray:
        return self.nats / math.log(2)

    @property
    def mean_nats(self) -> float:
        """Mean over the scored tokens: `charlm eval --exact --precision fp32` of the same text."""
        return float(np.mean(self.nats[1:]))

    @cached_property
    def _characters(self) -> list[tuple[Character, float, list[tuple[str, float]]]]:
        labels = [token_label(self.vocab, token) for token in range(self.vocab.size)]
        bits, top_ids, top_probs = self.bits.tolist(), self.top_ids.tolist(), self.top_probs.tolist()
        out = []
        for char in characters_of(self.vocab, self.ids):
            first = char.first
            cost = bits[first] if char.count == 1 else sum(bits[first:first + char.count])
            top = [(labels[t], p) for t, p in zip(top_ids[first], top_probs[first]) if t >= 0]
            out.append((char, cost, top))
        return out

    def characters(self) -> list[tuple[Character, float, list[tuple[str, float]]]]:
        """(character, surprisal in bits, top predictions as (label, probability)) for each character of
        the text; a character's bits are its tokens' sum (nan for the first, which nothing predicts)."""
        return self._characters

    def hardest(self, count: int = 10, min_occurrences: int = 3) -> list[tuple[str, float, int]]:
        """The characters with the highest mean surprisal: (character, mean bits, occurrences)."""
        totals: dict[str, list[float]] = {}
        for char, bits, _ in self.characters():
            if math.isfinite(bits):
                totals.setdefault(char.text, []).append(bits)
        ranked = [(text, sum(values) / len(values), len(values)) for text, values in totals.items()
                  if len(values) >= min_occurrences]
        return sorted(ranked, key=lambda item: -item[1])[:count]

    def surprises(self, count: int = 5, context: int = 24) -> list[tuple[str, str, float, list[tuple[str, float]]]]:
        """The most surprising single characters: (the text just before, the character, bits, top predictions)."""
        characters = self.characters()
        order = sorted((i for i, (_, bits, _) in enumerate(characters) if math.isfinite(bits)),
                       key=lambda i: -characters[i][1])[:count]
        return [("".join(c.text for c, _, _ in characters[max(0, i - context):i]), characters[i][0].text,
                 characters[i][1], characters[i][2]) for i in order]


@torch.inference_mode()
@one_thread()
def surprisal_of(model: CharRNN, ids, vocab: Vocab | ByteVocab, top_k: int = TOP_K) -> Surprisal:
    """Score every token of ids from the ones before it, in one fp32 stream from a zero state."""
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if len(ids) < 2:
        raise ValueError("surprisal needs at least two tokens")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    top_k = min(top_k, vocab.size)
    nats, top_ids, top_probs = [torch.full((1,), math.nan)], [torch.full((1, top_k), -1)], [torch.zeros(1, top_k)]
    hidden = None
    try:
        for x, y in iter_windows(ids, EVAL_CHUNK_LEN):  # (T, 1) each
            logits, hidden = model(x.to(device), hidden)  # (T, 1, V)
            log_probs = torch.log_softmax(logits[:, 0].float(), dim=-1).cpu()  # (T, V)
            nats.append(-log_probs.gather(1, y)[:, 0])  # (T,)
            best = log_probs.topk(top_k, dim=-1)  # predictions for the token that follows x
            top_ids.append(best.indices)
            top_probs.append(best.values.exp())
    finally:
        model.train(was_training)
    return Surprisal(ids=ids.numpy(), nats=torch.cat(nats).double().numpy(), top_ids=torch.cat(top_ids).numpy(),
                     top_probs=torch.cat(top_probs).numpy(), vocab=vocab)
