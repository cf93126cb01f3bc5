"""Slow, obviously correct decoders used as oracles for :mod:`generative_rec.decoding`.

* :func:`hf_trie_beam_search` — Hugging Face ``generate`` beam search constrained by a nested Python
  dict trie through ``prefix_allowed_tokens_fn`` (the approach most public reproductions use);
* :func:`exhaustive_scores` / :func:`exhaustive_top_k` — teacher-forced log-likelihood of every
  catalogue item, i.e. the exact ranking beam search approximates;
* :func:`unconstrained_beam_search` — plain ``generate`` beam search, items recovered afterwards
  (invalid SIDs become ``-1``), to measure how many beams an unconstrained decoder wastes.

All return ``(items [B, top_k], scores [B, top_k])`` like the fast search, padded with ``-1`` /
``-inf``. They accept the same ``normalize`` choices (see :mod:`generative_rec.decoding`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import LogitsProcessor, LogitsProcessorList

from generative_rec.decoding import check_decoding_args
from generative_rec.model import decoder_embeds, start_reads_last
from generative_rec.trie import SidTrie
from generative_rec.vocab import SidVocab

# HF starts beams 1..K-1 at -1e9 so that step 0 expands beam 0 only; sequences still carrying
# that offset at the end are duplicates that filled otherwise empty beams.
_HF_EMPTY_BEAM = -1e8


def build_dict_trie(*, codes: np.ndarray, vocab: SidVocab) -> dict[int, Any]:
    """Nested dict trie over token ids: ``{token: {token: ... {token: item_idx}}}``."""
    tokens = vocab.encode_sids(np.asarray(codes, dtype=np.int64))
    root: dict[int, Any] = {}
    for item, row in enumerate(tokens.tolist()):
        node = root
        for t in row[:-1]:
            node = node.setdefault(t, {})
        node[row[-1]] = item
    return root


def _walk(root: dict[int, Any], tokens: list[int]) -> Any:
    node: Any = root
    for t in tokens:
        if not isinstance(node, dict) or t not in node:
            return None
        node = node[t]
    return node


class _RenormalizeLogitsProcessor(LogitsProcessor):
    """Re-normalise the (already masked) log-probabilities over the allowed tokens only."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return torch.log_softmax(scores, dim=-1)


def _generate_kwargs(vocab: SidVocab, num_beams: int) -> dict[str, Any]:
    return dict(
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=vocab.sid_length,
        min_new_tokens=vocab.sid_length,
        do_sample=False,
        length_penalty=0.0,  # sum of log-probabilities, no length normalisation
        early_stopping=False,
        decoder_start_token_id=vocab.pad_id,
        pad_token_id=vocab.pad_id,
        eos_token_id=None,  # fixed-length SIDs: every sequence runs for exactly L tokens
        output_scores=True,
        return_dict_in_generate=True,
    )


def _collect(items: np.ndarray, scores: np.ndarray, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query: drop invalid/empty entries, sort by score, pad to top_k with -1 / -inf."""
    out_items = np.full((items.shape[0], top_k), -1, dtype=np.int64)
    out_scores = np.full((items.shape[0], top_k), -np.inf, dtype=np.float32)
    for b in range(items.shape[0]):
        keep = [(float(s), int(i)) for i, s in zip(items[b], scores[b]) if i >= 0 and s > _HF_EMPTY_BEAM]
        keep.sort(key=lambda x: -x[0])
        for j, (s, i) in enumerate(keep[:top_k]):
            out_items[b, j], out_scores[b, j] = i, s
    return torch.from_numpy(out_items), torch.from_numpy(out_scores)


@torch.no_grad()
def hf_trie_beam_search(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    codes: np.ndarray,
    vocab: SidVocab,
    num_beams: int,
    top_k: int,
    normalize: str = "children",
    dict_trie: dict[int, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF ``generate`` beam search constrained by a Python dict trie. Results on the CPU."""
    _check_generate(model)
    if normalize == "position":
        # generate() hands logits processors scores already masked to the allowed children, so
        # a per-position normaliser cannot be rebuilt there; exhaustive_scores covers it.
        raise ValueError("hf_trie_beam_search supports normalize 'children' and 'vocab'; "
                         "use exhaustive_top_k for 'position'")
    trie_shape = SidTrie.from_codes(codes) if dict_trie is None else None
    if trie_shape is not None:
        check_decoding_args(trie=trie_shape, vocab=vocab, num_beams=num_beams, top_k=top_k, normalize=normalize, model=model)
    root = build_dict_trie(codes=codes, vocab=vocab) if dict_trie is None else dict_trie

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        node = _walk(root, sent.tolist()[1:])  # sent[0] is the decoder start token
        if not isinstance(node, dict):
            return [vocab.pad_id]  # an empty beam (HF filled it from a -1e9 start); it stays hopeless
        return list(node.keys())

    processors = LogitsProcessorList([_RenormalizeLogitsProcessor()] if normalize == "children" else [])
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            prefix_allowed_tokens_fn=allowed,
            logits_processor=processors,
            **_generate_kwargs(vocab, num_beams),
        )
    finally:
        model.train(was_training)
    seqs = out.sequences[:, 1:].cpu().numpy()
    batch = input_ids.shape[0]
    items = np.array([_leaf_item(root, row) for row in seqs.tolist()], dtype=np.int64).reshape(batch, num_beams)
    if num_beams == 1:
        # generate() runs greedy search for one beam and reports no sequence scores: score the
        # chosen items by teacher forcing instead.
        scores = exhaustive_scores(model=model, input_ids=input_ids, attention_mask=attention_mask, codes=codes,
                                   vocab=vocab, normalize=normalize, items=torch.from_numpy(items)).numpy()
    else:
        scores = out.sequences_scores.float().cpu().numpy().reshape(batch, num_beams)
    return _collect(items, scores, top_k)


def _check_generate(model: nn.Module) -> None:
    if start_reads_last(model):
        raise ValueError("generate() starts the decoder from the plain start token; a model with "
                         "decoder_start 'last' is checked with exhaustive_top_k instead")


def _leaf_item(root: dict[int, Any], tokens: list[int]) -> int:
    node = _walk(root, tokens)
    return node if isinstance(node, int) else -1


@torch.no_grad()
def unconstrained_beam_search(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    codes: np.ndarray,
    vocab: SidVocab,
    num_beams: int,
    top_k: int,
    dict_trie: dict[int, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain HF beam search over the whole vocabulary (TIGER's decoder).

    Returns ``(items, scores, n_invalid)``: the top_k generated sequences mapped to item_idx (``-1``
    where the sequence is no catalogue SID; these are *kept* in place so the caller can measure the
    invalid rate), their scores, and the number of invalid sequences per query among the top_k.
    """
    _check_generate(model)
    if num_beams < top_k:
        raise ValueError(f"num_beams ({num_beams}) must be >= top_k ({top_k})")
    root = build_dict_trie(codes=codes, vocab=vocab) if dict_trie is None else dict_trie
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **_generate_kwargs(vocab, num_beams))
    finally:
        model.train(was_training)
    batch = input_ids.shape[0]
    seqs = out.sequences[:, 1:].cpu().numpy()
    items = np.array([_leaf_item(root, row) for row in seqs.tolist()], dtype=np.int64).reshape(batch, num_beams)
    if num_beams == 1:
        # Greedy search reports per-step logits only: sum the chosen tokens' log-probabilities.
        steps = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1).cpu()  # [B, L, V]
        chosen = out.sequences[:, 1:].cpu().unsqueeze(-1)
        scores = steps.gather(-1, chosen).squeeze(-1).sum(dim=1).numpy().reshape(batch, 1)
    else:
        scores = out.sequences_scores.float().cpu().numpy().reshape(batch, num_beams)
    items_t = torch.from_numpy(items[:, :top_k].copy())
    return items_t, torch.from_numpy(scores[:, :top_k].copy()), (items_t < 0).sum(dim=1)


def _allowed_children(tokens: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    """Plain dict: token prefix -> sorted tokens that extend it towards some catalogue SID."""
    allowed: dict[tuple[int, ...], set[int]] = {}
    for row in tokens:
        for d in range(len(row)):
            allowed.setdefault(tuple(row[:d]), set()).add(row[d])
    return {k: sorted(v) for k, v in allowed.items()}


def _teacher_forced(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    allowed: dict[tuple[int, ...], list[int]],
    vocab: SidVocab,
    normalize: str,
) -> list[float]:
    """Scores of target token sequences ``[n, L]`` for one query ``[1, S]``, one item at a time."""
    n = targets.shape[0]
    device = input_ids.device
    targets = targets.to(device)
    dec_in = torch.cat([torch.full((n, 1), vocab.pad_id, device=device, dtype=torch.long), targets[:, :-1]], dim=1)
    mask = attention_mask.expand(n, -1)
    enc = model.get_encoder()(input_ids=input_ids.expand(n, -1), attention_mask=mask).last_hidden_state
    logits = model(
        encoder_outputs=(enc,),
        attention_mask=mask,
        decoder_inputs_embeds=decoder_embeds(model, enc=enc, attention_mask=mask, ids=dec_in),
        use_cache=False,
    ).logits.float().cpu()  # [n, L, V]
    out = []
    for i, row in enumerate(targets.tolist()):
        total = 0.0
        for d, tok in enumerate(row):
            if normalize == "vocab":
                total += float(torch.log_softmax(logits[i, d], dim=-1)[tok])
            elif normalize == "position":
                lo, hi = vocab.position_range(d)
                total += float(torch.log_softmax(logits[i, d, lo:hi], dim=-1)[tok - lo])
            else:
                cand = allowed[tuple(row[:d])]
                total += float(torch.log_softmax(logits[i, d, cand], dim=-1)[cand.index(tok)])
        out.append(total)
    return out


@torch.no_grad()
def exhaustive_scores(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    codes: np.ndarray,
    vocab: SidVocab,
    normalize: str = "children",
    items: torch.Tensor | None = None,
    item_chunk: int = 512,
) -> torch.Tensor:
    """Teacher-forced score of every catalogue item for every query: ``[B, N]`` on the CPU.

    ``"vocab"``: sum over positions of log-softmax over the whole vocabulary; ``"position"``: over
    the position's own token range. ``"children"``: at each
    position the log-softmax is taken over the tokens that extend the item's prefix to some catalogue
    SID (a plain Python dict of prefixes). With ``items [B, k]`` only those items are scored
    (``[B, k]``; ``-1`` entries get ``-inf``).
    """
    tokens = torch.from_numpy(vocab.encode_sids(np.asarray(codes, dtype=np.int64)))  # [N, L]
    allowed = _allowed_children(tokens.tolist())
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    was_training = model.training
    model.eval()
    try:
        rows = []
        for b in range(input_ids.shape[0]):
            wanted = torch.arange(tokens.shape[0]) if items is None else items[b].cpu()
            scores = torch.full((len(wanted),), float("-inf"))
            idx = torch.nonzero(wanted >= 0).flatten()
            for lo in range(0, len(idx), item_chunk):
                part = idx[lo : lo + item_chunk]
                scores[part] = torch.tensor(_teacher_forced(
                    model=model, input_ids=input_ids[b : b + 1], attention_mask=attention_mask[b : b + 1],
                    targets=tokens[wanted[part]], allowed=allowed, vocab=vocab, normalize=normalize,
                ))
            rows.append(scores)
    finally:
        model.train(was_training)
    return torch.stack(rows)


def exhaustive_top_k(
    *,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    codes: np.ndarray,
    vocab: SidVocab,
    top_k: int,
    normalize: str = "children",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k items by :func:`exhaustive_scores` (padded with -1 / -inf past the catalogue size)."""
    scores = exhaustive_scores(
        model=model, input_ids=input_ids, attention_mask=attention_mask, codes=codes, vocab=vocab, normalize=normalize
    )
    k = min(top_k, scores.shape[1])
    top_scores, top_items = scores.topk(k, dim=1)
    if k < top_k:
        pad = top_k - k
        top_items = torch.cat([top_items, torch.full((scores.shape[0], pad), -1, dtype=torch.long)], dim=1)
        top_scores = torch.cat([top_scores, torch.full((scores.shape[0], pad), float("-inf"))], dim=1)
    return top_items, top_scores
