"""Items the retriever never trained on reach the lists through the untrained items' channel:
offered by content, scored as the nearest trained item in the list."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from generative_rec.config import PriorsConfig
from generative_rec.content import ContentVectors
from generative_rec.priors import CandidatePriors, fit_priors
from generative_rec.untrained import (ANCHORS, SLOT_DECAY, SLOT_HISTORY, UntrainedItems,
                                      nearest_untrained, reserve_slots, trained_items)
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
    cfg = PriorsConfig(content_weights=[0.0, 8.0], transition_weights=[0.0], untrained_candidates=3,
                       untrained_slots=[0])
    fitted, report = fit_priors(items=items, scores=scores, recent=recent, targets=targets,
                                top_k=10, cfg=cfg, transitions=None, content=content,
                                untrained=table)
    # validation lists without the channel cannot reach an untrained target: nothing to fit
    assert max(t["ndcg@10"] for t in report["trials"]) == 0.0 and fitted.content_weight == 0.0
    # the reported figure is the priors' as served, the channel included
    assert report["valid_ndcg@10"] > 0.0
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
    # with a place fitted for new items, the added item most like the history takes it, even
    # when the list is full of trained items and the anchor channel is off
    slotted = with_catalogue(replace(priors, content_weight=0.0, untrained_candidates=0,
                                     untrained_slots=1),
                             trained=trained, added=added)
    full = np.arange(1, 12)[None, :]
    listed, _ = slotted.apply(items=full, scores=-np.arange(11.0)[None, :],
                              recent=np.array([[0, 5]]), top_k=11)
    assert listed[0, 9] == 13 and listed[0, :9].tolist() == list(range(1, 10))
    # vectors of other encoders: served without them, with a warning
    other = with_catalogue(priors, trained=trained, added=_unit(rng, 2, d=5))
    assert other.content.n_items == 12 and other.untrained.count == 0
    assert "cannot compare them" in caplog.text
    # a run trained before the channel existed keeps it off
    old = CandidatePriors.from_weights({"content_weight": 4.0}, transitions=None, content=content)
    assert old.untrained_candidates == 0 and not with_catalogue(old, trained=trained).untrained


def test_slot_proposals_match_a_brute_force_content_rule() -> None:
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 50)
    vectors[9] = 0.0  # an item without content is like nothing
    untrained = rng.random(50) < 0.4
    untrained[[9, 11]] = True
    recent = rng.integers(0, 50, size=(23, 7))
    recent[0, 2:] = -1  # a short history
    recent[1, 0] = 11  # an untrained item the user just had is not proposed again
    got = nearest_untrained(vectors=vectors, untrained=untrained, recent=recent, k=6, chunk=5)
    sim = vectors @ vectors.T
    for row, items in enumerate(recent):
        score = {}
        for j in np.flatnonzero(untrained):
            if j in items[:SLOT_HISTORY]:
                continue
            s = sum(SLOT_DECAY ** h * max(0.0, sim[i, j])
                    for h, i in enumerate(items[:SLOT_HISTORY]) if i >= 0)
            if s > 0:
                score[int(j)] = s
        expected = sorted(score, key=lambda j: (-score[j], j))[:6]
        assert got[row].tolist() == expected + [-1] * (6 - len(expected))
    assert 11 not in got[1].tolist() and 9 not in got.ravel().tolist()


def test_reserved_slots_take_the_last_places_of_the_first_ten() -> None:
    items = np.tile(np.arange(12), (3, 1))
    scores = np.tile(-np.arange(12, dtype=np.float32), (3, 1))
    proposals = np.array([[50, 51, 52], [3, 50, -1], [-1, -1, -1]])
    got, got_scores = reserve_slots(items=items, scores=scores, proposals=proposals, slots=2)
    # places 8 and 9 go to the first two proposals; 8..11 move down and the width stays
    assert got[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 50, 51, 8, 9]
    # a proposal already above the places is skipped; one further down moves up
    assert got[1].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 50, 8, 9, 10]
    assert got[2].tolist() == list(range(12)) and got_scores[2].tolist() == scores[2].tolist()
    assert (np.diff(got_scores, axis=1) <= 0).all()
    moved, _ = reserve_slots(items=items[:1], scores=scores[:1], proposals=np.array([[10, 50]]),
                             slots=2)
    assert moved[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10, 50, 8, 9]
    same, _ = reserve_slots(items=items, scores=scores, proposals=proposals, slots=0)
    assert (same == items).all()


def _slot_catalogue(n_users: int, new_share: float) -> tuple:
    """40 items, 30..39 untrained; each user's recent item is a trained twin of its target when
    the target is new, and the model's list holds the trained targets at place 9."""
    rng = np.random.default_rng(7)
    base = _unit(rng, 20, d=24)
    vectors = np.concatenate([base, base[:10] + 0.05 * _unit(rng, 10, d=24), base[:10]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    content = ContentVectors.from_embeddings([(vectors[:40], np.ones(40, bool))])
    trained = np.arange(40) < 30
    table = UntrainedItems.build(content=content, trained=trained)
    new = rng.random(n_users) < new_share
    twin = rng.integers(0, 10, n_users)
    targets = np.where(new, 30 + twin, 20 + twin % 10)
    recent = np.where(new, twin, 20 + (twin + 1) % 10)[:, None]
    items = np.tile(np.arange(10), (n_users, 1))
    items[:, 8] = np.where(new, 19, targets)
    scores = np.tile(-np.arange(10, dtype=np.float32), (n_users, 1))
    return content, table, items, scores, recent, targets


def test_the_places_are_fitted_on_validation_users_and_only_with_untrained_targets() -> None:
    cfg = PriorsConfig(content_weights=[0.0], transition_weights=[0.0], untrained_candidates=0)
    for share, expect_places in ((0.5, True), (0.0, False)):
        content, table, items, scores, recent, targets = _slot_catalogue(60, share)
        fitted, report = fit_priors(items=items, scores=scores, recent=recent, targets=targets,
                                    top_k=10, cfg=cfg, transitions=None, content=content,
                                    untrained=table)
        slots = report["untrained_slots"]
        assert slots["valid_targets_untrained"] == int((targets >= 30).sum())
        if expect_places:
            # half the targets are new: a place for them is worth more than place 10
            assert slots["fitted"] and fitted.untrained_slots >= 1
            ranked, _ = fitted.apply(items=items, scores=scores, recent=recent, top_k=10)
            assert (ranked == targets[:, None]).any(1)[targets >= 30].mean() > 0.5
            assert report["valid_ndcg@10"] > report["valid_ndcg@10_model"]
            assert fitted.history_needed == SLOT_HISTORY
        else:
            # no new target: validation users cannot tell, the grid's first value (off) stands
            assert not slots["fitted"] and fitted.untrained_slots == 0
