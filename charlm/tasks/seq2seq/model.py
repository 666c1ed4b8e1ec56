"""The encoder-decoder: a bidirectional encoder, a bridge, and a decoder with attention and input feeding.

- Encoder: embedding -> bidirectional RNN/LSTM/GRU over packed sources, with
  hidden_size // 2 units per direction, so its per-position states (both
  directions concatenated) have hidden_size units, like the decoder's: dot
  attention then needs no projection, and the bridge maps like to like
  (OpenNMT-py's layout for bidirectional encoders).
- Bridge: per layer, the concatenated final states of the two directions go
  through a Linear to that layer's initial decoder state; tanh for h (every
  cell's h lives in (-1, 1)), none for an LSTM's c (its range is unbounded).
- Decoder (Luong et al. 2015, global attention with input feeding): at step t
  the RNN reads [embedding(y_{t-1}); h̃_{t-1}], its top output h_t asks the
  attention for a context c_t over the encoder states, h̃_t = tanh(W_c [c_t; h_t])
  goes to the output layer and is fed to the next step. Input feeding makes each
  step depend on the last, so teacher forcing is a loop over target positions.
  The attention kind only changes the score function (OpenNMT-py's choice too:
  `additive` is Bahdanau's score, not his decoder wiring).
- attention = "none" (the Keras example): the decoder RNN reads the embeddings
  alone from the bridged state, and teacher forcing is one nn.RNN call over the
  whole target window.

Padding: sources are packed and masked out of the attention; target positions
past a target's end only produce logits that the loss ignores (ignore_index),
and the decoder is causal, so they cannot change the earlier ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from charlm.modules.attention import ATTENTION_KINDS, Attention, AttentionMemory
from charlm.modules.encoder import RNN_CLASSES, Hidden, SequenceEncoder

if TYPE_CHECKING:  # data.py imports this module
    from charlm.tasks.seq2seq.data import PairVocabs


@dataclass(frozen=True)
class Seq2SeqSpec:
    """Everything needed to rebuild the module (stored in every checkpoint)."""

    source_vocab_size: int
    target_vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 256  # the decoder's; the encoder has half of it per direction
    num_layers: int = 1
    embedding_size: int = 64
    attention: str = "additive"  # additive | dot | general | none
    dropout: float = 0.0  # between recurrent layers and before the output layer

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_KINDS + ("none",):
            raise ValueError(f"attention must be one of {ATTENTION_KINDS + ('none',)}, got {self.attention!r}")
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even (half of it per encoder direction), got {self.hidden_size}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecoderState:
    """The decoder's state for N hypotheses."""

    hidden: Hidden  # (L, N, H), or (h, c) for an LSTM
    feed: torch.Tensor | None  # (N, H): the previous attentional vector h̃ (input feeding); None without attention

    def select(self, index: torch.Tensor) -> "DecoderState":
        """The state of hypotheses `index` (N',), in that order."""
        hidden = (tuple(part.index_select(1, index) for part in self.hidden) if isinstance(self.hidden, tuple)
                  else self.hidden.index_select(1, index))
        return DecoderState(hidden, None if self.feed is None else self.feed.index_select(0, index))


class Seq2Seq(nn.Module):
    def __init__(self, spec: Seq2SeqSpec):
        super().__init__()
        self.spec = spec
        hidden, layers = spec.hidden_size, spec.num_layers
        self.encoder = SequenceEncoder(spec.source_vocab_size, spec.embedding_size, spec.cell, hidden // 2,
                                       layers, bidirectional=True, dropout=spec.dropout)
        self.bridge_h = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.bridge_c = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers)) if spec.cell == "lstm" else None
        self.target_embedding = nn.Embedding(spec.target_vocab_size, spec.embedding_size)
        feed_size = 0 if spec.attention == "none" else hidden
        self.decoder_rnn = RNN_CLASSES[spec.cell](spec.embedding_size + feed_size, hidden, layers,
                                                  dropout=spec.dropout if layers > 1 else 0.0)
        if spec.attention != "none":
            self.attention = Attention(spec.attention, hidden, hidden)
            self.combine = nn.Linear(2 * hidden, hidden, bias=False)  # Luong's W_c over [c_t; h_t]
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(hidden, spec.target_vocab_size)

    # --- encoding ---------------------------------------------------------------

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[AttentionMemory | None, DecoderState]:
        """src (S, B) ids, src_lengths (B,) -> what the attention looks at (None without it), initial state."""
        encoded = self.encoder(src, src_lengths, keep_outputs=self.spec.attention != "none")
        if isinstance(encoded.final, tuple):
            hidden = (self._bridge(encoded.final[0], self.bridge_h, torch.tanh),
                      self._bridge(encoded.final[1], self.bridge_c, None))
        else:
            hidden = self._bridge(encoded.final, self.bridge_h, torch.tanh)
        if self.spec.attention == "none":
            return None, DecoderState(hidden, None)
        memory = self.attention.remember(encoded.outputs, encoded.mask)
        feed = encoded.outputs.new_zeros(src.shape[1], self.spec.hidden_size)  # (B, H): no h̃ before step 0
        return memory, DecoderState(hidden, feed)

    def _bridge(self, final: torch.Tensor, layers: nn.ModuleList, activation) -> torch.Tensor:
        """final (L*2, B, H/2), directions interleaved per layer -> (L, B, H)."""
        per_layer = torch.cat((final[0::2], final[1::2]), dim=-1)  # (L, B, H): forward | backward
        bridged = torch.stack([layer(states) for layer, states in zip(layers, per_layer)])  # (L, B, H)
        return activation(bridged) if activation else bridged

    # --- decoding ---------------------------------------------------------------

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (S, B), src_lengths (B,), tgt_in (T, B) = start + target -> logits (T, B, V)."""
        return self.teacher_forced(src, src_lengths, tgt_in)[0]

    def teacher_forced(self, src: torch.Tensor, src_lengths: torch.Tensor,
                       tgt_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward(), and the attention weights (T, B, S) (None without attention)."""
        memory, state = self.encode(src, src_lengths)
        emb = self.target_embedding(tgt_in)  # (T, B, E)
        if memory is None:
            out, _ = self.decoder_rnn(emb, state.hidden)  # (T, B, H): one call over the whole window
            return self.head(self.dropout(out)), None  # (T, B, V)
        attentional, weights = [], []
        for emb_t in emb:  # input feeding: step t reads h̃_{t-1}
            h_tilde, state, weights_t = self._attend_step(emb_t, state, memory)  # (B, H), (B, S)
            attentional.append(h_tilde)
            weights.append(weights_t)
        out = torch.stack(attentional)  # (T, B, H)
        return self.head(self.dropout(out)), torch.stack(weights)  # (T, B, V), (T, B, S)

    def _attend_step(self, emb: torch.Tensor, state: DecoderState,
                     memory: AttentionMemory) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """emb (N, E) -> h̃ (N, H), the new state, attention weights (N, S)."""
        x = torch.cat((emb, state.feed), dim=-1)  # (N, E + H)
        top, hidden = self._rnn_step(x, state.hidden)  # (N, H)
        context, weights = self.attention(top, memory)  # (N, H), (N, S)
        h_tilde = torch.tanh(self.combine(torch.cat((context, top), dim=-1)))  # (N, H)
        return h_tilde, DecoderState(hidden, h_tilde), weights

    def _rnn_step(self, x: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """One step of the decoder RNN: x (N, I) -> top layer's output (N, H), new hidden.

        The same weights and arithmetic as decoder_rnn over one position, through the cell functions:
        a one-step nn.LSTM call costs about twice as much, backward included, on a CPU (oneDNN's
        sequence kernel is built for long sequences).
        """
        rnn, lstm = self.decoder_rnn, isinstance(hidden, tuple)
        cell = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}[self.spec.cell]
        new_h, new_c = [], []
        for layer in range(rnn.num_layers):
            weights = [getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if lstm:
                h, c = cell(x, (hidden[0][layer], hidden[1][layer]), *weights)  # (N, H) each
                new_c.append(c)
            else:
                h = cell(x, hidden[layer], *weights)  # (N, H)
            new_h.append(h)
            # nn.RNN-family dropout: on each layer's output but the last, in training only
            x = h if layer == rnn.num_layers - 1 else F.dropout(h, rnn.dropout, self.training)
        hidden = (torch.stack(new_h), torch.stack(new_c)) if lstm else torch.stack(new_h)  # (L, N, H)
        return x, hidden

    def step(self, tokens: torch.Tensor, state: DecoderState,
             memory: AttentionMemory | None) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """One decoder step for N = B·G hypotheses (rows b·G .. b·G+G-1 belong to source b).

        tokens (N,) previous ids -> log-probs (N, V), new state, attention weights (N, S) or None.
        """
        emb = self.target_embedding(tokens)  # (N, E)
        if memory is None:
            top, hidden = self._rnn_step(emb, state.hidden)  # (N, H)
            state, weights = DecoderState(hidden, None), None
        else:
            top, state, weights = self._attend_step(emb, state, memory)
        return F.log_softmax(self.head(self.dropout(top)), dim=-1), state, weights  # (N, V)

    def step_function(self, memory: AttentionMemory | None, banned_ids: tuple[int, ...] = ()) -> "Seq2SeqStep":
        return Seq2SeqStep(self, memory, banned_ids)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Seq2SeqStep:
    """The decoder over one batch of encoded sources, as the step function of charlm.decode.search.

    `banned_ids` (the padding and start symbols) are never written: a trained
    model gives them almost no probability, an undertrained one may not, and
    an output holding them cannot be turned back into text.
    """

    def __init__(self, model: Seq2Seq, memory: AttentionMemory | None, banned_ids: tuple[int, ...] = ()):
        self.model, self.memory = model, memory
        self.device = model.head.weight.device
        self.banned = torch.tensor(banned_ids, dtype=torch.long, device=self.device)

    def __call__(self, tokens: torch.Tensor, state: DecoderState):
        log_probs, state, weights = self.model.step(tokens.to(self.device), state, self.memory)  # (N, V)
        if len(self.banned):
            # renormalised over the rest: still a distribution for scores and sampling
            log_probs = torch.log_softmax(log_probs.index_fill(1, self.banned, float("-inf")), dim=-1)
        return log_probs, state, weights

    def select(self, state: DecoderState, index: torch.Tensor) -> DecoderState:
        return state.select(index.to(self.device))

    def for_inputs(self, index: torch.Tensor) -> "Seq2SeqStep":
        """The decoder over sources `index` alone (one hypothesis each)."""
        chosen = Seq2SeqStep(self.model, None if self.memory is None else self.memory.select(index.to(self.device)))
        chosen.banned = self.banned
        return chosen


def target_nll(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, int]:
    """logits (T, B, V), targets (T, B) -> (summed nats over real target positions, their count).

    Sums, not means, so that batches and processes add up; nats per target
    character (end symbol included) is the one divided by the other.
    """
    total = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id, reduction="sum")
    return total, int((targets != pad_id).sum())


def model_from_record(record: dict) -> tuple[Seq2Seq, PairVocabs]:
    """An untrained Seq2Seq of a checkpoint's shape and its two vocabularies (ValueError if they disagree)."""
    from charlm.tasks.seq2seq.data import PairVocabs
    from charlm.text.vocab import PairVocab, Vocab

    spec = Seq2SeqSpec(**record["model"])
    source, target = Vocab.from_json(record["source_vocab"]), Vocab.from_json(record["target_vocab"])
    if not isinstance(source, PairVocab) or not isinstance(target, PairVocab):
        raise ValueError("its vocabularies have no padding, start and end symbols")
    if (spec.source_vocab_size, spec.target_vocab_size) != (source.size, target.size):
        raise ValueError("vocabulary sizes do not match the model")
    return Seq2Seq(spec), PairVocabs(source, target)
