"""``decoder_start: last``: the decoder's start input carries the encoder's output at the most
recent history item, and training, the item head, the beam search and the oracle read the same
start."""

from __future__ import annotations

import pytest
import torch

from generative_rec.config import RetrieverConfig
from generative_rec.decoding import constrained_beam_search
from generative_rec.model import PositionHeads, build_model, item_query, shift_right
from generative_rec.reference_decoding import exhaustive_top_k, hf_trie_beam_search
from recdata.errors import DataError
from tests.test_retriever import cyclic_problem, tiny_cfg

torch.set_num_threads(1)


def _setup(decoder_start: str = "last", seed: int = 0):
    ex, vocab, collator, trie = cyclic_problem()
    torch.manual_seed(seed)
    cfg = tiny_cfg(decoder_start=decoder_start, history=dict(item_id_embedding=True, recency_embedding=True))
    model = build_model(cfg=cfg, vocab_size=vocab.vocab_size, item_tokens=collator.item_tokens)
    with torch.no_grad():  # non-zero vectors, so the most recent item stands out
        model.encoder.embed_tokens.item_id.weight.normal_(0, 0.5)
        model.encoder.embed_tokens.recency.weight.normal_(0, 0.5)
    model.eval()
    return model, vocab, trie, collator(ex["valid"]), ex


def _slow_decoder_states(model, vocab, input_ids, attention_mask, labels) -> torch.Tensor:
    """Teacher-forced decoder outputs, one row at a time, the start input built by hand."""
    rows = []
    for b in range(len(input_ids)):
        ids, mask = input_ids[b : b + 1], attention_mask[b : b + 1]
        enc = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        last = max(j for j in range(ids.shape[1]) if ids[0, j] >= vocab.vocab_size)
        dec_ids = shift_right(labels[b : b + 1])
        embeds = model.shared(dec_ids).clone()
        embeds[0, 0] = embeds[0, 0] + enc[0, last]
        rows.append(model.decoder(inputs_embeds=embeds, encoder_hidden_states=enc,
                                  encoder_attention_mask=mask).last_hidden_state[0])
    return torch.stack(rows)


def test_training_logits_read_the_most_recent_item_at_the_start():
    model, vocab, trie, batch, _ = _setup()
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=tuple(vocab.codebook_sizes))
    with torch.no_grad():
        got = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    decoder_input_ids=shift_right(batch.labels))
        states = _slow_decoder_states(model, vocab, batch.input_ids, batch.attention_mask,
                                      batch.labels) * model.model_dim ** -0.5
    for p, (lo, hi) in enumerate(heads.ranges):
        torch.testing.assert_close(got[:, p, : hi - lo], states[:, p] @ model.shared.weight[lo:hi].T,
                                   rtol=1e-4, atol=1e-5)
    # The plain start gives other logits from the same weights: the option is not a no-op.
    model.config.decoder_start = "token"
    with torch.no_grad():
        plain = heads(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      decoder_input_ids=shift_right(batch.labels))
    assert float((plain[:, 0] - got[:, 0]).abs().max()) > 1e-3


def test_item_head_query_reads_the_same_start():
    model, vocab, trie, batch, _ = _setup()
    model.config.item_query = "decoder"
    with torch.no_grad():
        states = _slow_decoder_states(model, vocab, batch.input_ids, batch.attention_mask,
                                      batch.labels)
        query = item_query(model, input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    torch.testing.assert_close(query, states[:, 0] * model.model_dim ** -0.5,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("normalize", ["children", "position"])
def test_full_beam_equals_exhaustive_scoring(normalize, use_cache):
    model, vocab, trie, batch, _ = _setup()
    ids, mask = batch.input_ids[:4], batch.attention_mask[:4]
    n = trie.n_items
    items, scores = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask,
                                            trie=trie, vocab=vocab, num_beams=n, top_k=10,
                                            normalize=normalize, use_cache=use_cache)
    codes = trie.codes.numpy()
    want_items, want_scores = exhaustive_top_k(model=model, input_ids=ids, attention_mask=mask,
                                               codes=codes, vocab=vocab, top_k=10,
                                               normalize=normalize)
    torch.testing.assert_close(scores, want_scores, rtol=1e-4, atol=1e-4)
    assert torch.equal(items, want_items)


def test_generate_references_refuse_a_last_item_start():
    model, vocab, trie, batch, _ = _setup()
    codes = trie.codes.numpy()
    with pytest.raises(ValueError, match="decoder_start 'last'"):
        hf_trie_beam_search(model=model, input_ids=batch.input_ids[:2],
                            attention_mask=batch.attention_mask[:2], codes=codes, vocab=vocab,
                            num_beams=4, top_k=2)


def test_config_checks():
    assert RetrieverConfig().decoder_start == "token"
    with pytest.raises(DataError, match="decoder_start must be one of"):
        RetrieverConfig(decoder_start="first")
    with pytest.raises(DataError, match="decoder_start 'last' needs history.encoding 'item'"):
        RetrieverConfig(decoder_start="last", history=dict(encoding="token"))
    with pytest.raises(DataError, match="decoder_start 'last' needs"):
        RetrieverConfig(decoder_start="last", output_softmax="vocab")
