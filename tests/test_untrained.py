"""Items the retriever never trained on reach the lists through the untrained items' channel:
offered by content, scored as the nearest trained item in the list."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from generative_rec.config import PriorsConfig
from generative_rec.content import ContentVectors
from generative_rec.priors import CandidatePriors, fit_priors
from generative_rec.untrained import ANCHORS, UntrainedItems, trained_items
from recdata.errors import DataError


def _unit(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_tables_match_a_brute_force_search() -> None:
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 40)
    has = np.ones(40, bool)
    has[7] = False  # an item without content is nobody's neighbour and has none
    trained = rng.random(40) < 0.7
    trained[[3, 5]] = False
    base = ContentVectors.from_embeddings([(vectors[:37], has[:37])])
    # the last three were added after training: no neighbour rows of their own
    content = base.extended(vectors[37:])
    trained[37:] = False
    table = UntrainedItems.build(content=content, trained=trained, chunk=7)
    vectors = content.vectors
    sim = vectors @ vectors.T
    warm = [j for j in range(40) if trained[j] and has[j]]
    for i in range(40):
        if not trained[i] and has[i]:
            expected = sorted((j for j in warm if sim[i, j] > 0), key=lambda j: (-sim[i, j], j))[:ANCHORS]
            assert table.anchors[i].tolist() == (expected + [-1] * ANCHORS)[:ANCHORS]
        else:
            assert (table.anchors[i] == -1).all()
        width = table.nearest.shape[1]
        if has[i]:
            overall = sorted((j for j in range(40) if j != i and has[j]), key=lambda j: (-sim[i, j], j))
            assert table.nearest[i].tolist() == [j if not trained[j] else -1 for j in overall[:width]]
        else:
            assert (table.nearest[i] == -1).all()
    assert table.count == int((~trained).sum())


def test_a_proposal_borrows_the_score_of_its_nearest_listed_trained_item() -> None:
    # items 0..3 trained; 4 is a twin of 1, 5 a twin of 3; the last item is 0
    vectors = np.eye(6, dtype=np.float32)
    vectors[4] = vectors[1] * 0.9 + vectors[0] * 0.1
    vectors[5] = vectors[3] * 0.9 + vectors[0] * 0.2
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    content = ContentVectors.from_embeddings([(vectors, np.ones(6, bool))])
    table = UntrainedItems.build(content=content, trained=np.array([1, 1, 1, 1, 0, 0], bool))
    items = np.array([[2, 1, -1]])
    scores = np.array([[-1.0, -2.0, -np.inf]], np.float32)
    got, got_scores = table.propose(items=items, scores=scores, last=np.array([0]), m=5)
    # 4 takes 1's score and sits right after it; 5's trained neighbours (3, and 0 faintly)
    # are not listed: it goes below them all
    assert got[0].tolist()[:4] == [2, 1, 4, 5]
    assert got_scores[0, 2] == pytest.approx(-2.0) and got_scores[0, 3] < -2.0
    # an item already listed is not offered twice, and m bounds the offers
    again, _ = table.propose(items=got[:, :3], scores=got_scores[:, :3], last=np.array([0]), m=1)
    assert sorted(j for j in again[0].tolist() if j >= 0) == [1, 2, 4, 5]
    # an unknown last item (-1: an empty history) offers nothing
    none, _ = table.propose(items=items, scores=scores, last=np.array([-1]), m=5)
    assert sorted(j for j in none[0].tolist() if j >= 0) == [1, 2]


def _cold_catalogue(seed: int) -> tuple[ContentVectors, UntrainedItems, np.ndarray, np.ndarray]:
    """30 items, 20..29 untrained; the last items whose 3 nearest items hold an untrained one,
    and that item as their target."""
    rng = np.random.default_rng(seed)
    content = ContentVectors.from_embeddings([(_unit(rng, 30), np.ones(30, bool))])
    trained = np.arange(30) < 20
    table = UntrainedItems.build(content=content, trained=trained)
    last = np.array([i for i in range(20) if (table.nearest[i, :3] >= 0).any()])
    targets = np.array([table.nearest[i, :3][table.nearest[i, :3] >= 0][0] for i in last])
    assert len(last) >= 4
    return content, table, last, targets


def test_cold_targets_reach_the_lists_only_with_the_channel() -> None:
    content, table, last, targets = _cold_catalogue(1)
    # the model lists trained items only, as a model that never saw 20..29 does
    items = np.tile(np.arange(10, 20), (len(last), 1))
    scores = np.tile(-np.arange(10, dtype=np.float32), (len(last), 1))
    on = CandidatePriors(content=content, content_weight=8.0, untrained=table, untrained_candidates=3)
    off = replace(on, untrained_candidates=0)
    hit_on = on.apply(items=items, scores=scores, recent=last, top_k=10)[0]
    hit_off = off.apply(items=items, scores=scores, recent=last, top_k=10)[0]
    assert not (hit_off == targets[:, None]).any()
    assert (hit_on == targets[:, None]).any(axis=1).mean() >= 0.5
    assert hit_on.shape == (len(last), 10)
    # only untrained items among the last item's 3 nearest are offered
    offered = set(hit_on.ravel().tolist()) - set(range(20))
    allowed = {int(j) for i in last for j in table.nearest[i, :3] if j >= 0}
    assert offered <= allowed


def test_the_fit_leaves_the_channel_out_and_the_fitted_priors_carry_it() -> None:
    content, table, last, targets = _cold_catalogue(2)
    items = np.tile(np.arange(10), (len(last), 1))
    scores = np.tile(-np.arange(10, dtype=np.float32), (len(last), 1))
    recent = last[:, None]
    cfg = PriorsConfig(content_weights=[0.0, 8.0], transition_weights=[0.0], untrained_candidates=3)
    fitted, report = fit_priors(items=items, scores=scores, recent=recent, targets=targets,
                                top_k=10, cfg=cfg, transitions=None, content=content,
                                untrained=table)
    # validation lists without the channel cannot reach an untrained target: nothing to fit
    assert report["valid_ndcg@10"] == 0.0 and fitted.content_weight == 0.0
    assert report["weights"]["untrained_candidates"] == 3 and fitted.untrained is table
    ranked, _ = fitted.apply(items=items, scores=scores, recent=recent, top_k=10)
    assert (ranked == targets[:, None]).any(1).mean() > 0


def test_trained_items_are_the_ones_in_the_training_sequences() -> None:
    got = trained_items([np.array([0, 2]), np.array([2, 3])], 5)
    assert got.tolist() == [True, False, True, True, False]


def test_the_width_is_bounded_by_the_table() -> None:
    with pytest.raises(DataError, match="untrained_candidates"):
        PriorsConfig(untrained_candidates=17).validate()


def test_items_added_after_training_join_the_content_and_the_channel(caplog) -> None:
    from generative_rec.inference import with_catalogue

    rng = np.random.default_rng(3)
    vectors = _unit(rng, 12)
    content = ContentVectors.from_embeddings([(vectors, np.ones(12, bool))])
    priors = CandidatePriors(content=content, content_weight=4.0, untrained_candidates=3)
    trained = np.ones(12, bool)
    added = _unit(rng, 2)
    added[1] = vectors[0] + 0.3 * added[1]  # a near twin of item 0
    added[1] /= np.linalg.norm(added[1])
    grown = with_catalogue(priors, trained=trained, added=added)
    assert grown.content.n_items == 14 and grown.untrained.untrained.tolist() == [False] * 12 + [True] * 2
    # the added item most like item 0 is offered to a user whose last item is 0
    listed, _ = grown.apply(items=np.array([[1, 2]]), scores=np.array([[0.0, -1.0]]),
                            recent=np.array([0]), top_k=4)
    assert 13 in listed[0].tolist()
    # vectors of other encoders: served without them, with a warning
    other = with_catalogue(priors, trained=trained, added=_unit(rng, 2, d=5))
    assert other.content.n_items == 12 and other.untrained.count == 0
    assert "cannot compare them" in caplog.text
    # a run trained before the channel existed keeps it off
    old = CandidatePriors.from_weights({"content_weight": 4.0}, transitions=None, content=content)
    assert old.untrained_candidates == 0 and not with_catalogue(old, trained=trained).untrained
