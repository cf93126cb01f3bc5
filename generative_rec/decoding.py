"""Trie-constrained beam search for the T5 retriever, vectorised over queries and beams.

Each decoding step is a handful of tensor ops on the device: gather every beam's fixed-width window
of children from :class:`~generative_rec.trie.SidTrie`, score them, mask the empty slots, take the
top ``num_beams`` over ``beams × window`` per query, and reorder the decoder's self-attention cache.
There is no Python loop over beams or queries, the search itself never waits on the device (no
``.item()``/``.tolist()`` inside the loop), and the work per step depends on the beam count and the
trie's branching factor, not on the catalogue size.

The encoder runs once per query. The first decoder step runs once per query too (all beams start
from the same token); its self-attention cache is then repeated to ``batch × beams`` once, and later
steps reorder it with ``index_select`` (the cache's ``reorder_cache``). Cross-attention keys/values
are the same for every beam of a query. By default (``cross_attention="shared"``) they are kept
once per query and all beams attend to them in one attention call, so decoder memory and traffic do
not grow with the beam count; ``cross_attention="expand"`` instead repeats the model's own
cross-attention cache to every beam once, the plain Hugging Face layout.

Scores. ``normalize="children"`` (default) takes the log-softmax over the valid children of the
prefix only, so a sequence's score is its log-probability under the model restricted to the
catalogue step by step (the probability constrained sampling would draw it with).
``normalize="vocab"`` takes the log-softmax over the whole vocabulary, i.e. the model's plain
joint log-likelihood of the SID, as Hugging Face ``generate`` with ``prefix_allowed_tokens_fn``
reports it. ``normalize="position"`` takes it over the current SID position's own token range:
the joint log-likelihood of a model trained with one softmax per position
(``generative_rec.model.PositionHeads``). Both are exact beam searches for their score; the oracles in
:mod:`generative_rec.reference_decoding` implement both.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Literal

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from generative_rec.model import decoder_embeds, start_reads_last
from generative_rec.trie import SidTrie
from generative_rec.vocab import SidVocab

logger = logging.getLogger(__name__)

# transformers 5 renamed the decoder cache argument (``past_key_values`` -> ``cache``, the old
# name warning on every call); pass whichever this version's T5 takes.
CACHE_KWARG = ("cache" if "cache" in inspect.signature(
    transformers.T5ForConditionalGeneration.forward).parameters else "past_key_values")

Normalize = Literal["children", "vocab", "position"]
NORMALIZATIONS: tuple[str, ...] = ("children", "vocab", "position")
CrossAttention = Literal["auto", "shared", "expand"]


def check_decoding_args(*, trie: SidTrie, vocab: SidVocab, num_beams: int, top_k: int, normalize: str, model: nn.Module | None = None) -> None:
    """Validate the arguments shared by the fast search and the oracles (clear ``ValueError``s)."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if num_beams < top_k:
        raise ValueError(
            f"num_beams ({num_beams}) must be >= top_k ({top_k}): beam search cannot return more "
            "sequences than it keeps; raise num_beams"
        )
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if trie.sid_length != vocab.sid_length:
        raise ValueError(f"trie SIDs have length {trie.sid_length} but the vocabulary has {vocab.sid_length} positions")
    for p, (m, size) in enumerate(zip(trie.max_codes, vocab.codebook_sizes)):
        if m >= size:
            raise ValueError(f"trie code {m} at position {p} does not fit the vocabulary's codebook size {size}")
    if model is not None:
        model_vocab = int(model.config.vocab_size)
        if model_vocab < vocab.vocab_size:
            raise ValueError(f"model vocab_size {model_vocab} is smaller than the SID vocabulary's {vocab.vocab_size}")


@torch.no_grad()
def constrained_beam_search(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    trie: SidTrie,
    vocab: SidVocab,
    num_beams: int,
    top_k: int,
    normalize: Normalize = "position",
    use_cache: bool = True,
    cross_attention: CrossAttention = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``top_k`` catalogue items per query by beam search over the SID trie.

    Args:
        model: a ``T5ForConditionalGeneration`` over ``vocab`` (put in eval mode for the call and
            restored afterwards).
        input_ids, attention_mask: ``[B, S]`` encoder inputs (mask may be ``None`` = no padding).
        trie: catalogue SIDs; moved to ``input_ids``' device if needed (build it there to avoid the copy).
        num_beams: beams kept per query; must be ``>= top_k`` (never shrunk silently).
        normalize: ``"position"``, ``"vocab"`` or ``"children"``, see the module docstring.
        use_cache: reuse decoder keys/values between steps (``False`` recomputes the prefix; same result).
        cross_attention: ``"shared"`` keeps one cross-attention key/value set per query and lets all
            its beams attend to it (memory and traffic ``num_beams`` times smaller); ``"expand"``
            copies the model's cross-attention cache to every beam (plain Hugging Face path);
            ``"auto"`` picks ``"shared"`` when the model has T5's decoder layout.

    Returns:
        ``(items, scores)``: ``LongTensor [B, top_k]`` of item_idx sorted by descending score and
        ``FloatTensor [B, top_k]`` of sequence log-probabilities. Slots beyond the number of
        catalogue SIDs reachable by the search hold item ``-1`` and score ``-inf``.
    """
    check_decoding_args(trie=trie, vocab=vocab, num_beams=num_beams, top_k=top_k, normalize=normalize, model=model)
    if input_ids.ndim != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids must be a non-empty [B, S] tensor, got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    if cross_attention not in ("auto", "shared", "expand"):
        raise ValueError(f"cross_attention must be 'auto', 'shared' or 'expand', got {cross_attention!r}")
    shared = _shared_cross_attention_supported(model)
    if cross_attention == "shared" and not shared:
        raise ValueError("cross_attention='shared' needs a transformers>=5 T5 decoder; use cross_attention='expand'")
    shared = shared and cross_attention != "expand"
    logger.debug("constrained beam search: %d queries, %d beams, cross-attention %s",
                 input_ids.shape[0], num_beams, "shared" if shared else "expand")
    trie = trie.to(input_ids.device)

    was_training = model.training
    model.eval()
    try:
        return _search(
            model=model,
            input_ids=input_ids,
            attention_mask=attention_mask,
            trie=trie,
            offsets=vocab.offsets,
            sizes=tuple(vocab.codebook_sizes),
            start_id=vocab.pad_id,
            num_beams=num_beams,
            top_k=top_k,
            normalize=normalize,
            use_cache=use_cache,
            shared=shared,
        )
    finally:
        model.train(was_training)


def _search(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: SidTrie,
    offsets: tuple[int, ...],
    sizes: tuple[int, ...],
    start_id: int,
    num_beams: int,
    top_k: int,
    normalize: str,
    use_cache: bool,
    shared: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = input_ids.shape[0]
    device = input_ids.device
    length = trie.sid_length

    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
    with contextlib.ExitStack() as stack:
        if shared:
            stack.enter_context(_SharedCrossAttention(model, hidden, attention_mask))
            # The patched cross-attention reads its per-query keys/values and mask itself; the decoder
            # only needs a tensor of the right shape to size its (unused) cross-attention mask.
            enc_states = lambda rows: hidden.new_zeros(()).expand(rows, *hidden.shape[1:])  # noqa: E731
            enc_mask = lambda rows: None  # noqa: E731
        else:
            enc_states = lambda rows: hidden if rows == batch else hidden.repeat_interleave(rows // batch, dim=0)  # noqa: E731
            enc_mask = lambda rows: attention_mask if rows == batch else attention_mask.repeat_interleave(rows // batch, dim=0)  # noqa: E731

        # With ``decoder_start: last`` the start position also carries the most recent history
        # item (generative_rec.model.decoder_embeds); later positions are plain code tokens.
        reads_last = start_reads_last(model)

        def decoder_inputs(ids: torch.Tensor) -> dict[str, torch.Tensor]:
            if not reads_last:
                return {"decoder_input_ids": ids}
            per = ids.shape[0] // batch
            return {"decoder_inputs_embeds": decoder_embeds(
                model, ids=ids, enc=hidden if per == 1 else hidden.repeat_interleave(per, dim=0),
                attention_mask=(attention_mask if per == 1
                                else attention_mask.repeat_interleave(per, dim=0)))}

        out = model(
            encoder_outputs=(enc_states(batch),),
            attention_mask=enc_mask(batch),
            **decoder_inputs(torch.full((batch, 1), start_id, dtype=torch.long, device=device)),
            use_cache=use_cache,
            return_dict=True,
        )
        cache = getattr(out, CACHE_KWARG) if use_cache else None
        scores, nodes, origin, tokens = _expand(
            trie=trie, depth=0, logits=out.logits[:, -1:, :],
            scores=torch.zeros(batch, 1, device=device), nodes=torch.zeros(batch, 1, dtype=torch.long, device=device),
            offset=offsets[0], size=sizes[0], num_beams=num_beams, normalize=normalize,
        )
        del out
        seqs = tokens.unsqueeze(-1)  # [B, K, t]: tokens chosen so far, aligned with the current beams

        if length > 1:
            # From here on beam k of query b is row b * K + k. Every beam of a query starts from the
            # same single row, so expanding the step-0 cache is a repeat, done once.
            rows = batch * num_beams
            step_states, step_mask = enc_states(rows), enc_mask(rows)
            if cache is not None:
                (cache.self_attention_cache if shared else cache).batch_repeat_interleave(num_beams)
            row_base = (torch.arange(batch, device=device) * num_beams).unsqueeze(1)
        for depth in range(1, length):
            if cache is not None:
                dec_args = {"decoder_input_ids": tokens.reshape(-1, 1)}
            else:
                start = torch.full((rows, 1), start_id, dtype=torch.long, device=device)
                dec_args = decoder_inputs(torch.cat([start, seqs.reshape(rows, -1)], dim=1))
            out = model(
                encoder_outputs=(step_states,),
                attention_mask=step_mask,
                **dec_args,
                **{CACHE_KWARG: cache},
                use_cache=use_cache,
                return_dict=True,
            )
            logits = out.logits[:, -1, :].view(batch, num_beams, -1)
            del out
            scores, nodes, origin, tokens = _expand(
                trie=trie, depth=depth, logits=logits, scores=scores, nodes=nodes,
                offset=offsets[depth], size=sizes[depth], num_beams=num_beams, normalize=normalize,
            )
            seqs = torch.cat([seqs.gather(1, origin.unsqueeze(-1).expand(-1, -1, seqs.shape[-1])), tokens.unsqueeze(-1)], dim=-1)
            if cache is not None and depth < length - 1:
                # Only the self-attention cache depends on the beam's history; the cross-attention
                # cache is the same for all beams of a query, so reordering within a query is a no-op.
                cache.self_attention_cache.reorder_cache((row_base + origin).reshape(-1))

    scores, nodes = scores[:, :top_k], nodes[:, :top_k]
    alive = torch.isfinite(scores)
    items = torch.where(alive, trie.leaf_item[nodes], torch.full_like(nodes, -1))
    scores = torch.where(alive, scores, torch.full_like(scores, float("-inf")))
    return items, scores


def _cross_attention_modules(model: nn.Module) -> list[nn.Module]:
    decoder = getattr(model, "decoder", None)
    blocks = getattr(decoder, "block", None)
    if blocks is None:
        return []
    mods = []
    for blk in blocks:
        layers = getattr(blk, "layer", None)
        attn = getattr(layers[1], "EncDecAttention", None) if layers is not None and len(layers) > 2 else None
        if attn is None:
            return []
        mods.append(attn)
    return mods


def _shared_cross_attention_supported(model: nn.Module) -> bool:
    """True for a transformers>=5 T5 decoder: cross-attention modules with the q/k/v/o layout and
    the ``(output, position_bias, weights)`` return convention that :class:`_SharedCrossAttention` mirrors."""
    if int(transformers.__version__.split(".")[0]) < 5:
        return False
    mods = _cross_attention_modules(model)
    return bool(mods) and all(
        all(hasattr(m, a) for a in ("q", "k", "v", "o", "n_heads", "key_value_proj_dim"))
        and not getattr(m, "has_relative_attention_bias", True)
        for m in mods
    )


class _SharedCrossAttention:
    """Context manager: the decoder's cross-attention attends to one key/value set per query.

    T5 cross-attention has no position bias and no scaling, so for a query ``b`` with ``k`` beam rows
    it is ``softmax(q Kᵀ + mask) V`` with the same ``K, V`` for every row: stack the rows' queries
    along the query-length axis and run one attention per query. Keys and values are projected
    once from the encoder output, so memory and traffic do not grow with the beam count.
    """

    def __init__(self, model: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self._mods = _cross_attention_modules(model)
        self._hidden = hidden
        self._mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, S], True = attend
        self._saved: list[tuple[nn.Module, object]] = []

    def __enter__(self) -> "_SharedCrossAttention":
        batch, src_len, _ = self._hidden.shape
        for mod in self._mods:
            heads, head_dim = mod.n_heads, mod.key_value_proj_dim
            keys = mod.k(self._hidden).view(batch, src_len, heads, head_dim).transpose(1, 2)
            values = mod.v(self._hidden).view(batch, src_len, heads, head_dim).transpose(1, 2)
            self._saved.append((mod, mod.__dict__.get("forward")))
            mod.forward = self._make_forward(mod, keys, values)
        return self

    def __exit__(self, *exc: object) -> None:
        for mod, previous in reversed(self._saved):
            if previous is None:
                del mod.forward
            else:
                mod.forward = previous
        self._saved.clear()

    def _make_forward(self, mod: nn.Module, keys: torch.Tensor, values: torch.Tensor):  # noqa: ANN202
        key_mask = self._mask
        batch = keys.shape[0]
        heads, head_dim = mod.n_heads, mod.key_value_proj_dim

        def forward(hidden_states: torch.Tensor, mask: object = None, key_value_states: object = None,
                    position_bias: object = None, past_key_values: object = None, **kwargs: object):  # noqa: ANN202
            rows, q_len, _ = hidden_states.shape
            per_query = rows // batch * q_len
            q = mod.q(hidden_states).view(batch, per_query, heads, head_dim).transpose(1, 2)
            attn = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=key_mask, scale=1.0)
            attn = attn.transpose(1, 2).reshape(rows, q_len, heads * head_dim)
            return mod.o(attn), position_bias, None

        return forward


def _expand(
    *,
    trie: SidTrie,
    depth: int,
    logits: torch.Tensor,
    scores: torch.Tensor,
    nodes: torch.Tensor,
    offset: int,
    size: int,
    num_beams: int,
    normalize: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One beam-search step: ``logits [B, K, V]`` of the K current beams → the best ``num_beams``.

    Returns ``(scores, nodes, origin, tokens)``, each ``[B, num_beams]``: accumulated scores sorted
    descending (``-inf`` = no sequence), trie node ids at ``depth + 1``, the beam each came from, and
    the token chosen.
    """
    batch, beams = nodes.shape
    child, code, valid = trie.children(depth, nodes)  # [B, K, W]
    width = child.shape[-1]
    tok = code + offset
    if normalize == "vocab":
        step = torch.log_softmax(logits.float(), dim=-1).gather(-1, tok)
    elif normalize == "position":
        own = logits[..., offset : offset + size].float()
        step = torch.log_softmax(own, dim=-1).gather(-1, code)
    else:
        step = torch.log_softmax(logits.gather(-1, tok).float().masked_fill(~valid, float("-inf")), dim=-1)
    cand = (scores.unsqueeze(-1) + step).masked_fill(~valid, float("-inf")).view(batch, beams * width)

    k = min(num_beams, beams * width)
    top_scores, top_idx = cand.topk(k, dim=1)
    new_nodes = child.view(batch, -1).gather(1, top_idx)
    new_tokens = tok.view(batch, -1).gather(1, top_idx)
    origin = torch.div(top_idx, width, rounding_mode="floor")
    if k < num_beams:
        # Fewer candidate slots than beams (a small first level): pad with empty beams so every later
        # step keeps the static [B, num_beams] shape.
        pad = num_beams - k
        top_scores = torch.cat([top_scores, top_scores.new_full((batch, pad), float("-inf"))], dim=1)
        new_nodes = torch.cat([new_nodes, new_nodes.new_zeros(batch, pad)], dim=1)
        new_tokens = torch.cat([new_tokens, new_tokens.new_full((batch, pad), offset)], dim=1)
        origin = torch.cat([origin, origin.new_zeros(batch, pad)], dim=1)
    return top_scores, new_nodes, origin, new_tokens


def constrained_beam_search_batched(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    trie: SidTrie,
    vocab: SidVocab,
    num_beams: int,
    top_k: int,
    batch_size: int = 256,
    normalize: Normalize = "position",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`constrained_beam_search` over a large query set in chunks of ``batch_size`` queries.

    Inputs may live on the CPU; each chunk is moved to the model's device. Results are on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    trie = trie.to(device)
    items, scores = [], []
    for lo in range(0, input_ids.shape[0], batch_size):
        ids = input_ids[lo : lo + batch_size].to(device)
        mask = None if attention_mask is None else attention_mask[lo : lo + batch_size].to(device)
        it, sc = constrained_beam_search(
            model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
            num_beams=num_beams, top_k=top_k, normalize=normalize,
        )
        items.append(it.cpu())
        scores.append(sc.cpu())
    if not items:
        return torch.empty(0, top_k, dtype=torch.long), torch.empty(0, top_k)
    return torch.cat(items), torch.cat(scores)


@torch.no_grad()
def rerank_with_item_head(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    items: torch.Tensor,
    scores: torch.Tensor,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-order each query's beam ``items``/``scores`` (``[B, K]``, -1 = empty slot, last) by
    ``score + weight * item-head logit`` (:func:`generative_rec.model.item_head_scores`).

    The search decides which items are candidates; the item head, trained beside the SID
    softmax (``RetrieverConfig.item_head``), only re-orders them, so the cost is one more
    encoder pass and one decoder step per query, whatever the catalogue size.
    """
    from generative_rec.model import item_head_scores, item_query

    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    query = item_query(model, input_ids=input_ids, attention_mask=attention_mask)
    head = item_head_scores(model, query=query, items=items, input_ids=input_ids,
                            attention_mask=attention_mask)
    combined = scores.float() + weight * head.float()
    combined = combined.masked_fill(items < 0, float("-inf"))
    # Stable: equal combined scores keep the beam's order.
    order = torch.sort(combined, dim=1, descending=True, stable=True).indices
    return items.gather(1, order), combined.gather(1, order)


@torch.no_grad()
def score_items(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    items: torch.Tensor,
    trie: SidTrie,
    vocab: SidVocab,
    normalize: Normalize,
) -> torch.Tensor:
    """``[B, M]`` sequence log-probabilities of given catalogue ``items`` (``[B, M]``, -1 =
    none scores -inf) under the scoring rule ``normalize``: the score the beam search gives an
    item it finds, computed by teacher forcing, so an item offered from outside the beam
    competes on the same scale. Cost ``B·M`` decoder passes of the SID length, not the
    catalogue; :func:`generative_rec.reference_decoding.exhaustive_scores` is the oracle."""
    t5 = model
    b, m = items.shape
    if m == 0:
        return torch.zeros(b, 0, device=items.device)
    trie = trie.to(input_ids.device)
    codes = trie.codes[items.clamp(min=0).reshape(-1)]  # [B·M, L]
    offsets = torch.tensor(vocab.offsets, device=codes.device)
    tokens = codes + offsets
    enc = t5.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    enc = enc.repeat_interleave(m, dim=0)
    mask = attention_mask.repeat_interleave(m, dim=0)
    start = torch.full_like(tokens[:, :1], vocab.pad_id)
    dec_in = torch.cat([start, tokens[:, :-1]], dim=1)
    dec = t5.decoder(inputs_embeds=decoder_embeds(t5, enc=enc, attention_mask=mask, ids=dec_in),
                     encoder_hidden_states=enc, encoder_attention_mask=mask,
                     use_cache=False).last_hidden_state
    logits = t5.lm_head(dec * (t5.model_dim ** -0.5) if t5.config.scale_decoder_outputs
                        else dec).float()  # [B·M, L, V]
    if normalize == "vocab":
        logp = logits.log_softmax(-1).gather(2, tokens[..., None])[..., 0]
    else:
        width = max(vocab.codebook_sizes) + 1
        siblings = trie.sibling_mask(codes, width) if normalize == "children" else None
        parts = []
        for d, (lo, size) in enumerate(zip(vocab.offsets, vocab.codebook_sizes)):
            step = logits[:, d, lo : lo + size]
            if siblings is not None:
                step = step.masked_fill(~siblings[:, d, :size], float("-inf"))
            parts.append(step.log_softmax(-1).gather(1, codes[:, d : d + 1])[:, 0])
        logp = torch.stack(parts, dim=1)
    scores = logp.sum(1).view(b, m)
    return scores.masked_fill(items < 0, float("-inf"))


@torch.no_grad()
def add_signal_candidates(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    items: torch.Tensor,
    scores: torch.Tensor,
    trie: SidTrie,
    vocab: SidVocab,
    normalize: Normalize,
    m: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append to each beam ``items``/``scores`` (``[B, K]``) the most recent item's ``m`` most
    frequent training successors and ``m`` nearest items by content that the beam lacks
    (``item_head.signals``: the items the signals score highest may lie outside the beam),
    each scored by :func:`score_items` as the search would have. ``[B, K + 2m]``, -1 / -inf
    for what is not offered."""
    from generative_rec.model import item_signals

    signals = item_signals(model)
    if signals is None or m <= 0:
        return items, scores
    recent = signals_recent(model, input_ids, attention_mask, signals.history)
    offered = signals.offers(recent[:, 0], m)  # [B, 2m]
    offered = offered.masked_fill((offered[:, :, None] == items[:, None, :]).any(-1), -1)
    # A successor that is also a neighbour is offered once.
    earlier = (offered[:, :, None] == offered[:, None, :]).tril(-1).any(-1)
    offered = offered.masked_fill(earlier | (offered >= trie.n_items), -1)
    extra = score_items(model=model, input_ids=input_ids, attention_mask=attention_mask,
                        items=offered, trie=trie, vocab=vocab, normalize=normalize)
    return torch.cat([items, offered], 1), torch.cat([scores.float(), extra], 1)


def signals_recent(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   n: int) -> torch.Tensor:
    from generative_rec.model import _item_embedding, unwrap
    from generative_rec.signals import recent_from_inputs

    return recent_from_inputs(input_ids, attention_mask,
                              item_offset=_item_embedding(unwrap(model)).vocab_size, n=n)
