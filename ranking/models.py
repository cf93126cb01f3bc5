"""CTR models. ``MODELS`` maps a config name to a class.

Why DIN-style target attention (Zhou et al., KDD 2018) rather than DeepFM or DCN-v2
----------------------------------------------------------------------------------------
The question the ranker answers is whether semantic IDs give a better *item representation*
than an ItemID embedding, above all for long-tail and cold items (MMQ §ranking). DIN uses the item
representation in three places: the candidate ("target") item, every item of the user's recent
history, and the attention that compares the two. With SID features, a rarely seen film that
shares SID tokens with films the user rated highly is therefore recognised twice: its own vector
is made of well-trained token rows, and the attention can match it to the user's history even
though its ItemID row has barely been updated. DeepFM and DCN-v2 treat the history as one pooled
bag of fields, so that candidate-to-history comparison is only learned implicitly through
feature crosses. The public datasets also have few side features (MovieLens has age, gender and
occupation; Amazon has none) and no context features, so most of the signal sits in the
behaviour sequence, which is exactly DIN's input; DCN-v2's strength, crossing many
heterogeneous fields, has little to work with here. The model is also cheap: one small MLP over
at most ``history_len`` history items per row, so a few epochs on ML-100K run in well under two
minutes on two CPU cores.

Our choices where DIN leaves room: the attention weights go through a masked softmax (the
original keeps them unnormalised; with 50-item histories the softmax trains more stably), and
the mean of the history is fed alongside the attention output so that the "no strong match"
case still sees the user's overall taste. Each history item's vector is the item representation
plus an embedding of that interaction's own feedback (liked / not liked) when
``history_feedback`` is on; only earlier interactions are in the history, so nothing leaks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ranking.features import N_FEEDBACK
from ranking.item_repr import ItemRepresentation


class DIN(nn.Module):
    """Deep Interest Network with a switchable item representation.

    logit = MLP([e_t, interest, mean_hist, e_t ⊙ interest, e_user, e_age, e_gender, ...])
    interest = Σ_j softmax_j(a(e_t, h_j)) · h_j over the unmasked history positions,
    a(q, k) = w₂ᵀ PReLU(W₁ [q, k, q − k, q ⊙ k]) (computed as W_q q + W_k k + W_p (q ⊙ k)).
    """

    def __init__(
        self,
        *,
        item_repr: ItemRepresentation,
        n_users: int,
        user_feature_values: np.ndarray,
        user_feature_sizes: list[int],
        dim: int,
        hidden_sizes: list[int],
        attention_hidden: int,
        dropout: float,
        history_feedback: bool,
        use_user_id: bool,
    ) -> None:
        super().__init__()
        self.item_repr = item_repr
        self.dim = dim
        self.history_feedback = history_feedback
        self.use_user_id = use_user_id
        self.register_buffer(
            "user_feature_values", torch.as_tensor(np.asarray(user_feature_values, dtype=np.int64)), persistent=True
        )
        self.user_feature_sizes = [int(s) for s in user_feature_sizes]
        self.user_features = nn.ModuleList(nn.Embedding(size, dim) for size in self.user_feature_sizes)
        self.user_id = nn.Embedding(n_users, dim) if use_user_id else None
        self.feedback = nn.Embedding(N_FEEDBACK, dim, padding_idx=0) if history_feedback else None
        for emb in [*self.user_features, *([self.user_id] if self.user_id is not None else [])]:
            nn.init.normal_(emb.weight, std=0.05)
        if self.feedback is not None:
            nn.init.normal_(self.feedback.weight, std=0.05)
            with torch.no_grad():
                self.feedback.weight[0].zero_()

        # DIN's first attention layer acts on [q, k, q - k, q ⊙ k]; since it is linear, the q - k
        # block folds into the q and k blocks, so three maps give the same function class
        # without materialising the [B, H, 4d] concatenation (the CPU bottleneck).
        self.att_query = nn.Linear(dim, attention_hidden)
        self.att_key = nn.Linear(dim, attention_hidden, bias=False)
        self.att_product = nn.Linear(dim, attention_hidden, bias=False)
        self.att_out = nn.Sequential(nn.PReLU(), nn.Linear(attention_hidden, 1))
        n_user_fields = len(self.user_feature_sizes) + (1 if use_user_id else 0)
        width = 4 * dim + n_user_fields * dim
        layers: list[nn.Module] = []
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.PReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)


    def forward(
        self,
        *,
        users: torch.Tensor,
        items: torch.Tensor,
        hist_items: torch.Tensor,
        hist_feedback: torch.Tensor,
        hist_mask: torch.Tensor,
        item_table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B] for users [B], items [B] and right-aligned histories [B, H].

        ``item_table`` [N, d] replaces the item representation's own vectors (soft indexing
        passes vectors built from the tokenizer's differentiable codes).
        """
        if item_table is None:
            target, keys = self.item_repr.lookup(items, hist_items)  # [B, d], [B, H, d]
        else:
            target, keys = item_table[items], item_table[hist_items]
        if self.feedback is not None:
            keys = keys + self.feedback(hist_feedback)
        mask = hist_mask.bool()
        query = target.unsqueeze(1)
        hidden = self.att_query(query) + self.att_key(keys) + self.att_product(query * keys)
        scores = self.att_out(hidden).squeeze(-1)
        scores = scores.masked_fill(~mask, float("-inf"))
        has_history = mask.any(dim=1, keepdim=True)
        # A row without history would softmax over -inf only; give it all-zero weights instead.
        weights = torch.softmax(torch.where(has_history, scores, torch.zeros_like(scores)), dim=1)
        weights = weights * mask
        interest = torch.einsum("bh,bhd->bd", weights, keys)
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1)
        mean_hist = (keys * mask.unsqueeze(-1)).sum(dim=1) / counts
        parts = [target, interest, mean_hist, target * interest]
        if self.user_id is not None:
            parts.append(self.user_id(users))
        feats = self.user_feature_values[users]
        for f, emb in enumerate(self.user_features):
            parts.append(emb(feats[:, f]))
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)

    def regularisation(self, items: torch.Tensor) -> torch.Tensor:
        """Mean squared norm of the target items' embedding rows (mini-batch-aware L2)."""
        return self.item_repr.l2(items)


MODELS: dict[str, type[nn.Module]] = {"din": DIN}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Construct an untrained model from a spec (``ranker/config.json`` → variants → spec).

    The spec holds only shapes and hyper-parameters; the buffers it needs (item field ids, user
    feature table) are filled with zeros here and overwritten by ``load_state_dict``.
    """
    from recdata.errors import DataError

    name = spec["model"]
    if name not in MODELS:
        raise DataError(f"unknown ranker model {name!r}; known: {sorted(MODELS)}")
    n_items = int(spec["n_items"])
    item_repr = ItemRepresentation(
        field_names=spec["field_names"],
        field_sizes=spec["field_sizes"],
        field_ids=np.zeros((n_items, len(spec["field_names"])), dtype=np.int64),
        dim=int(spec["embedding_dim"]),
    )
    return MODELS[name](
        item_repr=item_repr,
        n_users=int(spec["n_users"]),
        user_feature_values=np.zeros((int(spec["n_users"]), len(spec["user_feature_sizes"])), dtype=np.int64),
        user_feature_sizes=spec["user_feature_sizes"],
        dim=int(spec["embedding_dim"]),
        hidden_sizes=list(spec["hidden_sizes"]),
        attention_hidden=int(spec["attention_hidden"]),
        dropout=float(spec["dropout"]),
        history_feedback=bool(spec["history_feedback"]),
        use_user_id=bool(spec["use_user_id"]),
    )
