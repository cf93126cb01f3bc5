"""The transition prior (``RetrieverConfig.priors``): candidates re-ordered by
how often they directly followed the user's most recent item in the training sequences."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest
import torch

from generative_rec.config import RetrieverConfig
from generative_rec.model import build_model
from generative_rec.priors import CandidatePriors
from generative_rec.train import decode_examples
from generative_rec.transitions import (
    TransitionCounts,
    add_successors,
    last_items,
    rerank_with_transitions,
)
from recdata.errors import DataError
from tests.test_retriever import cyclic_problem, tiny_cfg, write_run

torch.set_num_threads(1)


def _random_sequences(seed: int = 0, n_items: int = 15):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, size=rng.integers(0, 12)) for _ in range(30)]


def test_counts_match_a_brute_force_count():
    seqs = _random_sequences()
    counts = TransitionCounts.from_sequences(seqs, n_items=15)
    truth = Counter((int(a), int(b)) for s in seqs for a, b in zip(s[:-1], s[1:]))
    rng = np.random.default_rng(1)
    last = rng.integers(-1, 17, size=40)  # -1 and items the counts do not know included
    items = rng.integers(-1, 17, size=(40, 9))
    got = counts.lookup(last=last, items=items)
    want = [[truth.get((int(a), int(b)), 0) if a >= 0 and b >= 0 else 0 for b in row]
            for a, row in zip(last, items)]
    assert got.tolist() == want
    assert got.sum() > 0
    empty = TransitionCounts.from_sequences([np.array([3])], n_items=15)
    assert empty.lookup(last=last, items=items).sum() == 0


def test_successors_are_added_most_frequent_first_and_only_when_missing():
    seqs = _random_sequences(seed=4)
    counts = TransitionCounts.from_sequences(seqs, n_items=15)
    truth = Counter((int(a), int(b)) for s in seqs for a, b in zip(s[:-1], s[1:]))
    for i in range(-1, 17):
        want = sorted((b for (a, b) in truth if a == i), key=lambda b: (-truth[(i, b)], b))
        assert counts.successors(i).tolist() == want
    rng = np.random.default_rng(5)
    items = np.stack([rng.permutation(15)[:6] for _ in range(25)])
    items[0, -2:] = -1
    scores = np.sort(rng.normal(size=(25, 6)), axis=1)[:, ::-1].astype(np.float32).copy()
    scores[0, -2:] = -np.inf
    last = rng.integers(-1, 15, size=25)
    got_items, got_scores = add_successors(items=items, scores=scores, last=last,
                                           transitions=counts, m=3)
    assert got_items.shape == (25, 9)
    assert np.array_equal(got_items[:, :6], items) and np.array_equal(got_scores[:, :6], scores)
    for r in range(25):
        have = set(items[r][items[r] >= 0].tolist())
        want = [b for b in counts.successors(int(last[r])).tolist() if b not in have][:3]
        assert got_items[r, 6:].tolist() == want + [-1] * (3 - len(want))
        # Below every candidate the search found, in successor order.
        added = got_scores[r, 6 : 6 + len(want)]
        assert (added < scores[r][items[r] >= 0].min()).all() and (np.diff(added) < 0).all()
    assert (got_items[:, 6:] >= 0).any()


def test_last_items_reads_the_most_recent_item_of_each_row():
    history = np.array([[4, 7, -1], [2, -1, -1], [-1, -1, -1], [1, 2, 3]])
    assert last_items(history).tolist() == [7, 2, -1, 3]


def test_rerank_orders_by_score_plus_weighted_log_count():
    seqs = _random_sequences(seed=2)
    counts = TransitionCounts.from_sequences(seqs, n_items=15)
    rng = np.random.default_rng(3)
    items = np.stack([rng.permutation(15)[:8] for _ in range(20)])
    items[0, -2:] = -1
    scores = np.sort(rng.normal(size=(20, 8)), axis=1)[:, ::-1].astype(np.float32).copy()
    scores[0, -2:] = -np.inf
    last = rng.integers(0, 15, size=20)
    got_items, got_scores = rerank_with_transitions(items=items, scores=scores, last=last,
                                                    transitions=counts, weight=2.0)
    truth = Counter((int(a), int(b)) for s in seqs for a, b in zip(s[:-1], s[1:]))
    for r in range(20):
        real = [(float(s) + 2.0 * np.log1p(truth.get((int(last[r]), int(i)), 0)), int(i))
                for i, s in zip(items[r], scores[r]) if i >= 0]
        expected = [i for _, i in sorted(real, key=lambda t: -t[0])]
        assert got_items[r, : len(expected)].tolist() == expected
        assert (got_items[r, len(expected):] == -1).all()
        assert np.allclose(got_scores[r, : len(expected)], sorted((s for s, _ in real),
                                                                  reverse=True), atol=1e-5)
    # Some row changed order, or the test would prove nothing.
    assert not np.array_equal(got_items, items)


def test_decoding_applies_the_prior_after_the_search():
    ex, vocab, collator, trie = cyclic_problem()
    torch.manual_seed(0)
    model = build_model(cfg=tiny_cfg(), vocab_size=vocab.vocab_size,
                        item_tokens=collator.item_tokens).eval()
    seqs = [np.array([(3 * u + t) % 40 for t in range(12)]) for u in range(12)]
    counts = TransitionCounts.from_sequences(seqs, n_items=40)
    common = dict(model=model, examples=ex["valid"], collator=collator, trie=trie, vocab=vocab,
                  num_beams=20, top_k=20, batch_size=8, device="cpu", normalize="children")
    plain_items, plain_scores = decode_examples(**common)
    items, scores = decode_examples(
        **common, priors=CandidatePriors(transitions=counts, transition_weight=5.0))
    want_items, want_scores = rerank_with_transitions(
        items=plain_items, scores=plain_scores, last=last_items(ex["valid"].history),
        transitions=counts, weight=5.0)
    assert items.tolist() == want_items.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    # With successor candidates: added, re-ordered, then cut to the lists' size.
    more_items, _ = decode_examples(**common, priors=CandidatePriors(
        transitions=counts, transition_weight=5.0, transition_candidates=2))
    last = last_items(ex["valid"].history)
    wide_items, wide_scores = add_successors(items=plain_items, scores=plain_scores, last=last,
                                             transitions=counts, m=2)
    want_more, _ = rerank_with_transitions(items=wide_items, scores=wide_scores, last=last,
                                           transitions=counts, weight=5.0)
    assert more_items.tolist() == want_more[:, :20].tolist()
    # The untrained model rarely ranks the cyclic successor first; the counts always do.
    assert (items[:, 0] == ex["valid"].targets).mean() > (plain_items[:, 0] == ex["valid"].targets).mean()


def test_counts_round_trip_and_a_bad_file_is_a_one_line_error(tmp_path):
    counts = TransitionCounts.from_sequences(_random_sequences(), n_items=15)
    counts.save(tmp_path / "t.safetensors")
    again = TransitionCounts.load(tmp_path / "t.safetensors")
    assert again.n_items == 15
    assert np.array_equal(again.keys, counts.keys) and np.array_equal(again.counts, counts.counts)
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DataError, match="corrupt"):
        TransitionCounts.load(tmp_path / "bad.safetensors")


def test_priors_config_is_checked_and_decoding_only():
    with pytest.raises(DataError, match="priors weights must be >= 0"):
        RetrieverConfig(priors={"transition_weights": [-1.0]})
    with pytest.raises(DataError, match="priors.transition_weights must be a non-empty list"):
        RetrieverConfig(priors={"transition_weights": []})
    with pytest.raises(DataError, match="unknown priors field"):
        RetrieverConfig(priors={"transition_weight": [1.0]})
    assert RetrieverConfig().fingerprint() == RetrieverConfig(
        priors={"transition_weights": [4.0], "transition_candidates": [5]}).fingerprint()


def test_hand_set_weights_of_earlier_versions_are_dropped_with_a_warning(caplog):
    cfg = RetrieverConfig.from_dict({"transition_prior_weight": 8, "content_prior_weight": 12})
    assert cfg.priors.fit
    assert "fitted on validation users" in caplog.text
    # The learned transition term of earlier versions is gone: off, it is ignored; on, refused.
    RetrieverConfig.from_dict({"transition_embedding": False, "transition_dropout": 0.0})
    assert "transition_embedding, transition_dropout no longer exist" in caplog.text
    with pytest.raises(DataError, match="transition_embedding .* was removed"):
        RetrieverConfig.from_dict({"transition_embedding": True})
    with pytest.raises(DataError, match="content_embedding was removed"):
        RetrieverConfig.from_dict({"content_embedding": True})
    # So are training on the most recent prefixes only and stage 2's soft targets.
    off = RetrieverConfig.from_dict({"max_train_prefixes": 0, "stage2": {"soft_targets": False}})
    assert off == RetrieverConfig() and "soft_targets no longer exists" in caplog.text
    with pytest.raises(DataError, match="max_train_prefixes was removed"):
        RetrieverConfig.from_dict({"max_train_prefixes": 30})
    # a run saved between the nesting and the removal spells it inside the schedule
    assert RetrieverConfig.from_dict({"schedule": {"max_train_prefixes": 0}}) \
        == RetrieverConfig()
    with pytest.raises(DataError, match="max_train_prefixes was removed"):
        RetrieverConfig.from_dict({"schedule": {"max_train_prefixes": 30}})
    with pytest.raises(DataError, match="soft_targets was removed"):
        RetrieverConfig.from_dict({"stage2": {"soft_targets": True}})


def test_stage_saves_the_counts_and_the_api_reproduces_its_lists(tmp_path):
    from generative_rec import inference, stage
    from recdata.split import SequentialSplit

    run = write_run(tmp_path)
    # One-value grids fix the weights.
    cfg = tiny_cfg(priors={"transition_weights": [3.0], "transition_candidates": [3],
                           "content_weights": [0.0]}, schedule=dict(max_steps=15, eval_every=15, lr=5e-3), decoding=dict(candidates_n=25))
    stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")
    split = SequentialSplit.from_run_dir(run)
    priors = inference.load_priors(run)
    assert (priors.transition_weight, priors.transition_candidates) == (3.0, 3)
    counts = priors.transitions
    truth = TransitionCounts.from_sequences(split.train_sequences, n_items=split.n_items)
    assert np.array_equal(counts.keys, truth.keys) and np.array_equal(counts.counts, truth.counts)
    test = pl.read_parquet(run / "retriever" / "candidates.parquet").filter(
        pl.col("split") == "test").sort("user_idx")
    model, vocab, trie = inference.load_retriever(run, device="cpu")
    items, _ = inference.recommend_for_histories(
        model=model, vocab=vocab, trie=trie, histories=[s.tolist() for s in split.test_inputs],
        user_ids=split.user_ids, top_k=25, num_beams=cfg.decode_beams,
        max_history=cfg.history.max_length, normalize=cfg.normalize, priors=priors)
    assert items.tolist() == test["items"].to_list()
    # The counts re-ordered the saved lists: without them the API gives other lists.
    plain, _ = inference.recommend_for_histories(
        model=model, vocab=vocab, trie=trie, histories=[s.tolist() for s in split.test_inputs],
        user_ids=split.user_ids, top_k=25, num_beams=cfg.decode_beams,
        max_history=cfg.history.max_length, normalize=cfg.normalize)
    assert plain.tolist() != items.tolist()
    # The serving API loads the counts with the model and gives the same candidates.
    from mmqrec.recommender import Recommender

    rec = Recommender.load(run, device="cpu", candidates_n=25)
    served, _, _ = rec._candidates([np.asarray(s) for s in split.test_inputs],
                                   list(split.user_ids), [None] * split.n_users)
    assert [c.tolist() for c in served] == test["items"].to_list()
    # A later run without the priors leaves no stale counts behind.
    stage.run(cfg=tiny_cfg(priors={"fit": False}, schedule=dict(max_steps=15, eval_every=15, lr=5e-3), decoding=dict(candidates_n=25)), run_dir=run, seed=0, device="cpu")
    assert not (run / "retriever" / "transitions.safetensors").exists()
