"""BBQRec: SASRec with discretised-similarity reweighting of self-attention.

Read top to bottom: SID similarity -> bias table -> attention -> block -> model.

Backbone (unchanged SASRec, post-LayerNorm blocks as in RecBole): item embedding + learned
position embedding -> LayerNorm -> dropout -> ``layers`` x [causal multi-head self-attention,
feed-forward] -> hidden state per position; the score of item j is ``h . E_j`` (the output layer
shares the item embedding).

Reweighting (our reading of "attention scores between two history positions are reweighted by
the discretised similarity of their semantic IDs, without altering the backbone otherwise"):
for two distinct positions i != j holding items a, b, let ``sim(a, b)`` be an integer in ``0..L`` computed from
their raw SID tokens (collision token excluded): the number of agreeing positions ("shared") or
the longest common prefix ("prefix"). Each layer l and head h owns a learned table ``T[l, h, :]``
of ``L + 1`` scalars, and

    attn_ij = softmax_j( q_i . k_j / sqrt(d) + T[l, h, sim(a_i, a_j)] )

i.e. the unnormalised attention weight ``exp(q_i . k_j / sqrt(d))`` is multiplied by
``exp(T[sim])`` and renormalised: a multiplicative reweighting by a learned function of the
discretised similarity. A position's attention to itself keeps its plain score (otherwise the
top level of the table would mostly learn how much to attend to oneself). With the table at zero this is bit-for-bit the plain attention, so the
model starts as SASRec and only departs from it where the data reward it; nothing else in the
backbone (embeddings, value path, output layer) sees the SIDs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from generative_rec.bbqrec.config import BBQRecConfig


# ---------------------------------------------------------------------------- SID similarity
def pairwise_similarity(codes: torch.Tensor, *, mode: str) -> torch.Tensor:
    """Discretised SID similarity of every pair of positions: codes [B, T, L] -> [B, T, T] int64
    in ``0..L``. "shared": positions p with equal codes; "prefix": longest common prefix."""
    equal = codes[:, :, None, :] == codes[:, None, :, :]  # [B, T, T, L]
    if mode == "shared":
        return equal.sum(-1)
    if mode == "prefix":
        return equal.long().cumprod(-1).sum(-1)
    raise ValueError(f"unknown similarity mode {mode!r}")


def similarity_reference(a: list[int], b: list[int], *, mode: str) -> int:
    """Slow, obviously correct similarity of two code tuples (test oracle)."""
    if mode == "shared":
        return sum(1 for x, y in zip(a, b) if x == y)
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SimilarityBias(nn.Module):
    """Learned additive attention bias per (layer, head, similarity level)."""

    def __init__(self, *, layers: int, heads: int, levels: int, init: float = 0.0) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.full((layers, heads, levels + 1), float(init)))

    def forward(self, sim: torch.Tensor, layer: int) -> torch.Tensor:
        """sim [B, T, T] int64 -> bias [B, heads, T, T] (heads = 1 for a shared table)."""
        return F.embedding(sim, self.table[layer].T).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------- backbone
class SelfAttention(nn.Module):
    """Multi-head self-attention whose logits accept an additive bias (None = plain)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.d_head = hidden // heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, H]; mask [B, 1, T, T] bool (True = may attend); bias broadcastable to
        [B, heads, T, T]."""
        b, t, _ = x.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.heads, self.d_head).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if bias is not None:
            logits = logits + bias
        logits = logits.masked_fill(~mask, float("-inf"))
        attn = self.drop(torch.softmax(logits, dim=-1))
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    """Post-LayerNorm transformer block: attention, then a GELU feed-forward layer."""

    def __init__(self, cfg: BBQRecConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg.hidden, cfg.heads, cfg.attn_dropout)
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(cfg.hidden, cfg.inner), nn.GELU(), nn.Linear(cfg.inner, cfg.hidden))
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, mask, bias)))
        return self.norm2(x + self.drop(self.ff(x)))


class BBQRec(nn.Module):
    """SASRec over item indices with optional SID-similarity attention reweighting.

    Inputs are left-padded windows of *tokens* (``item_idx + 1``; 0 = padding), most recent item
    last. ``codes`` [N, L] are the raw SID tokens of every item (collision token excluded).
    """

    def __init__(self, cfg: BBQRecConfig, *, n_items: int, codes: torch.Tensor | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_items = int(n_items)
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.bias: SimilarityBias | None = None
        if cfg.reweight:
            if codes is None or codes.ndim != 2 or codes.shape[0] != n_items:
                raise ValueError("reweighting needs raw SID codes [n_items, L]")
            # Row 0 is the padding token; its codes never matter (padding keys are masked).
            padded = torch.cat([torch.full((1, codes.shape[1]), -1, dtype=torch.long), codes.long()])
            self.register_buffer("codes", padded)
            self.bias = SimilarityBias(layers=cfg.layers, heads=cfg.heads if cfg.per_head else 1,
                                       levels=codes.shape[1], init=cfg.table_init)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # SASRec/RecBole initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()
        if isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, T]: causal, real keys only; the diagonal is always open so that padding
        queries (whose outputs are never used) do not produce NaNs."""
        t = tokens.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        keys = (tokens > 0)[:, None, None, :]
        eye = torch.eye(t, dtype=torch.bool, device=tokens.device)
        return (causal & keys) | eye

    def similarity(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, T] discretised SID similarity of the items at every pair of positions."""
        return pairwise_similarity(self.codes[tokens], mode=self.cfg.similarity)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] (T <= max_len) -> hidden states [B, T, hidden]."""
        t = tokens.shape[1]
        positions = torch.arange(t, device=tokens.device)[None, :]
        x = self.drop(self.norm(self.item_emb(tokens) + self.pos_emb(positions)))
        mask = self.attention_mask(tokens)
        sim = self.similarity(tokens) if self.bias is not None else None
        # A position attending to itself is not a pair of history items (and would always sit
        # in the top similarity level): it keeps its plain score.
        self_pair = torch.eye(t, dtype=torch.bool, device=tokens.device)
        for layer, block in enumerate(self.blocks):
            bias = self.bias(sim, layer).masked_fill(self_pair, 0.0) if self.bias is not None else None
            x = block(x, mask, bias)
        return x

    def item_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every catalogue item (item_idx order): hidden [..., H] -> [..., N]."""
        return hidden @ self.item_emb.weight[1:].T
