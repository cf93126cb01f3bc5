"""``head_distill_weight``: the first codes' SID softmax learns the item head's distribution
summed over the items under each code, so the beam keeps the prefixes the head ranks high."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from generative_rec.config import RetrieverConfig
from generative_rec.model import PositionHeads, build_model, head_distill_loss, shift_right
from generative_rec.train import step_loss
from recdata.errors import DataError
from recdata.overrides import deep_merge
from tests.test_retriever import _train, cyclic_problem, tiny_cfg

torch.set_num_threads(1)


def _slow_distill(logits, item_logits, codes, item_codes, levels, mask):
    """The definition, one example and one position at a time, in float64."""
    total = 0.0
    for b in range(len(codes)):
        p = torch.softmax(item_logits[b].double(), dim=0)
        for d in range(levels):
            under = [i for i in range(len(item_codes))
                     if item_codes[i, :d].tolist() == codes[b, :d].tolist()]
            mass = sum(float(p[i]) for i in under)
            step = logits[b, d].double().masked_fill(~mask[b, d], float("-inf"))
            logp = torch.log_softmax(step, dim=0)
            for code in sorted({int(item_codes[i, d]) for i in under}):
                q = sum(float(p[i]) for i in under if int(item_codes[i, d]) == code) / mass
                total -= q * float(logp[code])
    return total / (len(codes) * levels)


def _batch_and_heads(seed: int = 0):
    ex, vocab, collator, trie = cyclic_problem()
    torch.manual_seed(seed)
    cfg = tiny_cfg(history=dict(item_id_embedding=True), item_head=dict(loss_weight=0.2, distill_weight=1.0))
    model = build_model(cfg=cfg, vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    return cfg, heads, vocab, trie, collator(ex["train"])


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_loss_matches_the_definition(levels):
    _, heads, vocab, trie, batch = _batch_and_heads()
    offsets = torch.tensor(vocab.offsets)
    with torch.no_grad():
        logits, item_logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    decoder_input_ids=shift_right(batch.labels), with_items=True)
    # A sharper teacher than an untrained head's near-uniform one, so sums by code matter.
    item_logits = item_logits * 40
    codes = batch.labels - offsets
    mask = trie.sibling_mask(codes, logits.size(-1))
    got = head_distill_loss(logits, item_logits, codes, trie, levels=levels, mask=mask)
    want = _slow_distill(logits, item_logits, codes, trie.codes, levels, mask)
    assert math.isfinite(float(got))
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_gradient_reaches_the_sid_softmax_only():
    _, heads, vocab, trie, batch = _batch_and_heads()
    offsets = torch.tensor(vocab.offsets)
    logits, item_logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                decoder_input_ids=shift_right(batch.labels), with_items=True)
    logits.retain_grad()
    item_logits.retain_grad()
    codes = batch.labels - offsets
    loss = head_distill_loss(logits, item_logits, codes, trie, levels=2,
                             mask=trie.sibling_mask(codes, logits.size(-1)))
    loss.backward()
    assert item_logits.grad is None or float(item_logits.grad.abs().max()) == 0.0  # the teacher
    grad = logits.grad
    assert torch.isfinite(grad).all()
    assert float(grad[:, :2].abs().max()) > 0 and float(grad[:, 2:].abs().max()) == 0.0


def test_step_loss_adds_the_weighted_term():
    cfg, heads, vocab, trie, batch = _batch_and_heads()
    offsets = torch.tensor(vocab.offsets)
    kwargs = dict(batch=batch, plain=False, offsets=offsets, trie=trie, device="cpu", amp=None)
    with torch.no_grad():
        with_term = step_loss(heads, cfg=cfg, **kwargs)
        without = step_loss(heads, cfg=tiny_cfg(history=dict(item_id_embedding=True), item_head=dict(loss_weight=0.2)),
                            **kwargs)
        logits, item_logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    decoder_input_ids=shift_right(batch.labels), with_items=True)
        codes = batch.labels - offsets
        term = head_distill_loss(logits, item_logits, codes, trie, levels=cfg.item_head.distill_levels,
                                 mask=trie.sibling_mask(codes, logits.size(-1)))
    assert float(with_term - without) == pytest.approx(float(term), rel=1e-4)
    assert float(term) > 0


def test_training_with_the_term_learns_and_its_checkpoints_are_distinct(tmp_path):
    cfg = tiny_cfg(d_model=48, d_ff=96, schedule=dict(lr=1e-2, max_steps=150, eval_every=150),
                   history=dict(item_id_embedding=True),
                   item_head=dict(loss_weight=0.5, distill_weight=0.5))
    model, result, (ex, vocab, collator, trie) = _train(tmp_path, cfg)
    assert result.best_valid_ndcg10 > 0.3  # NDCG@10 on the cyclic successor task (chance ~ .03)
    base = tiny_cfg(d_model=48, d_ff=96, schedule=dict(lr=1e-2, max_steps=150, eval_every=150),
                    history=dict(item_id_embedding=True), item_head=dict(loss_weight=0.5))
    assert cfg.fingerprint() != base.fingerprint()
    # Without the term, the levels setting does not enter the fingerprint: runs trained before
    # the option existed keep their fingerprint (and resume).
    other_levels = RetrieverConfig.from_dict(
        deep_merge(base.to_dict(), {"item_head": {"distill_levels": 3}}))
    assert base.fingerprint() == other_levels.fingerprint()


def test_config_checks():
    with pytest.raises(DataError, match="needs an item head"):
        RetrieverConfig(item_head=dict(distill_weight=0.5))
    with pytest.raises(DataError, match="distill_levels"):
        RetrieverConfig(item_head=dict(loss_weight=0.2, distill_weight=0.5, distill_levels=0))
    assert np.isclose(RetrieverConfig().item_head.distill_weight, 0.0)
