"""The retriever's item head: a catalogue softmax trained beside the SID softmax that re-orders
the beam's candidates (``RetrieverConfig.item_loss_weight`` / ``item_score_weight``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from generative_rec.config import RetrieverConfig
from generative_rec.decoding import constrained_beam_search, rerank_with_item_head
from generative_rec.model import PositionHeads, build_model, item_head_scores, item_query
from generative_rec.train import decode_examples, retrieval_metrics
from recdata.errors import DataError
from tests.test_retriever import _train, cyclic_problem, tiny_cfg

torch.set_num_threads(1)


def _model_and_batch(seed: int = 0, item_query: str = "decoder", recency: bool = False):
    ex, vocab, collator, trie = cyclic_problem()
    torch.manual_seed(seed)
    model = build_model(cfg=tiny_cfg(history=dict(item_id_embedding=True, recency_embedding=recency), item_head=dict(query=item_query)),
                        vocab_size=vocab.vocab_size,
                        item_tokens=collator.item_tokens)
    with torch.no_grad():  # non-zero per-item vectors, so the reference must add them
        model.encoder.embed_tokens.item_id.weight.normal_(0, 0.5)
        if recency:  # and non-zero recency vectors, which only history positions carry
            model.encoder.embed_tokens.recency.weight.normal_(0, 0.5)
    model.eval()
    return model, vocab, trie, collator(ex["valid"]), collator.item_tokens


def _slow_item_logits(model, query: torch.Tensor, item_tokens: np.ndarray) -> torch.Tensor:
    """Item head by the definition: query . (sum of the item's SID rows / sqrt(L) + its vector)."""
    table = model.shared.weight
    id_rows = model.encoder.embed_tokens.item_id.weight
    cols = []
    for i, toks in enumerate(item_tokens):
        vec = table[torch.as_tensor(toks)].sum(0) / len(toks) ** 0.5 + id_rows[i]
        cols.append(query @ vec)
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("query_kind,recency", [("decoder", False), ("last", False),
                                                ("last", True)])
def test_training_logits_and_decoding_scores_match_the_definition(query_kind, recency):
    model, vocab, trie, batch, item_tokens = _model_and_batch(item_query=query_kind,
                                                              recency=recency)
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    start = torch.zeros_like(batch.labels)
    _, logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      decoder_input_ids=start, with_items=True)
    query = item_query(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    slow = _slow_item_logits(model, query, item_tokens)
    torch.testing.assert_close(logits, slow, rtol=1e-5, atol=1e-5)
    # Decoding scores only the candidates; -1 slots score 0.
    # A candidate's score does not depend on its place in the list.
    cands = torch.tensor([[3, 0, -1]] * len(query))
    got = item_head_scores(model, query=query, items=cands)
    torch.testing.assert_close(got[:, :2], slow[:, [3, 0]], rtol=1e-5, atol=1e-5)
    assert torch.equal(got[:, 2], torch.zeros(len(query)))
    many = torch.arange(len(item_tokens)).repeat(len(query), 1)
    torch.testing.assert_close(item_head_scores(model, query=query, items=many), slow,
                               rtol=1e-5, atol=1e-5)


def test_last_item_query_adds_the_encoder_output_at_the_most_recent_item():
    model, vocab, trie, batch, item_tokens = _model_and_batch(item_query="last")
    ids, mask = batch.input_ids, batch.attention_mask
    enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    start = torch.zeros((len(ids), 1), dtype=torch.long)
    dec = model.decoder(input_ids=start, encoder_hidden_states=enc,
                        encoder_attention_mask=mask).last_hidden_state[:, 0]
    rows = []
    for b in range(len(ids)):
        last = max(j for j in range(ids.shape[1]) if ids[b, j] >= vocab.vocab_size)
        rows.append((dec[b] + enc[b, last]) * model.model_dim ** -0.5)
    torch.testing.assert_close(item_query(model, input_ids=ids, attention_mask=mask),
                               torch.stack(rows), rtol=1e-5, atol=1e-6)


def test_item_loss_gradients_match_the_slow_reference():
    model, vocab, trie, batch, item_tokens = _model_and_batch()
    model.train()
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    params = [model.shared.weight, model.encoder.embed_tokens.item_id.weight]

    def grads(fast: bool) -> list[torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)
        if fast:
            _, logits = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              decoder_input_ids=torch.zeros_like(batch.labels), with_items=True)
        else:
            query = item_query(model, input_ids=batch.input_ids,
                               attention_mask=batch.attention_mask)
            logits = _slow_item_logits(model, query, item_tokens)
        F.cross_entropy(logits, batch.targets).backward()
        return [p.grad.clone() for p in params]

    for fast, slow in zip(grads(True), grads(False)):
        assert float(fast.abs().sum()) > 0
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)


def test_rerank_orders_the_beam_by_the_combined_score():
    model, vocab, trie, batch, item_tokens = _model_and_batch()
    items, scores = constrained_beam_search(
        model=model, input_ids=batch.input_ids, attention_mask=batch.attention_mask, trie=trie,
        vocab=vocab, num_beams=20, top_k=20, normalize="children")
    items[0, -3:] = -1  # empty slots stay last
    scores[0, -3:] = float("-inf")
    weight = 0.7
    got_items, got_scores = rerank_with_item_head(
        model=model, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
        items=items, scores=scores, weight=weight)
    with torch.no_grad():
        query = item_query(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        slow = _slow_item_logits(model, query, item_tokens)
    for row in range(len(items)):
        real = [(float(s) + weight * float(slow[row, i]), int(i))
                for i, s in zip(items[row], scores[row]) if i >= 0]
        expected = [i for _, i in sorted(real, key=lambda t: -t[0])]
        assert got_items[row, : len(expected)].tolist() == expected
        assert (got_items[row, len(expected):] == -1).all()
        assert np.allclose(got_scores[row, : len(expected)].numpy(),
                           sorted((s for s, _ in real), reverse=True), atol=1e-5)
    assert sorted(got_items[1].tolist()) == sorted(items[1].tolist())  # a re-ordering only


def test_trained_item_head_learns_the_next_item_and_its_lists_stay_valid(tmp_path):
    cfg = tiny_cfg(d_model=48, d_ff=96, schedule=dict(lr=1e-2, max_steps=150, eval_every=150), history=dict(item_id_embedding=True), item_head=dict(loss_weight=0.5))
    assert cfg.rerank_weight == cfg.item_head.score_weight == 1.0
    model, result, (ex, vocab, collator, trie) = _train(tmp_path, cfg)
    batch = collator(ex["train"])
    with torch.no_grad():
        query = item_query(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        alone = (query @ model.encoder.embed_tokens.item_vectors().T).argmax(1)
    # The head alone predicts the cyclic successor (chance: 1 in 40).
    assert float((alone == batch.targets).float().mean()) > 0.7
    items, scores = decode_examples(model=model, examples=ex["valid"], collator=collator,
                                    trie=trie, vocab=vocab, num_beams=20, top_k=20,
                                    batch_size=64, device="cpu", normalize=cfg.normalize,
                                    item_score_weight=cfg.rerank_weight)
    metrics = retrieval_metrics(items, ex["valid"].targets, n_items=trie.n_items)
    assert metrics["overall"]["recall@10"] > 0.7
    assert metrics["overall"]["invalid@10"] == 0.0
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # lists are sorted by the combined score


def test_item_head_needs_an_item_level_encoder():
    assert RetrieverConfig(item_head=dict(score_weight=2.0)).rerank_weight == 0.0  # no head trained
    with pytest.raises(DataError, match="item_head.loss_weight needs history.encoding 'item'"):
        RetrieverConfig(item_head=dict(loss_weight=0.2), history=dict(encoding="token"))
    with pytest.raises(DataError, match="output_softmax"):
        RetrieverConfig(output_softmax="vocab", item_head=dict(loss_weight=0.2))
    with pytest.raises(DataError, match=">= 0"):
        RetrieverConfig(item_head=dict(loss_weight=-1.0))
