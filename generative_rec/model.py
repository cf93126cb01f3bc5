"""The generative retriever: a T5 encoder-decoder over semantic-ID tokens, trained from scratch.

The network is ``transformers.T5ForConditionalGeneration`` built from a :class:`RetrieverConfig`
(no pretrained weights). The vocabulary (``generative_rec.vocab.SidVocab``) holds pad (= decoder
start), eos, the hashed user tokens and one token range per SID position. The encoder reads
``[user] + SID tokens of the last <= max_history items + [eos]``; the decoder emits the next item's
SID, exactly ``L`` tokens after the decoder start (no eos: the length is fixed).

Input and output embeddings are tied (T5 default), so a code token has one vector ``E[offset + c]``
used both to read it and to score it. Stage 2 feeds ``soft_onehot @ E[offset : offset + K]``
instead of an integer lookup (:func:`soft_position_embeddings`), which is why the helpers below
accept ``inputs_embeds``.

With ``history_encoding: item`` (the default) the encoder reads one position per history item
instead of one per SID token: :class:`ItemSidEmbedding` embeds item ``i`` (token id
``vocab_size + i``) as the scaled sum of its SID tokens' rows, so the encoder input is ``L`` times
shorter and a step several times cheaper, while the representation is still built from the SID
tokens alone.

Weights are stored as safetensors without the tied aliases (``model_state``/``load_model_state``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from generative_rec.config import RetrieverConfig
from generative_rec.signals import ItemSignals, recent_from_inputs
from recdata.errors import DataError

PAD_ID = 0
EOS_ID = 1
# Aliases of ``shared.weight`` when embeddings are tied; saved once under ``shared.weight``.
TIED_KEYS = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")


def t5_config(*, cfg: RetrieverConfig, vocab_size: int) -> T5Config:
    """The ``T5Config`` of a retriever with ``vocab_size`` tokens."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        dropout_rate=cfg.dropout,
        feed_forward_proj=cfg.feed_forward_proj,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
        tie_word_embeddings=True,
        use_cache=True,
        item_query=cfg.item_head.query,
        decoder_start=cfg.decoder_start,
    )


class ItemSidEmbedding(nn.Module):
    """The encoder's token embedding when a history item is one encoder position.

    Ids below ``vocab_size`` are ordinary tokens (pad, eos, users, SID tokens) looked up in the
    shared table. An id ``vocab_size + i`` stands for catalogue item ``i`` and embeds as the sum
    of its SID tokens' rows divided by ``sqrt(L)`` (so its scale matches a single token's):
    items that share codes share vectors, and a new item needs only its SID. The shared table is
    the same parameter object as ``model.shared.weight`` (saved once, tied like T5's own
    embeddings); the item -> token table is a non-persistent buffer set from the run's IDs by
    :func:`set_item_tokens`.
    """

    def __init__(self, shared: nn.Embedding, item_tokens: torch.Tensor, *,
                 item_id_embedding: bool = False, recency_slots: int = 0) -> None:
        super().__init__()
        self.weight = shared.weight
        self.vocab_size = int(shared.weight.shape[0])
        self.register_buffer("item_tokens", item_tokens.long(), persistent=False)
        # Zero at start: training begins from the pure SID embedding and learns per-item
        # corrections; items added later keep a zero row and read as their SID.
        self.item_id = (nn.Embedding(len(item_tokens), self.weight.shape[1], _weight=torch.zeros(
            len(item_tokens), self.weight.shape[1])) if item_id_embedding else None)
        # Also zero at start. T5's relative biases give no position relative to the end of the
        # history, so without it the decoder cannot tell the most recent item from the others.
        self.recency = (nn.Embedding(recency_slots, self.weight.shape[1], _weight=torch.zeros(
            recency_slots, self.weight.shape[1])) if recency_slots > 0 else None)

    def grow(self, n_items: int) -> None:
        """Extend the per-item tables with zero rows for items added after training: a new
        item reads as its SID."""
        for name in ("item_id",):
            table = getattr(self, name)
            if table is None or n_items <= table.num_embeddings:
                continue
            old = table.weight.data
            new = torch.zeros(n_items, old.shape[1], dtype=old.dtype, device=old.device)
            new[: len(old)] = old
            setattr(self, name, nn.Embedding(n_items, old.shape[1], _weight=new))

    def head_table(self) -> torch.Tensor:
        """Every catalogue item's key for the item head ``[N, d]``: its history embedding."""
        return self.item_vectors()

    def head_rows(self, items: torch.Tensor) -> torch.Tensor:
        """The rows of :meth:`head_table` for item indices ``items`` ``[...]`` -> ``[..., d]``."""
        return self.item_rows(items)

    def item_vectors(self) -> torch.Tensor:
        """Every catalogue item's history embedding ``[N, d]`` (the rows :meth:`forward` gives
        item ids), which the item head scores against at every training step.

        Computed as ``A @ E`` with ``A`` the sparse ``[N, V]`` item -> token pooling matrix: on
        a CPU its backward is about 3x cheaper than the embedding gather's for a whole catalogue
        (the gather's backward sorts ``N * L`` indices)."""
        key = (self.item_tokens.device, self.item_tokens.data_ptr(), tuple(self.item_tokens.shape))
        if getattr(self, "_pool_key", None) != key:
            n, length = self.item_tokens.shape
            rows = torch.arange(n, device=self.item_tokens.device).repeat_interleave(length)
            values = torch.full((n * length,), length ** -0.5, device=self.item_tokens.device)
            # Not a buffer: DDP broadcasts buffers and does not take sparse ones.
            self._pool = torch.sparse_coo_tensor(
                torch.stack([rows, self.item_tokens.reshape(-1)]), values,
                (n, self.vocab_size), check_invariants=True).coalesce()
            self._pool_key = key
        pooled = torch.sparse.mm(self._pool, self.weight)
        if self.item_id is not None:
            pooled = pooled + self.item_id.weight[: len(self.item_tokens)]
        return pooled

    def recency_term(self, ids: torch.Tensor) -> torch.Tensor | float:
        """``[B, T, d]``: the recency vector of each item position (slot 0 for the most recent
        item of its row, the last slot for it and anything older), zero elsewhere; 0 without
        a recency table."""
        if self.recency is None:
            return 0.0
        is_item = ids >= self.vocab_size
        from_end = is_item.flip(-1).long().cumsum(-1).flip(-1) - 1
        slots = from_end.clamp(min=0, max=self.recency.num_embeddings - 1)
        return self.recency(slots) * is_item.unsqueeze(-1)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """``[..., d]``: the history embedding of catalogue items ``items`` (indices, not token
        ids) without any position's recency vector — the rows of :meth:`item_vectors`."""
        items = items.clamp(min=0, max=len(self.item_tokens) - 1)
        pooled = F.embedding(self.item_tokens[items], self.weight).sum(-2) * (
            self.item_tokens.shape[1] ** -0.5)
        if self.item_id is not None:
            pooled = pooled + self.item_id(items)
        return pooled

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_item = ids >= self.vocab_size
        direct = F.embedding(torch.where(is_item, 0, ids), self.weight)
        pooled = self.item_rows(ids - self.vocab_size)
        return torch.where(is_item.unsqueeze(-1), pooled, direct) + self.recency_term(ids)


def build_model(
    *, cfg: RetrieverConfig, vocab_size: int, item_tokens: np.ndarray | torch.Tensor | None = None
) -> T5ForConditionalGeneration:
    """A freshly initialised retriever (seed the global RNG first for reproducible weights).

    With ``cfg.history.encoding == "item"`` the encoder reads one position per history item and
    ``item_tokens`` (``[N, L]`` vocabulary ids of every item's SID) is required.
    """
    # T5 initialises token embeddings with std 1 for its scaled tied head; keep that.
    model = T5ForConditionalGeneration(t5_config(cfg=cfg, vocab_size=vocab_size))
    if cfg.history.encoding == "item":
        if item_tokens is None:
            raise DataError("history_encoding 'item' needs the item -> SID token table")
        model.encoder.embed_tokens = ItemSidEmbedding(model.shared, torch.as_tensor(item_tokens),
                                                      item_id_embedding=cfg.history.item_id_embedding,
                                                      recency_slots=(cfg.history.max_length
                                                                     if cfg.history.recency_embedding
                                                                     else 0))
    if cfg.item_head.signals:
        model.item_signals = ItemSignals(cfg.d_model, candidates=cfg.item_head.signal_candidates)
    return model


def set_signal_tables(model: torch.nn.Module, **tables: Any) -> None:
    """Give the item head's learned signals (``item_head.signals``) the run's tables
    (:meth:`generative_rec.signals.ItemSignals.set_tables`); a model without them is left as is."""
    signals = item_signals(model)
    if signals is not None:
        signals.set_tables(**tables)


def item_signals(model: torch.nn.Module) -> ItemSignals | None:
    """The item head's learned signals, or None (``item_head.signals`` off)."""
    return getattr(unwrap(model), "item_signals", None)


def signal_term(t5: T5ForConditionalGeneration, *, query: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, items: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor | float:
    """What the learned signals add to the item head's logits: ``[B, K]`` for candidates
    ``items``, else ``[B, N]`` for the whole catalogue (``targets``: training examples, whose
    own transition is left out); 0 without signals."""
    signals = item_signals(t5)
    if signals is None:
        return 0.0
    if not signals.ready:
        raise DataError("the item head's signals have no tables (set_signal_tables)")
    recent = recent_from_inputs(input_ids, attention_mask,
                                item_offset=_item_embedding(t5).vocab_size, n=signals.history)
    if items is None:
        return signals.catalogue_term(query, recent, targets=targets)
    return signals.candidate_term(query, recent, items)


def item_token_offset(model: torch.nn.Module) -> int | None:
    """Token id of item 0 for an item-level encoder (the collator's ``item_offset``), else None."""
    emb = unwrap(model).encoder.embed_tokens
    return emb.vocab_size if isinstance(emb, ItemSidEmbedding) else None


def set_item_tokens(model: torch.nn.Module, item_tokens: np.ndarray | torch.Tensor) -> None:
    """Point an item-level encoder at a new item -> SID token table (new items, stage 2)."""
    emb = unwrap(model).encoder.embed_tokens
    if isinstance(emb, ItemSidEmbedding):
        emb.item_tokens = torch.as_tensor(np.ascontiguousarray(item_tokens), dtype=torch.long,
                                          device=emb.weight.device)
        emb.grow(len(emb.item_tokens))


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the tied aliases (safetensors refuses shared storage)."""
    state = unwrap(model).state_dict()
    return {k: v for k, v in state.items() if k not in TIED_KEYS}


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load :func:`model_state` output; any missing key other than a tied alias is an error."""
    result = unwrap(model).load_state_dict(tensors, strict=False)
    missing = [k for k in result.missing_keys if k not in TIED_KEYS]
    if missing or result.unexpected_keys:
        raise DataError(
            f"retriever weights do not match the model (missing {missing[:3]}, "
            f"unexpected {list(result.unexpected_keys)[:3]})"
        )


def unwrap(model: torch.nn.Module) -> T5ForConditionalGeneration:
    """The bare model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model  # type: ignore[return-value]


def shift_right(labels: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: ``[start, y_0, ..., y_{L-2}]``."""
    start = torch.full_like(labels[:, :1], PAD_ID)
    return torch.cat([start, labels[:, :-1]], dim=1)


def sid_logits(
    model: torch.nn.Module,
    *,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    decoder_input_ids: torch.Tensor | None = None,
    decoder_inputs_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Teacher-forced next-token logits ``[B, L, V]``, or ``[B, L, K_max]`` when ``model`` is a
    :class:`PositionHeads` (call through the DDP wrapper if any)."""
    if isinstance(unwrap(model), PositionHeads):
        return model(input_ids=input_ids, inputs_embeds=inputs_embeds,
                     attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                     decoder_inputs_embeds=decoder_inputs_embeds)
    out = model(
        input_ids=input_ids,
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        decoder_inputs_embeds=decoder_inputs_embeds,
        use_cache=False,
    )
    return out.logits


def retrieval_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of the target SID (every position counts, no padding)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1))


def item_query(model: torch.nn.Module, *, input_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
    """The item head's query ``[B, d]``: the decoder's output at the start token (the state that
    predicts the first code), scaled like the tied code head's inputs."""
    t5 = unwrap(model)
    enc = t5.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    start = torch.full((input_ids.size(0), 1), PAD_ID, dtype=torch.long, device=input_ids.device)
    dec = t5.decoder(inputs_embeds=decoder_embeds(t5, enc=enc, attention_mask=attention_mask,
                                                  ids=start),
                     encoder_hidden_states=enc, encoder_attention_mask=attention_mask,
                     use_cache=False).last_hidden_state
    return head_query(t5, enc=enc, dec_start=dec[:, 0], attention_mask=attention_mask)


def last_item_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]``: where a right-padded ``[user] + items + [eos]`` input holds its most recent
    history item, ``length - 2`` (the user token's position for an empty history)."""
    return (attention_mask.sum(1) - 2).clamp(min=0)


def last_item_states(enc: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The encoder's output ``[B, d]`` at the most recent history item
    (:func:`last_item_positions`)."""
    return enc[torch.arange(len(enc), device=enc.device), last_item_positions(attention_mask)]


def start_reads_last(model: torch.nn.Module) -> bool:
    """True when the decoder's start input carries the most recent item (``decoder_start: last``)."""
    return getattr(unwrap(model).config, "decoder_start", "token") == "last"


def decoder_embeds(t5: torch.nn.Module, *, enc: torch.Tensor, attention_mask: torch.Tensor,
                   ids: torch.Tensor | None = None,
                   embeds: torch.Tensor | None = None) -> torch.Tensor:
    """The decoder's input embeddings ``[B, T, d]`` of ``ids`` (or ``embeds`` as given), whose
    position 0 is the start token: with ``decoder_start: last`` the encoder's output at the most
    recent history item (:func:`last_item_states`) is added there. Every path into the decoder
    (training, the item head, beam search, stage 2, the oracles) goes through here, so they
    read the same start."""
    t5 = unwrap(t5)
    if embeds is None:
        embeds = t5.decoder.embed_tokens(ids)
    if not start_reads_last(t5):
        return embeds
    last = last_item_states(enc, attention_mask).to(embeds.dtype)
    return torch.cat([embeds[:, :1] + last[:, None], embeds[:, 1:]], dim=1)


def head_query(t5: T5ForConditionalGeneration, *, enc: torch.Tensor, dec_start: torch.Tensor,
               attention_mask: torch.Tensor) -> torch.Tensor:
    """The item head's query from the encoder's output ``enc`` ``[B, T, d]`` and the decoder's
    start-token output ``[B, d]``: the latter alone, or (``item_query: last``) plus the encoder
    output at the most recent history item (:func:`last_item_states`), scaled to meet
    :meth:`ItemSidEmbedding.head_table` in one product."""
    if getattr(t5.config, "item_query", "decoder") == "last":
        dec_start = dec_start + last_item_states(enc, attention_mask)
    return _scaled(t5, dec_start)


def item_head_scores(model: torch.nn.Module, *, query: torch.Tensor, items: torch.Tensor,
                     input_ids: torch.Tensor | None = None,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Item-head logits ``[B, K]`` of the items ``[B, K]`` (-1 = none scores 0) for ``query``:
    the dot product with each item's history embedding, plus the learned signals of the
    histories ``input_ids`` when the model has them. Only the ``K`` candidates are embedded and
    looked up, so the cost does not grow with the catalogue."""
    # Not ``emb(ids)``: a candidate list is no history, and the forward pass would add the
    # recency vector of each candidate's place in the list.
    t5 = unwrap(model)
    emb = _item_embedding(t5)
    vectors = emb.head_rows(items)
    scores = torch.einsum("bd,bkd->bk", query.to(vectors.dtype), vectors)
    if item_signals(t5) is not None:
        if input_ids is None or attention_mask is None:
            raise DataError("the item head's signals read the histories (input_ids)")
        scores = scores + signal_term(t5, query=query, input_ids=input_ids,
                                      attention_mask=attention_mask, items=items)
    return scores * (items >= 0)


def _item_embedding(t5: T5ForConditionalGeneration) -> ItemSidEmbedding:
    emb = t5.encoder.embed_tokens
    if not isinstance(emb, ItemSidEmbedding):
        raise DataError("the item head needs history_encoding 'item'")
    return emb


def _scaled(t5: T5ForConditionalGeneration, dec: torch.Tensor) -> torch.Tensor:
    return dec * (t5.model_dim ** -0.5) if t5.config.scale_decoder_outputs else dec


class PositionHeads(nn.Module):
    """Teacher-forced SID scores with one softmax per SID position (``output_softmax:
    position``): the decoder's output at position ``p`` is scored against that position's
    codebook rows only, ``[B, L, K_max]`` logits (``-inf`` past a shorter codebook).

    The full-vocabulary head of :func:`sid_logits` spends most of a small model's step on rows
    the position can never emit (user tokens, the other positions' codes) and lets probability
    leak onto them; restricting each step to its own range is what decoding does anyway. This
    module wraps the T5 (DDP wraps it in turn, so gradients are synchronised as usual); its
    ``[p, :K_p]`` slice equals ``sid_logits(...)[:, p, offset_p : offset_p + K_p]``.

    With ``with_items=True`` it also returns the item head's logits over the whole catalogue
    ``[B, N]``: the start-token output (:func:`item_query`) against every item's history
    embedding, plus the learned signals (``item_head.signals``; ``item_targets``: the
    examples' next items, whose own transition the signals leave out), the training side of
    ``RetrieverConfig.item_head.loss_weight``.
    """

    def __init__(self, model: T5ForConditionalGeneration, *, offsets: tuple[int, ...],
                 sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.t5 = unwrap(model)
        self.ranges = [(int(o), int(o) + int(k)) for o, k in zip(offsets, sizes)]
        self.width = max(int(k) for k in sizes)

    def forward(self, *, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_inputs_embeds: torch.Tensor | None = None,
                with_items: bool = False,
                item_targets: torch.Tensor | None = None,
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        t5 = self.t5
        enc = t5.encoder(input_ids=input_ids, inputs_embeds=inputs_embeds,
                         attention_mask=attention_mask).last_hidden_state
        if start_reads_last(t5):
            decoder_inputs_embeds = decoder_embeds(t5, enc=enc, attention_mask=attention_mask,
                                                   ids=decoder_input_ids,
                                                   embeds=decoder_inputs_embeds)
            decoder_input_ids = None
        dec = t5.decoder(input_ids=decoder_input_ids, inputs_embeds=decoder_inputs_embeds,
                         encoder_hidden_states=enc, encoder_attention_mask=attention_mask,
                         use_cache=False).last_hidden_state
        scaled = _scaled(t5, dec)
        weight = t5.lm_head.weight
        rows = [F.pad(scaled[:, p] @ weight[lo:hi].T, (0, self.width - (hi - lo)),
                      value=float("-inf")) for p, (lo, hi) in enumerate(self.ranges)]
        logits = torch.stack(rows, dim=1)
        if not with_items:
            return logits
        if input_ids is None:
            raise DataError("the item head reads the history's item ids, not embeddings")
        query = head_query(t5, enc=enc, dec_start=dec[:, 0], attention_mask=attention_mask)
        item_logits = query @ _item_embedding(t5).head_table().T
        return logits, item_logits + signal_term(t5, query=query, input_ids=input_ids,
                                                 attention_mask=attention_mask,
                                                 targets=item_targets)


def position_loss(logits: torch.Tensor, codes: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-position cross-entropy of :class:`PositionHeads` logits against SID codes
    (``labels - offsets``). With ``mask`` (``[B, L, K]``, the trie's
    :meth:`~generative_rec.trie.SidTrie.sibling_mask`) each softmax runs over the target
    prefix's valid children only: ``L`` times the mean is then minus the target's mean
    ``normalize="children"`` score."""
    logits = logits.float()
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), codes.reshape(-1))


def head_distill_loss(logits: torch.Tensor, item_logits: torch.Tensor, codes: torch.Tensor,
                      trie: Any, *, levels: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the SID softmax of the first ``levels`` positions against the item
    head's distribution summed per code (``RetrieverConfig.item_head.distill_weight``).

    ``logits`` ``[B, L, K]`` are :class:`PositionHeads` logits (masked by ``mask`` as in
    :func:`position_loss`), ``item_logits`` ``[B, N]`` the head's catalogue logits (the teacher:
    no gradient flows into them), ``codes`` ``[B, L]`` the targets' codes and ``trie`` the
    catalogue's :class:`~generative_rec.trie.SidTrie`. At position ``d`` the teacher is the
    head's softmax over the items that share the target's first ``d`` codes, summed by their
    code ``d``: what the children softmax under that prefix would be if it agreed with the head.
    Mean over the batch and the positions.

    Past the first position only the target prefix's items are read, the trie's contiguous run
    of leaves under it, gathered as ``[B, G]`` with ``G`` the longest run in the batch: those
    levels cost ``B·G``, not ``B·N``. Each softmax runs over its own run, so a prefix the head
    finds unlikely still gets a well-defined teacher."""
    scores = item_logits.detach().float()
    levels = min(levels, logits.size(1))
    total = logits.new_zeros((), dtype=torch.float32)
    for d in range(levels):
        teacher = torch.zeros(len(codes), logits.size(-1), dtype=scores.dtype, device=scores.device)
        if d == 0:
            teacher.index_add_(1, trie.codes[:, 0], scores.softmax(dim=-1))
        else:
            lo, hi = trie.prefix_leaves(codes, d)
            slots = lo[:, None] + torch.arange(int((hi - lo).max()), device=scores.device)
            real = slots < hi[:, None]
            items = trie.leaf_item[slots.clamp(max=trie.n_items - 1)]
            run = scores.gather(1, items).masked_fill(~real, float("-inf"))
            teacher.scatter_add_(1, trie.codes[items, d], run.softmax(dim=-1))
        step = logits[:, d].float()
        if mask is not None:
            step = step.masked_fill(~mask[:, d], float("-inf"))
        # The teacher is zero wherever the student is -inf (no item there), so those terms are
        # dropped rather than multiplied out to NaN.
        logp = torch.where(teacher > 0, step.log_softmax(dim=-1), 0.0)
        total = total - (teacher * logp).sum(dim=1).mean()
    return total / levels


def soft_position_embeddings(
    embedding: torch.Tensor, onehot: torch.Tensor, offset: int
) -> torch.Tensor:
    """``onehot @ E[offset : offset + K]`` for one SID position.

    ``onehot`` is ``[N, K]``: exactly one-hot in the forward pass (straight-through soft
    indexing) so the result equals the integer lookup, while its gradient reaches the tokenizer.
    """
    k = onehot.size(-1)
    return onehot.to(embedding.dtype) @ embedding[offset : offset + k]
