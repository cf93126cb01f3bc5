"""The item head's learned signals (``item_head.signals``): successor counts and content
similarity as inputs the model weighs itself.

A rule with no learned model — how often a candidate followed the most recent item in training,
plus its content similarity to the recent items — ranks Beauty's next items better than the
retriever alone (the ``heuristic`` baseline). The retriever's embeddings cannot hold a sparse
item -> item count table, so here the item head reads those numbers directly: each candidate
``j`` of a history gets

    gate(query) · [log1p(count(last -> j)), cos_1(j), ..., cos_H(j), log1p(popularity(j))]

added to its logit, where ``cos_h(j)`` is the content cosine of ``j`` to the ``h``-th most recent
item (0 for that item itself), for every item of the catalogue: the heuristic's content term
reaches every item, and cut to each recent item's nearest items the model trailed it
(experiments 69 and 70). ``gate`` is a linear map of the head's query: how much each signal
counts is learned, per history, from the training loss instead of fitted on validation users by
hand-set grids. Training examples are the training sequences' own transitions, so each
example's own pair is left out of the count (and its target out of the popularity): at
validation and test time the target's transition is never counted.

Two implementations compute the same term: :meth:`ItemSignals.catalogue_term` for every item of
the catalogue (the training softmax: a scatter of the successor counts and one product of the
gate-weighted recent items' vectors with the catalogue's), and
:meth:`ItemSignals.candidate_term` for a few candidates per history (decoding; lookups whose
cost does not grow with the catalogue). The tests hold them, and a plain-Python reference,
equal.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from generative_rec.content import ContentVectors
from generative_rec.transitions import TransitionCounts

# The most recent items whose content neighbours count (one gate weight each).
SIGNAL_HISTORY = 5


def n_signals(history: int = SIGNAL_HISTORY) -> int:
    """Signals per candidate: the count, one cosine per recent item, the popularity."""
    return history + 2


class ItemSignals(nn.Module):
    """The gate (saved with the model) and the tables it reads (set from the run's data by
    :meth:`set_tables`, not saved: ``retriever/transitions.safetensors``, ``content.safetensors``
    and the training counts hold them)."""

    def __init__(self, d_model: int, *, history: int = SIGNAL_HISTORY, candidates: int = 0) -> None:
        super().__init__()
        self.history = history
        # Decoding: how many successors and how many nearest items of the last item join the
        # beam's candidates (``item_head.signal_candidates``).
        self.candidates = candidates
        # Zero at start: training begins from the head's own scores.
        self.gate = nn.Linear(d_model, n_signals(history))
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        for name in ("keys", "counts", "bounds", "neighbours", "log_popularity", "popularity",
                     "vectors"):
            self.register_buffer(name, torch.zeros(0), persistent=False)
        self.n_items = 0

    def set_tables(self, *, transitions: TransitionCounts, content: ContentVectors,
                   popularity: np.ndarray) -> None:
        """Read the training sequences' ``transitions``, the catalogue's ``content`` (unit
        vectors; nearest items for :meth:`offers`) and each item's training ``popularity``
        (``[N]`` interaction counts)."""
        n = int(transitions.n_items)
        if content.n_items < n or len(popularity) < n:
            raise ValueError("the signals' tables disagree on the catalogue size")
        device = self.gate.weight.device
        keys = torch.as_tensor(transitions.keys, dtype=torch.long)
        self.keys = keys.to(device)
        self.counts = torch.as_tensor(transitions.counts, dtype=torch.float32).to(device)
        self.bounds = torch.searchsorted(keys // max(n, 1), torch.arange(n + 1)).to(device)
        self.neighbours = torch.as_tensor(content.neighbours[:n], dtype=torch.long).to(device)
        self.vectors = torch.as_tensor(content.vectors[:n], dtype=torch.float32).to(device)
        pop = torch.as_tensor(np.array(popularity[:n], dtype=np.float32))
        self.popularity = pop.to(device)
        self.log_popularity = torch.log1p(pop).to(device)
        self.n_items = n

    def offers(self, last: torch.Tensor, m: int) -> torch.Tensor:
        """``[B, 2m]``: for each last item (``[B]``, -1 = none), its ``m`` most frequent training
        successors (ties: lower index first), then its ``m`` nearest items by content; -1 pads."""
        n = self.n_items
        ok = (last >= 0) & (last < n)
        src = last.clamp(0, max(n - 1, 0))
        lo = self.bounds[src]
        length = torch.where(ok, self.bounds[src + 1] - lo, 0)
        # A row's run of the key table, padded to the longest run of the batch, sorted by count.
        width = max(int(length.max()) if len(length) else 0, 1)
        slots = lo[:, None] + torch.arange(width, device=last.device)
        real = torch.arange(width, device=last.device)[None, :] < length[:, None]
        slots = slots.clamp(max=max(len(self.keys) - 1, 0))
        dst = torch.where(real, self.keys[slots] % max(n, 1), -1) if len(self.keys) else \
            torch.full((len(last), width), -1, device=last.device)
        count = torch.where(real, self.counts[slots], -1.0) if len(self.keys) else \
            torch.full((len(last), width), -1.0, device=last.device)
        # Stable on the dst order of the key table: equal counts keep the lower index first.
        order = torch.sort(-count, dim=1, stable=True).indices[:, :m]
        succ = dst.gather(1, order)
        if succ.size(1) < m:
            succ = torch.cat([succ, succ.new_full((len(last), m - succ.size(1)), -1)], 1)
        near = torch.where(ok[:, None], self.neighbours[src, :m], -1)
        if near.size(1) < m:
            near = torch.cat([near, near.new_full((len(last), m - near.size(1)), -1)], 1)
        return torch.cat([succ, near], 1)

    def copy_tables(self, other: "ItemSignals") -> None:
        """Read the same tables as ``other`` (a rebuilt model of the same catalogue: stage 2's
        new vocabulary; the tables are keyed by item index, which IDs do not change)."""
        for name, value in other.named_buffers(recurse=False):
            setattr(self, name, value)
        self.n_items = other.n_items

    @property
    def ready(self) -> bool:
        return self.n_items > 0

    def weights(self, query: torch.Tensor) -> torch.Tensor:
        """``[B, F]``: each history's weight per signal."""
        return self.gate(query.float())

    # ------------------------------------------------------------------ whole catalogue

    def catalogue_term(self, query: torch.Tensor, recent: torch.Tensor, *,
                       targets: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, N]``: the term of every catalogue item for histories whose most recent items
        are ``recent`` (``[B, H]``, most recent first, -1 = none). ``targets`` (``[B]``, training
        examples' next items): their own transition and interaction are left out."""
        w = self.weights(query)
        b, n = len(recent), self.n_items
        last = recent[:, 0]
        flat_idx, flat_val = [], []
        # Successors of the last item: the rows' runs of the sorted key table.
        has_last = (last >= 0) & (last < n)
        src = last.clamp(0, max(n - 1, 0))
        lo = torch.where(has_last, self.bounds[src], 0)
        length = torch.where(has_last, self.bounds[src + 1] - lo, 0)
        rows = torch.repeat_interleave(torch.arange(b, device=recent.device), length)
        starts = torch.repeat_interleave(lo - (torch.cumsum(length, 0) - length), length)
        pos = starts + torch.arange(len(rows), device=recent.device)
        flat_idx.append(rows * n + self.keys[pos] % n)
        flat_val.append(w[rows, 0] * torch.log1p(self.counts[pos]))
        h = min(self.history, recent.size(1))
        rec = recent[:, :h]
        known = (rec >= 0) & (rec < n)
        term = torch.zeros(b * n, dtype=w.dtype, device=w.device).index_add(
            0, torch.cat(flat_idx), torch.cat(flat_val)).view(b, n)
        # sum_h w_h cos(recent_h, j) = (sum_h w_h v_h) . v_j: one product with the catalogue, as
        # the head's own scores; then each recent item's term to itself taken out.
        safe = rec.clamp(0, max(n - 1, 0))
        wh = w[:, 1 : 1 + h] * known
        vec = self.vectors[safe]  # [B, h, d]
        term = term + torch.einsum("bh,bhd->bd", wh, vec) @ self.vectors.T
        term = term.scatter_add(1, safe, -wh * (vec * vec).sum(-1))
        term = term + w[:, -1:] * self.log_popularity[None, :]
        if targets is not None:
            term = term - self._own_example(w, last, targets)
        return term

    def _own_example(self, w: torch.Tensor, last: torch.Tensor,
                     targets: torch.Tensor) -> torch.Tensor:
        """``[B, N]``: what each training example's own transition and interaction add to its
        target's term (zero elsewhere), to subtract."""
        b, n = len(targets), self.n_items
        ok = (targets >= 0) & (targets < n)
        t = targets.clamp(0, max(n - 1, 0))
        count = self._counts(last, t[:, None])[:, 0]
        seen = ok & (count > 0)
        drop_count = torch.where(seen, torch.log1p(count) - torch.log1p(count - 1), 0.0)
        pop = self.popularity[t]
        drop_pop = torch.where(ok & (pop > 0), torch.log1p(pop) - torch.log1p(pop - 1), 0.0)
        own = w[:, 0] * drop_count + w[:, -1] * drop_pop
        return torch.zeros(b, n, dtype=w.dtype, device=w.device).scatter(1, t[:, None], own[:, None])

    # ------------------------------------------------------------------ candidates

    def candidate_term(self, query: torch.Tensor, recent: torch.Tensor,
                       items: torch.Tensor) -> torch.Tensor:
        """``[B, M]``: the term of candidates ``items`` (``[B, M]``, -1 = none, 0 for them and
        for items the tables do not know: added after training)."""
        w = self.weights(query)
        n = self.n_items
        known = (items >= 0) & (items < n)
        safe = items.clamp(0, max(n - 1, 0))
        signals = [torch.log1p(self._counts(recent[:, 0], safe))]
        h = min(self.history, recent.size(1))
        sims = self._cosines(recent[:, :h], safe)
        signals += [sims[:, :, i] for i in range(h)]
        signals += [torch.zeros_like(sims[:, :, 0])] * (self.history - h)
        signals.append(self.log_popularity[safe])
        feats = torch.stack(signals, dim=-1)  # [B, M, F]
        return (feats * w[:, None, :]).sum(-1) * known

    def _cosines(self, recent: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[B, M, h]``: the cosine of ``items`` (``[B, M]``, valid indices) to each recent
        item (``[B, h]``, -1 = none: 0); an item is not its own neighbour (0)."""
        n = self.n_items
        known = (recent >= 0) & (recent < n)
        rec = recent.clamp(0, max(n - 1, 0))
        cos = torch.einsum("bhd,bmd->bmh", self.vectors[rec], self.vectors[items])
        same = items[:, :, None] == rec[:, None, :]
        return cos.masked_fill(same | ~known[:, None, :], 0.0)

    def _counts(self, last: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` training counts of ``last[b] -> items[b, m]`` (0 when unseen or either is
        outside the tables)."""
        n = self.n_items
        ok = (last[:, None] >= 0) & (last[:, None] < n) & (items >= 0) & (items < n)
        if len(self.keys) == 0:
            return torch.zeros(items.shape, device=items.device)
        query = torch.where(ok, last[:, None] * n + items, -1)
        pos = torch.searchsorted(self.keys, query).clamp(max=len(self.keys) - 1)
        found = ok & (self.keys[pos] == query)
        return torch.where(found, self.counts[pos], 0.0)


def recent_from_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                       item_offset: int, n: int) -> torch.Tensor:
    """``[B, n]``: the most recent history items (most recent first, -1 = none) of right-padded
    item-level encoder inputs ``[user] + items + [eos]`` (item ``i`` = token ``item_offset + i``)."""
    length = attention_mask.sum(1) - 2  # history items per row
    back = length[:, None] - 1 - torch.arange(n, device=input_ids.device)[None, :]
    pos = (1 + back).clamp(min=0, max=input_ids.size(1) - 1)
    tokens = input_ids.gather(1, pos)
    return torch.where((back >= 0) & (tokens >= item_offset), tokens - item_offset, -1)

