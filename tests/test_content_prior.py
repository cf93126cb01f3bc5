"""The content prior (``RetrieverConfig.priors``): candidates re-ordered by how
close their frozen embeddings are to the user's most recent item, and that item's nearest items
offered as extra candidates."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from generative_rec.config import RetrieverConfig
from generative_rec.content import ContentVectors
from generative_rec.priors import CandidatePriors, rerank_with_content
from generative_rec.transitions import append_candidates
from recdata.errors import DataError
from recdata.io import save_tensors
from recdata.layout import layout
from tests.test_retriever import tiny_cfg, write_run

torch.set_num_threads(1)


def _modalities(n: int = 14, seed: int = 0):
    rng = np.random.default_rng(seed)
    text, image = rng.normal(size=(n, 5)), rng.normal(size=(n, 3)) * 7.0
    text_mask, image_mask = np.ones(n, bool), np.ones(n, bool)
    text_mask[3] = False            # an item without text
    image_mask[[3, 5]] = False      # ... nor an image: no content at all; item 5 has text only
    text[1], image[1] = text[0], image[0]  # items 0 and 1 look alike: ties, broken by index
    return [(text, text_mask), (image, image_mask)]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_similarity_is_the_mean_cosine_over_modalities_and_neighbours_match_brute_force():
    mods = _modalities()
    content = ContentVectors.from_embeddings(mods, n_neighbours=6, chunk=4)
    n = len(mods[0][0])

    def reference(i: int, j: int) -> float:
        return sum(_cos(e[i], e[j]) for e, m in mods if m[i] and m[j]) / len(mods)

    got = content.similarity(last=np.arange(n), items=np.tile(np.arange(n), (n, 1)))
    for i in range(n):
        for j in range(n):
            # An item is not its own neighbour: no bonus for the last item itself.
            want = 0.0 if i == j else reference(i, j)
            assert got[i, j] == pytest.approx(want, abs=1e-5)
    for i in range(n):
        if i == 3:
            assert (content.neighbours[i] == -1).all()  # no content, no neighbours
            continue
        others = [j for j in range(n) if j not in (i, 3)]
        # Most similar first, ties by the lower index: the slow, obviously correct order.
        want = sorted(others, key=lambda j: (-round(reference(i, j), 5), j))[:6]
        assert content.nearest(i).tolist() == want
    assert content.nearest(-1).size == 0 and content.nearest(n).size == 0


def test_unknown_items_have_no_similarity():
    content = ContentVectors.from_embeddings(_modalities(), n_neighbours=4)
    sim = content.similarity(last=np.array([0, -1, 99]), items=np.array([[1, -1, 99]] * 3))
    assert sim[0, 0] != 0 and (sim[0, 1:] == 0).all() and (sim[1:] == 0).all()


def test_rerank_with_content_matches_a_plain_sort():
    content = ContentVectors.from_embeddings(_modalities(), n_neighbours=4)
    rng = np.random.default_rng(1)
    items = np.stack([rng.permutation(14)[:8] for _ in range(6)])
    items[2, 5:] = -1
    scores = np.where(items >= 0, -np.sort(rng.random((6, 8)), axis=1) * 3, -np.inf)
    last = np.array([0, 1, 2, 4, -1, 99])
    got_items, got_scores = rerank_with_content(items=items, scores=scores, recent=last,
                                                content=content, weight=2.0)
    for r in range(6):
        real = []
        for i, s in zip(items[r], scores[r]):
            if i >= 0:
                cos = content.similarity(last=last[r : r + 1], items=np.array([[i]]))[0, 0]
                real.append((s + 2.0 * max(cos, 0.0), i))
        want = [i for _, i in sorted(real, key=lambda t: -t[0])]
        assert got_items[r, : len(want)].tolist() == want
        assert (got_items[r, len(want):] == -1).all()
        assert np.allclose(got_scores[r, : len(want)], sorted((s for s, _ in real), reverse=True))
    assert not np.array_equal(got_items, items)
    # Users without a known last item keep the search's order.
    assert got_items[4].tolist() == items[4].tolist() and got_items[5].tolist() == items[5].tolist()


def test_older_history_items_add_their_cosines_with_decaying_weights():
    content = ContentVectors.from_embeddings(_modalities(), n_neighbours=4)
    rng = np.random.default_rng(2)
    items = np.stack([rng.permutation(14)[:9] for _ in range(5)])
    scores = -np.sort(rng.random((5, 9)), axis=1) * 4
    recent = np.array([[0, 2, 4], [6, -1, -1], [8, 9, 10], [-1, -1, -1], [11, 12, 13]])
    got, got_scores = rerank_with_content(items=items, scores=scores, recent=recent,
                                          content=content, weight=3.0, decay=0.4)
    for r in range(5):
        def bonus(i: int) -> float:
            total = 0.0
            for h, j in enumerate(recent[r]):
                if j >= 0 and j != i:  # an item earns nothing from itself
                    cos = content.similarity(last=np.array([j]), items=np.array([[i]]))[0, 0]
                    total += 3.0 * 0.4 ** h * max(cos, 0.0)
            return total
        real = sorted(((s + bonus(i), i) for i, s in zip(items[r], scores[r])),
                      key=lambda t: -t[0])
        assert got[r].tolist() == [i for _, i in real]
        assert np.allclose(got_scores[r], [s for s, _ in real])
    # One column is the last item alone, as in the priors' default.
    one, _ = rerank_with_content(items=items, scores=scores, recent=recent[:, :1],
                                 content=content, weight=3.0, decay=0.4)
    assert not np.array_equal(one, got)


def test_recent_items_reads_the_most_recent_first():
    from generative_rec.transitions import last_items, recent_items

    history = np.array([[5, 6, 7, -1], [1, 2, -1, -1], [-1, -1, -1, -1], [0, 1, 2, 3]])
    assert recent_items(history, 3).tolist() == [[7, 6, 5], [2, 1, -1], [-1, -1, -1],
                                                  [3, 2, 1]]
    assert last_items(history).tolist() == [7, 2, -1, 3]


def test_priors_add_the_nearest_items_then_reorder_and_cut():
    content = ContentVectors.from_embeddings(_modalities(), n_neighbours=6)
    items = np.array([[7, 8, 9, -1], [10, 11, 12, 13]])
    scores = np.array([[-1.0, -2.0, -3.0, -np.inf], [-1.0, -1.5, -2.0, -2.5]])
    last = np.array([0, 4])
    priors = CandidatePriors(content=content, content_weight=50.0, content_candidates=2)
    got, _ = priors.apply(items=items, scores=scores, recent=last, top_k=4)
    wide, wide_scores = append_candidates(items=items, scores=scores, m=2,
                                          proposals=lambda r: content.nearest(int(last[r])))
    # The added ones are the last item's nearest items the row lacked, below its last score.
    for r in range(2):
        new = [j for j in content.nearest(int(last[r])).tolist() if j not in items[r]][:2]
        assert wide[r, 4:].tolist() == new
        assert wide_scores[r, 4:].max() < scores[r][items[r] >= 0].min()
    want, _ = rerank_with_content(items=wide, scores=wide_scores, recent=last, content=content,
                                  weight=50.0)
    assert got.tolist() == want[:, :4].tolist()
    # At this weight the nearest item wins its row.
    assert got[0, 0] == content.nearest(0)[0] and got[1, 0] == content.nearest(4)[0]
    # Off: the lists are returned as they are.
    same, _ = CandidatePriors(content=content).apply(items=items, scores=scores, recent=last,
                                                 top_k=4)
    assert same.tolist() == items.tolist()


def test_content_file_round_trips_and_a_bad_file_is_a_one_line_error(tmp_path):
    content = ContentVectors.from_embeddings(_modalities(), n_neighbours=5)
    content.save(tmp_path / "c.safetensors")
    again = ContentVectors.load(tmp_path / "c.safetensors")
    assert np.array_equal(again.vectors, content.vectors)
    assert np.array_equal(again.neighbours, content.neighbours)
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DataError, match="corrupt"):
        ContentVectors.load(tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match="needs the encode stage's embeddings"):
        ContentVectors.from_run_dir(tmp_path)


def test_priors_config_bounds_the_content_settings():
    with pytest.raises(DataError, match="content_candidates must lie in 0..32"):
        RetrieverConfig(priors={"content_candidates": [33]})
    with pytest.raises(DataError, match="content_history must be >= 1"):
        RetrieverConfig(priors={"content_history": [0]})
    with pytest.raises(DataError, match="content_decay must lie in"):
        RetrieverConfig(priors={"content_decay": [0.0]})
    assert RetrieverConfig().fingerprint() == RetrieverConfig(
        priors={"content_weights": [12.0], "content_candidates": [5], "content_history": [3],
                "content_decay": [0.7]}).fingerprint()


def test_stage_saves_the_vectors_and_the_api_reproduces_its_lists(tmp_path):
    from generative_rec import inference, stage
    from recdata.split import SequentialSplit

    run = write_run(tmp_path)
    split = SequentialSplit.from_run_dir(run)
    rng = np.random.default_rng(0)
    # Items come in look-alike pairs (2k, 2k + 1): each one's nearest item is plain.
    base = np.repeat(rng.normal(size=(split.n_items // 2 + 1, 8)), 2, axis=0)[: split.n_items]
    emb = base + 0.05 * rng.normal(size=base.shape)
    save_tensors(layout(run).embeddings("text"), {"embeddings": emb.astype(np.float32),
                                                  "mask": np.ones(split.n_items, dtype=bool)})
    cfg = tiny_cfg(priors={"transition_weights": [0.0], "content_weights": [1000.0],
                           "content_candidates": [3], "content_history": [1]}, schedule=dict(max_steps=15, eval_every=15, lr=5e-3), decoding=dict(candidates_n=20))
    stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")
    priors = inference.load_priors(run)
    assert priors.content is not None and priors.transitions is None
    assert np.array_equal(priors.content.neighbours,
                          ContentVectors.from_run_dir(run).neighbours)
    test = pl.read_parquet(run / "retriever" / "candidates.parquet").filter(
        pl.col("split") == "test").sort("user_idx")
    model, vocab, trie = inference.load_retriever(run, device="cpu")
    common = dict(model=model, vocab=vocab, trie=trie,
                  histories=[s.tolist() for s in split.test_inputs], user_ids=split.user_ids,
                  top_k=20, num_beams=cfg.decode_beams, max_history=cfg.history.max_length,
                  normalize=cfg.normalize)
    items, _ = inference.recommend_for_histories(**common, priors=priors)
    assert items.tolist() == test["items"].to_list()
    plain, _ = inference.recommend_for_histories(**common)
    assert plain.tolist() != items.tolist()
    # At this weight the content decides: the most recent item's nearest item comes first,
    # found by the search or added.
    last = np.array([s[-1] for s in split.test_inputs])
    assert items[:, 0].tolist() == priors.content.neighbours[last, 0].tolist() == (last ^ 1).tolist()
    # The serving API loads the same priors: an ad-hoc history gets the last item's twin first.
    from mmqrec import Recommender

    rec = Recommender.load(run, device="cpu")
    for item in (4, 7):
        got = rec.recommend_history([split.item_ids[0], split.item_ids[item]], k=3,
                                    exclude_seen=False)
        assert got.items[0]["item_id"] == split.item_ids[item ^ 1]


def test_decoding_applies_the_content_prior_over_the_recent_items():
    from generative_rec.model import build_model
    from generative_rec.train import decode_examples
    from generative_rec.transitions import recent_items
    from tests.test_retriever import cyclic_problem

    ex, vocab, collator, trie = cyclic_problem()
    torch.manual_seed(0)
    model = build_model(cfg=tiny_cfg(), vocab_size=vocab.vocab_size,
                        item_tokens=collator.item_tokens).eval()
    n_items = collator.item_tokens.shape[0]
    rng = np.random.default_rng(3)
    content = ContentVectors.from_embeddings([(rng.normal(size=(n_items, 6)), np.ones(n_items, bool))])
    common = dict(model=model, examples=ex["valid"], collator=collator, trie=trie, vocab=vocab,
                  num_beams=20, top_k=20, batch_size=8, device="cpu", normalize="children")
    plain_items, plain_scores = decode_examples(**common)
    priors = CandidatePriors(content=content, content_weight=4.0, content_history=3,
                             content_decay=0.5)
    items, scores = decode_examples(**common, priors=priors)
    want, want_scores = rerank_with_content(
        items=plain_items, scores=plain_scores, recent=recent_items(ex["valid"].history, 3),
        content=content, weight=4.0, decay=0.5)
    assert items.tolist() == want.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    assert items.tolist() != plain_items.tolist()
