"""A trained retriever at inference time: load it from a run directory with its fitted priors,
and recommend for any histories. Serving (:mod:`mmqrec`), the evaluate stage and the benchmarks
read trained runs through this module, never through the training stage.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from generative_rec.config import RetrieverConfig
from generative_rec.content import ContentVectors
from generative_rec.data import Collator, histories_to_examples
from generative_rec.model import (
    build_model,
    item_token_offset,
    load_model_state,
    set_signal_tables,
)
from generative_rec.priors import CandidatePriors
from generative_rec.retriever_data import sid_fingerprint
from generative_rec.train import decode_examples
from generative_rec.transitions import TransitionCounts
from generative_rec.trie import SidTrie
from generative_rec.untrained import UntrainedItems
from generative_rec.vocab import SidVocab
from recdata.errors import DataError
from recdata.io import load_tensors, read_json, read_parquet
from recdata.layout import layout
from recdata.runtime import resolve_device

def retriever_config(run_dir: Path) -> RetrieverConfig:
    """The config a trained retriever was built with."""
    return trained_config(read_json(layout(run_dir).retriever_config), run_dir=run_dir)


def trained_config(meta: dict, *, run_dir: Path) -> RetrieverConfig:
    """The config of ``retriever/config.json``'s contents ``meta``. Raises DataError for a
    retriever whose item head learned its content signal among the nearest items only (saved
    before :data:`~generative_rec.config.RETRIEVER_FORMAT` 2, without
    ``item_head.dense_content``): this code would feed its gate cosines it never saw, so its
    lists would change silently."""
    head = meta["retriever"].get("item_head") or {}
    if (meta.get("version", 1) < 2 and head.get("signals")
            and not head.get("dense_content")):
        raise DataError("this run's retriever learned its content signal among the nearest items "
                        "only, which this version no longer has; re-run train-retriever",
                        path=layout(run_dir).retriever_config)
    return RetrieverConfig.from_dict(meta["retriever"])


def load_priors(run_dir: Path) -> CandidatePriors:
    """The priors a trained retriever re-orders its candidates by: the weights the stage fitted
    on validation users and the transition counts and content vectors they read (none for a
    run trained before the priors were fitted: its lists keep the model's order)."""
    path = layout(run_dir).retriever_priors
    if not path.exists():
        return CandidatePriors()
    weights = read_json(path).get("weights", {})
    transitions = (TransitionCounts.load(layout(run_dir).retriever_transitions)
                   if weights.get("transition_weight", 0) > 0 else None)
    wanted = any(weights.get(k, 0) > 0 for k in
                 ("content_weight", "untrained_candidates", "untrained_slots"))
    content = (ContentVectors.load(layout(run_dir).retriever_content)
               if wanted and layout(run_dir).retriever_content.exists() else None)
    priors = CandidatePriors.from_weights(weights, transitions=transitions, content=content)
    return with_catalogue(priors, trained=read_parquet(layout(run_dir).strata)
                          .sort("item_idx")["train_count"].to_numpy() > 0)


def with_catalogue(priors: CandidatePriors, *, trained: np.ndarray,
                   added: np.ndarray | None = None) -> CandidatePriors:
    """``priors`` over the catalogue of ``trained`` (``[N]`` bool, the items with training
    interactions) plus the items added after training, whose content vectors are ``added``
    (``[M, D]``, :func:`generative_rec.content.unit_vectors`): the content prior reads their
    content and the untrained items' channel offers them."""
    if priors.content is None:
        return priors
    base = priors.content.vectors[: len(trained)]
    content = ContentVectors(vectors=base, neighbours=priors.content.neighbours[: len(trained)])
    if added is not None and len(added) and added.shape[1] != base.shape[1]:
        # Serving goes on: only the priors lose sight of the added items.
        logging.getLogger(__name__).warning(
            "added items have %d-d content vectors, the run %d-d (other encoders?): the "
            "priors cannot compare them", added.shape[1], base.shape[1])
        added = None
    if added is not None and len(added):
        content = content.extended(added)
        trained = np.concatenate([trained, np.zeros(len(added), bool)])
    untrained = (UntrainedItems.build(content=content, trained=trained)
                 if priors.untrained_candidates > 0 or priors.untrained_slots > 0 else None)
    return replace(priors, content=content, untrained=untrained)


def load_retriever(run_dir: Path, device: str = "cpu") -> tuple[torch.nn.Module, SidVocab, SidTrie]:
    """The trained retriever (eval mode), its vocabulary and the trie of the run's current IDs.

    Raises DataError when ``tokenizer/semantic_ids.parquet`` no longer matches the IDs the
    retriever was trained on (re-run ``train-retriever`` after ``tokenize``).
    """
    from tokenizer.sid import SemanticIds

    run_dir = Path(run_dir)
    device = resolve_device(device)
    meta = read_json(layout(run_dir).retriever_config)
    cfg = trained_config(meta, run_dir=run_dir)
    vocab = SidVocab.from_dict(meta["vocab"])
    sids = SemanticIds.from_run_dir(run_dir)
    codes = np.asarray(sids.codes, dtype=np.int64)
    if sid_fingerprint(codes, list(sids.codebook_sizes)) != meta["sid_hash"]:
        raise DataError(
            "the semantic IDs changed since the retriever was trained; re-run train-retriever",
            path=layout(run_dir).semantic_ids,
        )
    model = build_model(cfg=cfg, vocab_size=vocab.vocab_size, item_tokens=vocab.encode_sids(codes))
    load_model_state(model, load_tensors(layout(run_dir).retriever_model))
    if cfg.item_head.signals:
        set_signal_tables(
            model, transitions=TransitionCounts.load(layout(run_dir).retriever_transitions),
            content=ContentVectors.load(layout(run_dir).retriever_content),
            popularity=read_parquet(layout(run_dir).strata).sort("item_idx")["train_count"].to_numpy())
    model.to(device).eval()
    return model, vocab, SidTrie.from_codes(codes, device=device)


def recommend_for_histories(
    *,
    model: torch.nn.Module,
    vocab: SidVocab,
    trie: SidTrie,
    histories: list[list[int]],
    user_ids: list[str],
    top_k: int = 10,
    num_beams: int | None = None,
    max_history: int = 20,
    normalize: str,
    item_score_weight: float = 0.0,
    priors: CandidatePriors | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top_k`` items (``[B, top_k]`` item_idx, -1 = none) and sequence log-probabilities for
    arbitrary chronological histories of item indices; ``user_ids`` pick the hashed user tokens
    (an unseen id simply hashes to some bucket). ``normalize`` is the trained model's scoring
    rule (``RetrieverConfig.normalize``), never guessed; ``item_score_weight`` its
    ``RetrieverConfig.rerank_weight``; ``priors`` (:func:`load_priors`) its transition and
    content priors."""
    if len(histories) != len(user_ids):
        raise DataError(f"{len(histories)} histories but {len(user_ids)} user ids")
    n_items = trie.n_items
    for row, hist in enumerate(histories):
        if any((i < 0 or i >= n_items) for i in hist):
            raise DataError(f"history {row} holds an item index outside 0..{n_items - 1}")
    device = str(next(model.parameters()).device)
    codes = trie.codes.cpu().numpy()
    collator = Collator(item_tokens=vocab.encode_sids(codes),
                        user_tokens=vocab.user_tokens(user_ids),
                        pad_id=vocab.pad_id, eos_id=vocab.eos_id,
                        item_offset=item_token_offset(model))
    examples = histories_to_examples(histories, max_history)
    beams = max(num_beams or 20, top_k)
    items, scores = decode_examples(
        model=model, examples=examples, collator=collator, trie=trie, vocab=vocab,
        num_beams=beams, top_k=top_k, batch_size=batch_size, device=device, normalize=normalize,
        item_score_weight=item_score_weight, priors=priors,
    )
    return items, scores
