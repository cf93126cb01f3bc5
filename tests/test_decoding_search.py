"""Vectorised constrained beam search against the slow oracles in reference_decoding.

Random-weight tiny T5 models (d_model 32, 1+1 layers) over random small catalogues with uneven
branching: the fast search must return only real items, reproduce exhaustive scoring exactly when
the beam covers the catalogue, reproduce HF generate + Python trie at the same beam width, and give
the same result with and without its caches.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import T5Config, T5ForConditionalGeneration

from generative_rec.decoding import constrained_beam_search, constrained_beam_search_batched
from generative_rec.reference_decoding import exhaustive_scores, exhaustive_top_k, hf_trie_beam_search, unconstrained_beam_search
from generative_rec.trie import SidTrie
from generative_rec.vocab import SidVocab

SIZES = (5, 4, 3)  # grid of 60 possible SIDs
ATOL = 1e-4
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=None)
def tiny(sizes: tuple[int, ...] = SIZES, seed: int = 0) -> tuple[SidVocab, T5ForConditionalGeneration]:
    vocab = SidVocab(codebook_sizes=list(sizes), n_user_buckets=7)
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab.vocab_size, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=1,
        num_decoder_layers=1, dropout_rate=0.1, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    model = T5ForConditionalGeneration(cfg)
    # Sharpen the random output layer so scores are well separated (no near-ties between items).
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    return vocab, model.eval()


def queries(vocab: SidVocab, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """User token + SID tokens of random histories, right-padded (uneven lengths)."""
    g = np.random.default_rng(seed)
    width = 1 + 3 * vocab.sid_length
    ids = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for q in range(n):
        hist = g.integers(1, 4)
        codes = np.stack([g.integers(0, s, size=hist) for s in vocab.codebook_sizes], axis=1)
        row = np.concatenate([[vocab.user_token(f"u{seed}-{q}")], vocab.encode_sids(codes).reshape(-1)])
        ids[q, : len(row)] = row
        mask[q, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


@st.composite
def catalogues(draw: st.DrawFn, sizes: tuple[int, ...] = SIZES) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))
    n = draw(st.integers(1, len(grid)))
    rows = draw(st.permutations(range(len(grid))))[:n]
    return grid[list(rows)]


def assert_same_ranking(items_a, scores_a, items_b, scores_b, atol: float = ATOL) -> None:
    """Same scores; same items except where neighbouring scores tie within ``atol``."""
    sa, sb = scores_a.numpy(), scores_b.numpy()
    assert np.array_equal(np.isfinite(sa), np.isfinite(sb))
    fin = np.isfinite(sa)
    np.testing.assert_allclose(sa[fin], sb[fin], atol=atol)
    for row in range(sa.shape[0]):
        a = dict(zip(items_a[row].tolist(), sa[row].tolist()))
        b = dict(zip(items_b[row].tolist(), sb[row].tolist()))
        finite = sa[row][np.isfinite(sa[row])]
        cutoff = finite.min() if len(finite) else np.inf
        for item, score in a.items():
            if item < 0 or abs(score - cutoff) <= atol:
                continue  # the last slot may hold either of two tied items
            assert item in b and abs(b[item] - score) <= atol, (row, item, score, b)


def assert_valid(items: torch.Tensor, scores: torch.Tensor, n_items: int) -> None:
    assert items.dtype == torch.long and scores.dtype == torch.float32
    dead = items < 0
    assert bool((items[~dead] < n_items).all())
    assert bool(torch.isneginf(scores[dead]).all()) and bool(torch.isfinite(scores[~dead]).all())
    assert bool((items[dead] == -1).all())
    for row in items.tolist():
        real = [i for i in row if i >= 0]
        assert len(real) == len(set(real))
        assert row[: len(real)] == real  # padding only at the end
    assert bool((scores[:, 1:] <= scores[:, :-1]).all())


@SETTINGS
@given(codes=catalogues(), beams=st.integers(1, 12), data=st.data())
def test_only_real_items_with_their_true_scores(codes: np.ndarray, beams: int, data: st.DataObject):
    vocab, model = tiny()
    normalize = data.draw(st.sampled_from(["children", "vocab", "position"]))
    top_k = data.draw(st.integers(1, beams))
    ids, mask = queries(vocab, 3, seed=len(codes))
    trie = SidTrie.from_codes(codes)
    items, scores = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie,
                                            vocab=vocab, num_beams=beams, top_k=top_k, normalize=normalize)
    assert items.shape == scores.shape == (3, top_k)
    assert_valid(items, scores, len(codes))
    # Every slot is filled while the catalogue has enough items.
    assert bool((items >= 0).sum(dim=1).eq(min(top_k, len(codes))).all())
    # The score reported is the item's exact teacher-forced score.
    exact = exhaustive_scores(model=model, input_ids=ids, attention_mask=mask, codes=codes, vocab=vocab, normalize=normalize)
    alive = items >= 0
    np.testing.assert_allclose(scores[alive].numpy(), exact.gather(1, items.clamp(min=0))[alive].numpy(), atol=ATOL)


@SETTINGS
@given(codes=catalogues(), data=st.data())
def test_full_beam_equals_exhaustive_scoring(codes: np.ndarray, data: st.DataObject):
    vocab, model = tiny()
    normalize = data.draw(st.sampled_from(["children", "vocab", "position"]))
    top_k = data.draw(st.integers(1, 10))
    beams = max(len(codes), top_k)  # a beam that can hold every prefix at every depth is exact
    ids, mask = queries(vocab, 3, seed=7)
    trie = SidTrie.from_codes(codes)
    got = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
                                  num_beams=beams, top_k=top_k, normalize=normalize)
    want = exhaustive_top_k(model=model, input_ids=ids, attention_mask=mask, codes=codes, vocab=vocab,
                            top_k=top_k, normalize=normalize)
    assert_same_ranking(*got, *want)


@SETTINGS
@given(codes=catalogues(), beams=st.integers(1, 8), data=st.data())
def test_matches_hf_generate_with_python_trie(codes: np.ndarray, beams: int, data: st.DataObject):
    vocab, model = tiny()
    normalize = data.draw(st.sampled_from(["children", "vocab"]))
    ids, mask = queries(vocab, 2, seed=3)
    trie = SidTrie.from_codes(codes)
    got = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
                                  num_beams=beams, top_k=beams, normalize=normalize)
    want = hf_trie_beam_search(model=model, input_ids=ids, attention_mask=mask, codes=codes, vocab=vocab,
                               num_beams=beams, top_k=beams, normalize=normalize)
    assert_same_ranking(*got, *want)


@pytest.mark.parametrize("sizes", [(7,), (3, 2, 2, 2, 2), SIZES])
def test_cache_and_cross_attention_variants_agree(sizes: tuple[int, ...]):
    vocab, model = tiny(sizes)
    g = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))
    codes = grid[g.permutation(len(grid))[: max(1, len(grid) * 2 // 3)]]
    ids, mask = queries(vocab, 4, seed=5)
    trie = SidTrie.from_codes(codes)
    results = {
        (cache, cross): constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
                                                num_beams=6, top_k=6, use_cache=cache, cross_attention=cross)
        for cache in (True, False) for cross in ("shared", "expand")
    }
    base_items, base_scores = results[(True, "shared")]
    assert_valid(base_items, base_scores, len(codes))
    for items, scores in results.values():
        assert torch.equal(items, base_items)
        torch.testing.assert_close(scores, base_scores, atol=1e-5, rtol=0)


def test_tiny_catalogue_pads_with_invalid_marker():
    vocab, model = tiny()
    codes = np.array([[0, 0, 0], [4, 3, 2]])
    ids, mask = queries(vocab, 2, seed=0)
    items, scores = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask,
                                            trie=SidTrie.from_codes(codes), vocab=vocab, num_beams=10, top_k=5)
    assert sorted(items[:, :2].flatten().tolist()) == [0, 0, 1, 1]
    assert (items[:, 2:] == -1).all() and torch.isneginf(scores[:, 2:]).all()


def test_argument_errors():
    vocab, model = tiny()
    ids, mask = queries(vocab, 1, seed=0)
    trie = SidTrie.from_codes(np.array([[0, 0, 0], [1, 2, 0]]))
    with pytest.raises(ValueError, match="num_beams"):
        constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab, num_beams=4, top_k=5)
    with pytest.raises(ValueError, match="normalize"):
        constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab, num_beams=5, top_k=5, normalize="x")
    with pytest.raises(ValueError, match="codebook"):
        constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=SidTrie.from_codes(np.array([[5, 0, 0]])),
                                vocab=vocab, num_beams=5, top_k=5)
    with pytest.raises(ValueError, match="length"):
        constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=SidTrie.from_codes(np.array([[0, 0]])),
                                vocab=vocab, num_beams=5, top_k=5)


def test_restores_training_mode_and_is_deterministic():
    vocab, model = tiny()
    ids, mask = queries(vocab, 3, seed=2)
    trie = SidTrie.from_codes(np.array([[a, b, c] for a in range(5) for b in range(2) for c in range(3)]))
    model.train()
    try:
        first = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab, num_beams=8, top_k=8)
        assert model.training  # dropout was off during the search, and the mode is back
        second = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab, num_beams=8, top_k=8)
    finally:
        model.eval()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    # Chunked driver gives the per-batch results.
    chunked = constrained_beam_search_batched(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
                                              num_beams=8, top_k=8, batch_size=2)
    assert torch.equal(chunked[0], first[0])
    torch.testing.assert_close(chunked[1], first[1], atol=1e-5, rtol=0)


def test_bf16_autocast_returns_valid_items():
    vocab, model = tiny()
    codes = np.array([[a, b, c] for a in range(5) for b in range(4) for c in range(3) if (a + b + c) % 2 == 0])
    ids, mask = queries(vocab, 3, seed=4)
    trie = SidTrie.from_codes(codes)
    ref_items, ref_scores = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
                                                    num_beams=8, top_k=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        items, scores = constrained_beam_search(model=model, input_ids=ids, attention_mask=mask, trie=trie, vocab=vocab,
                                                num_beams=8, top_k=5)
    assert_valid(items, scores, len(codes))
    assert scores.dtype == torch.float32
    # Low precision may swap near-ties but the best item's score stays close.
    np.testing.assert_allclose(scores[:, 0].numpy(), ref_scores[:, 0].numpy(), atol=0.1)


def test_unconstrained_reference_reports_invalid_sequences():
    vocab, model = tiny()
    codes = np.array([[0, 0, 0], [1, 1, 1]])  # 2 of 60 possible SIDs: most free sequences are invalid
    ids, mask = queries(vocab, 2, seed=1)
    items, scores, n_invalid = unconstrained_beam_search(model=model, input_ids=ids, attention_mask=mask, codes=codes,
                                                         vocab=vocab, num_beams=6, top_k=6)
    assert items.shape == (2, 6) and n_invalid.tolist() == (items < 0).sum(dim=1).tolist()
    assert int(n_invalid.sum()) >= 8
    valid = items >= 0
    assert bool((items[valid] < 2).all())


@SETTINGS
@given(codes=catalogues(), data=st.data())
def test_children_training_loss_is_the_children_score(codes: np.ndarray, data: st.DataObject):
    """``output_softmax: children`` trains exactly what ``normalize="children"`` ranks by: the
    masked per-position loss of a target equals minus its reference score / L, and the trie's
    sibling mask equals the reference's set of valid continuations."""
    from generative_rec.model import PositionHeads, position_loss, shift_right, sid_logits

    vocab, model = tiny()
    trie = SidTrie.from_codes(codes)
    input_ids, mask = queries(vocab, 4, seed=data.draw(st.integers(0, 50)))
    targets = torch.as_tensor(data.draw(st.lists(st.integers(0, len(codes) - 1), min_size=4,
                                                 max_size=4)))
    sids = torch.as_tensor(codes)[targets]
    sibling = trie.sibling_mask(sids, max(SIZES))
    for b, sid in enumerate(sids.tolist()):
        for d in range(len(SIZES)):
            expect = {int(r[d]) for r in codes if list(r[:d]) == sid[:d]}
            assert set(torch.nonzero(sibling[b, d]).flatten().tolist()) == expect
    heads = PositionHeads(model, offsets=vocab.offsets, sizes=SIZES)
    labels = torch.as_tensor(vocab.encode_sids(sids.numpy()))
    logits = sid_logits(heads, input_ids=input_ids, attention_mask=mask,
                        decoder_input_ids=shift_right(labels))
    loss = position_loss(logits, sids, mask=sibling)
    ref = exhaustive_scores(model=model, input_ids=input_ids, attention_mask=mask, codes=codes,
                            vocab=vocab, normalize="children", items=targets[:, None])
    torch.testing.assert_close(loss, -ref.mean() / len(SIZES), atol=ATOL, rtol=1e-4)
    # Without the mask every position's whole codebook competes: a larger loss unless all
    # codes are valid everywhere.
    full = position_loss(logits, sids)
    assert float(full.detach()) >= float(loss.detach()) - 1e-6
