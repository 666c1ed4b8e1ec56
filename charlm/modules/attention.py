"""Attention of decoder queries over encoder states: one module, three score functions.

- additive (Bahdanau et al. 2015): score(q, k) = vᵀ tanh(W_q q + W_k k)
- dot (Luong et al. 2015):         score(q, k) = qᵀ k   (query and key sizes must match)
- general (Luong et al. 2015):     score(q, k) = qᵀ W k

The scores go through a softmax over source positions with padding masked to
-inf, so padding gets exactly zero weight; the context is the weighted sum of
the keys. (`none`, no attention at all, is the decoder's business.)

The key side of a score (W_k k, W k) depends on the source alone, so it is
computed once per source by `remember` and reused at every decoder step.
Several queries may share one source: beam search asks with B·G rows, rows
b·G .. b·G+G-1 looking at source b, so the encoder states are never copied
per hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ATTENTION_KINDS = ("additive", "dot", "general")


@dataclass
class AttentionMemory:
    """The source side of attention, batch-first because torch.bmm batches over the first dimension."""

    keys: torch.Tensor  # (B, S, K): the encoder states the context is made of
    scored_keys: torch.Tensor  # (B, S, A | Q | K): the key side of the score, ready for the query
    mask: torch.Tensor  # (B, S) bool, True at real source positions

    def select(self, index: torch.Tensor) -> "AttentionMemory":
        """The memory of sources `index` (B',)."""
        return AttentionMemory(self.keys.index_select(0, index), self.scored_keys.index_select(0, index),
                               self.mask.index_select(0, index))


class Attention(nn.Module):
    def __init__(self, kind: str, query_size: int, key_size: int, attention_size: int | None = None):
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(f"dot attention needs query size == key size, got {query_size} and {key_size}")
        self.kind = kind
        if kind == "additive":
            attention_size = attention_size or query_size
            self.query_layer = nn.Linear(query_size, attention_size)  # W_q (its bias is the score's one bias)
            self.key_layer = nn.Linear(key_size, attention_size, bias=False)  # W_k
            self.v = nn.Linear(attention_size, 1, bias=False)
        elif kind == "general":
            # qᵀ W k with W (Q x K): W k is computed once per source, leaving a dot product per step.
            self.key_layer = nn.Linear(key_size, query_size, bias=False)

    def remember(self, keys: torch.Tensor, mask: torch.Tensor) -> AttentionMemory:
        """keys (S, B, K) encoder states, mask (S, B) -> the per-source part of every later score."""
        keys_bf = keys.transpose(0, 1).contiguous()  # (B, S, K)
        scored = keys_bf if self.kind == "dot" else self.key_layer(keys_bf)  # (B, S, K | A | Q)
        return AttentionMemory(keys_bf, scored, mask.t().contiguous())

    def forward(self, query: torch.Tensor, memory: AttentionMemory) -> tuple[torch.Tensor, torch.Tensor]:
        """query (N, Q) with N = B·G -> context (N, K), weights (N, S); padding gets weight exactly 0."""
        batch, source_len = memory.mask.shape
        groups = query.shape[0] // batch
        if groups * batch != query.shape[0]:
            raise ValueError(f"{query.shape[0]} queries do not divide evenly over {batch} sources")
        q = query.view(batch, groups, -1)  # (B, G, Q)
        if self.kind == "additive":
            hidden = self.query_layer(q).unsqueeze(2) + memory.scored_keys.unsqueeze(1)  # (B, G, S, A)
            scores = self.v(torch.tanh(hidden)).squeeze(-1)  # (B, G, S)
        else:
            scores = torch.bmm(q, memory.scored_keys.transpose(1, 2))  # (B, G, S)
        # -inf before the softmax: exp(-inf) is exactly 0, so padding has no weight at all
        scores = scores.masked_fill(~memory.mask.unsqueeze(1), float("-inf"))  # (B, G, S)
        weights = torch.softmax(scores, dim=-1)  # (B, G, S)
        context = torch.bmm(weights, memory.keys)  # (B, G, K)
        return context.view(batch * groups, -1), weights.view(batch * groups, source_len)
