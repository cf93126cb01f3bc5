"""The item head's item-to-item term (``RetrieverConfig.transition_embedding``): a learned "from"
vector of the most recent history item dotted with a learned "to" vector of the scored item."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from generative_rec.config import RetrieverConfig
from generative_rec.model import (
    PositionHeads,
    build_model,
    item_head_scores,
    item_query,
    load_model_state,
    model_state,
    set_item_tokens,
)
from recdata.errors import DataError
from tests.test_retriever import cyclic_problem, tiny_cfg

torch.set_num_threads(1)


def _model_and_batch(seed: int = 0):
    ex, vocab, collator, trie = cyclic_problem()
    torch.manual_seed(seed)
    model = build_model(cfg=tiny_cfg(item_id_embedding=True, item_query="last",
                                     recency_embedding=True, item_loss_weight=0.2,
                                     transition_embedding=True),
                        vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    emb = model.encoder.embed_tokens
    with torch.no_grad():  # every table non-zero, so the reference must read each one
        emb.item_id.weight.normal_(0, 0.5)
        emb.recency.weight.normal_(0, 0.5)
        emb.transition_to.weight.normal_(0, 0.5)
    model.eval()
    return model, vocab, collator, ex


def _slow_logits(model, vocab, batch, item_tokens) -> torch.Tensor:
    """By the definition, one row and one item at a time: the head without the term (query .
    history embedding of the item) plus from[most recent item] . to[item]."""
    emb = model.encoder.embed_tokens
    plain = item_query(model, input_ids=batch.input_ids,
                       attention_mask=batch.attention_mask)[:, : model.model_dim]
    rows = []
    for b, ids in enumerate(batch.input_ids.tolist()):
        last = [t - vocab.vocab_size for t in ids if t >= vocab.vocab_size][-1]
        row = []
        for i, toks in enumerate(item_tokens):
            key = model.shared.weight[torch.as_tensor(toks)].sum(0) / len(toks) ** 0.5
            key = key + emb.item_id.weight[i]
            row.append(plain[b] @ key + emb.transition_from.weight[last] @ emb.transition_to.weight[i])
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_training_logits_and_candidate_scores_add_the_transition_term():
    model, vocab, collator, ex = _model_and_batch()
    batch = collator(ex["valid"])
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    _, logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      decoder_input_ids=torch.zeros_like(batch.labels), with_items=True)
    slow = _slow_logits(model, vocab, batch, collator.item_tokens)
    torch.testing.assert_close(logits, slow, rtol=1e-5, atol=1e-5)
    query = item_query(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    cands = torch.tensor([[5, 1, -1]] * len(query))
    got = item_head_scores(model, query=query, items=cands)
    torch.testing.assert_close(got[:, :2], slow[:, [5, 1]], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[:, 2], torch.zeros(len(query)))
    # Decoding's weight on the term scales it alone.
    emb = model.encoder.embed_tokens
    emb.transition_score_weight = 0.25
    with torch.no_grad():
        term = emb.transition_query(batch.input_ids, batch.attention_mask) @ emb.transition_to.weight.T
    torch.testing.assert_close(item_head_scores(model, query=query, items=cands)[:, :2],
                               (slow - 0.75 * term)[:, [5, 1]], rtol=1e-5, atol=1e-5)
    emb.transition_score_weight = 1.0
    # The term is there: without the "to" vectors every score changes.
    with torch.no_grad():
        model.encoder.embed_tokens.transition_to.weight.zero_()
    assert not torch.allclose(item_head_scores(model, query=query, items=cands)[:, :2], got[:, :2])


def test_gradients_reach_the_tables_as_the_definition_says():
    model, vocab, collator, ex = _model_and_batch()
    model.train()
    batch = collator(ex["train"])
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    emb = model.encoder.embed_tokens
    params = [emb.transition_from.weight, emb.transition_to.weight, model.shared.weight]

    def grads(fast: bool) -> list[torch.Tensor]:
        model.zero_grad()
        if fast:
            _, logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              decoder_input_ids=torch.zeros_like(batch.labels), with_items=True)
        else:
            logits = _slow_logits(model, vocab, batch, collator.item_tokens)
        F.cross_entropy(logits, batch.targets).backward()
        return [p.grad.clone() for p in params]

    fast, slow = grads(True), grads(False)
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s, rtol=1e-4, atol=1e-6)
    # "From" rows move only for items that are some row's most recent history item.
    last = {int(r[-1]) for r in batch.hist_items.tolist() for r in [[i for i in r if i >= 0]]}
    moved = set(torch.nonzero(fast[0].abs().sum(1)).flatten().tolist())
    assert moved == last


def test_the_tables_alone_learn_item_to_item_successions():
    """Freeze everything else: the term must memorise "the next item follows the last" on its
    own (it could not if both tables started at zero)."""
    model, vocab, collator, ex = _model_and_batch()
    emb = model.encoder.embed_tokens
    with torch.no_grad():
        emb.transition_to.weight.zero_()
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    tables = [emb.transition_from.weight, emb.transition_to.weight]
    for p in tables:
        p.requires_grad_(True)
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    batch = collator(ex["train"])
    opt = torch.optim.Adam(tables, lr=0.05)
    start = torch.zeros_like(batch.labels)

    def accuracy() -> float:
        with torch.no_grad():
            _, logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              decoder_input_ids=start, with_items=True)
        return float((logits.argmax(1) == batch.targets).float().mean())

    before = accuracy()
    for _ in range(150):
        _, logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          decoder_input_ids=start, with_items=True)
        opt.zero_grad()
        F.cross_entropy(logits, batch.targets).backward()
        opt.step()
    assert before < 0.3 and accuracy() > 0.95


def test_new_items_have_no_transitions_and_weights_round_trip():
    model, vocab, collator, ex = _model_and_batch()
    cfg = tiny_cfg(item_id_embedding=True, item_query="last", recency_embedding=True,
                   item_loss_weight=0.2, transition_embedding=True)
    saved = model_state(model)
    assert {"encoder.embed_tokens.transition_from.weight",
            "encoder.embed_tokens.transition_to.weight"} <= set(saved)
    again = build_model(cfg=cfg, vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    load_model_state(again, saved)
    batch = collator(ex["valid"])
    cands = torch.arange(len(collator.item_tokens)).repeat(len(batch.targets), 1)
    with torch.no_grad():
        q = item_query(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        torch.testing.assert_close(item_head_scores(again.eval(), query=q, items=cands),
                                   item_head_scores(model, query=q, items=cands))
    n = len(collator.item_tokens)
    more = np.concatenate([collator.item_tokens, collator.item_tokens[:2]])
    set_item_tokens(model, more)
    emb = model.encoder.embed_tokens
    assert emb.transition_from.num_embeddings == emb.transition_to.num_embeddings == n + 2
    assert float(emb.transition_from.weight[n:].detach().abs().sum()) == 0
    assert float(emb.transition_to.weight[n:].detach().abs().sum()) == 0
    assert torch.equal(emb.transition_to.weight[:n], saved["encoder.embed_tokens.transition_to.weight"])


def test_transition_dropout_leaves_out_whole_terms_in_training_only():
    model, vocab, collator, ex = _model_and_batch()
    batch = collator(ex["train"])
    emb = model.encoder.embed_tokens
    full = emb.transition_query(batch.input_ids, batch.attention_mask)
    emb.transition_dropout = 0.5
    assert torch.equal(emb.transition_query(batch.input_ids, batch.attention_mask), full)  # eval
    emb.train()
    torch.manual_seed(3)
    got = emb.transition_query(batch.input_ids, batch.attention_mask)
    kept = got.abs().sum(1) > 0
    assert torch.equal(got[kept], full[kept])  # kept rows unscaled
    assert 0.25 < float(kept.float().mean()) < 0.75
    emb.transition_dropout = 1.0
    assert float(emb.transition_query(batch.input_ids, batch.attention_mask).detach().abs().sum()) == 0
    built = build_model(cfg=tiny_cfg(item_loss_weight=0.2, transition_embedding=True,
                                     transition_dropout=0.3),
                        vocab_size=16, item_tokens=np.array([[0, 1, 2], [3, 4, 5]]))
    assert built.encoder.embed_tokens.transition_dropout == 0.3


def test_config_needs_an_item_head_and_keeps_old_fingerprints():
    with pytest.raises(DataError, match="transition_embedding needs an item head"):
        RetrieverConfig(transition_embedding=True)
    with pytest.raises(DataError, match="transition_dropout must lie in"):
        RetrieverConfig(transition_dropout=1.5)
    with pytest.raises(DataError, match="transition_score_weight must be >= 0"):
        RetrieverConfig(transition_score_weight=-1.0)
    plain = RetrieverConfig(item_loss_weight=0.2)
    assert plain.fingerprint() == RetrieverConfig(item_loss_weight=0.2,
                                                  transition_embedding=False).fingerprint()
    with_term = RetrieverConfig(item_loss_weight=0.2, transition_embedding=True)
    assert plain.fingerprint() != with_term.fingerprint()
    # Decoding's weight is no training setting: a checkpoint resumes under another one.
    assert with_term.fingerprint() == RetrieverConfig(
        item_loss_weight=0.2, transition_embedding=True, transition_score_weight=0.5).fingerprint()
    vocab_tokens = np.array([[0, 1, 2], [3, 4, 5]])
    built = build_model(cfg=tiny_cfg(item_loss_weight=0.2, transition_embedding=True,
                                     transition_score_weight=0.5),
                        vocab_size=16, item_tokens=vocab_tokens)
    assert built.encoder.embed_tokens.transition_score_weight == 0.5
