"""The retriever's training data for one ID table, and one resumable training phase.

Shared by the retriever stage (:mod:`generative_rec.stage`) and behaviour-aware fine-tuning
(:mod:`generative_rec.stage2`), which rebuilds it for the re-assigned IDs; neither imports the
other's module for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generative_rec.config import RetrieverConfig
from generative_rec.data import Collator, Examples, build_examples
from generative_rec.ddp import DistContext
from generative_rec.train import TrainResult, train_retriever
from generative_rec.content import ContentVectors
from generative_rec.transitions import TransitionCounts
from generative_rec.trie import SidTrie
from generative_rec.vocab import SidVocab
from recdata.errors import DataError
from recdata.layout import layout
from recdata.split import SequentialSplit



def sid_fingerprint(codes: np.ndarray, sizes: list[int]) -> str:
    """Hash of an ID table (what the retriever's vocabulary and trie are built from)."""
    h = hashlib.sha256(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
    h.update(json.dumps([int(s) for s in sizes]).encode())
    return h.hexdigest()[:16]


@dataclass
class RetrieverData:
    """Everything training and decoding need for one ID table."""

    codes: np.ndarray  # [N, L] SID codes, row = item_idx
    sizes: list[int]
    vocab: SidVocab
    trie: SidTrie
    collator: Collator
    examples: dict[str, Examples]
    # What the priors read (``RetrieverConfig.priors``): the training sequences' transition
    # counts and the catalogue's content vectors.
    transitions: TransitionCounts | None = None
    content: ContentVectors | None = None

    @property
    def sid_hash(self) -> str:
        return sid_fingerprint(self.codes, self.sizes)


def make_retriever_data(
    *, split: SequentialSplit, codes: np.ndarray, sizes: list[int], cfg: RetrieverConfig,
    examples: dict[str, Examples] | None = None, content: ContentVectors | None = None,
) -> RetrieverData:
    """``content``: the run's content vectors (:meth:`ContentVectors.from_run_dir`) for the
    content prior and the item head's signals (None: the priors fit the transition prior
    alone)."""
    if codes.shape[0] != split.n_items:
        raise DataError(
            f"the semantic-ID table has {codes.shape[0]} items but data/ has {split.n_items}; "
            "re-run the tokenize stage"
        )
    vocab = SidVocab(codebook_sizes=sizes, n_user_buckets=cfg.n_user_buckets)
    trie = SidTrie.from_codes(codes)
    collator = Collator(
        item_tokens=vocab.encode_sids(np.asarray(codes, dtype=np.int64)),
        user_tokens=vocab.user_tokens(split.user_ids),
        pad_id=vocab.pad_id,
        eos_id=vocab.eos_id,
        item_offset=vocab.vocab_size if cfg.history.encoding == "item" else None,
    )
    if examples is None:
        examples = build_examples(
            train_sequences=split.train_sequences,
            valid_inputs=split.valid_inputs,
            valid_targets=split.valid_targets,
            test_inputs=split.test_inputs,
            test_targets=split.test_targets,
            max_history=cfg.history.max_length,
        )
    transitions = (TransitionCounts.from_sequences(split.train_sequences, n_items=split.n_items)
                   if cfg.priors.fit or cfg.item_head.signals else None)
    return RetrieverData(np.asarray(codes, np.int64), list(sizes), vocab, trie, collator, examples,
                         transitions, content)

def train_phase(
    *, model: torch.nn.Module, cfg: RetrieverConfig, data: RetrieverData, run_dir: Path,
    device: str, seed: int, ctx: DistContext, phase: str, log_before: list[dict] | None = None,
    **overrides: Any,
) -> TrainResult:
    """One resumable training phase with its checkpoint in ``retriever/checkpoint/<phase>``."""
    run = layout(run_dir)
    return train_retriever(
        model=model, cfg=cfg, train=data.examples["train"], valid=data.examples["valid"],
        collator=data.collator, trie=data.trie, vocab=data.vocab, device=device, seed=seed,
        ckpt_path=run.retriever_checkpoint(phase),
        log_path=run.retriever_dir / "train_log.jsonl",
        log_before=log_before, ctx=ctx, phase=phase, data_key=data.sid_hash, **overrides,
    )


def phase_summary(result: TrainResult) -> dict[str, Any]:
    return {"steps": result.steps, "best_step": result.best_step,
            "best_valid_ndcg@10": round(result.best_valid_ndcg10, 6),
            "stop_reason": result.stop_reason, "seconds": round(result.seconds, 1),
            "resumed_from": result.resumed_from}
