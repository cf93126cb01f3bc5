"""Collision resolution and the semantic-ID table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recdata.errors import DataError
from tokenizer.sid import (
    SemanticIds,
    append_token_reference,
    collision_stats,
    resolve_collisions,
)


@st.composite
def raw_codes(draw):
    n = draw(st.integers(0, 60))
    length = draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    flat = draw(st.lists(st.integers(0, k - 1), min_size=n * length, max_size=n * length))
    return np.array(flat, dtype=np.int64).reshape(n, length), k


@settings(max_examples=150, deadline=None)
@given(raw_codes())
def test_append_makes_every_row_unique_and_keeps_raw_codes(case):
    codes, _ = case
    unique, stats = resolve_collisions(codes, strategy="append")
    assert unique.shape == (codes.shape[0], codes.shape[1] + 1)
    assert len({tuple(r) for r in unique.tolist()}) == codes.shape[0]
    np.testing.assert_array_equal(unique[:, :-1], codes)
    np.testing.assert_array_equal(unique[:, -1], append_token_reference(codes))
    if len(codes):
        assert unique[:, -1].max() < stats["collision_codebook_size"]
        assert stats["collision_codebook_size"] == stats["max_collision_group"]


@settings(max_examples=150, deadline=None)
@given(raw_codes(), st.integers(0, 2**31 - 1))
def test_reassign_makes_every_row_unique_and_only_uses_valid_codes(case, seed):
    codes, k = case
    rng = np.random.default_rng(seed)
    scores = [rng.normal(size=(codes.shape[0], k)) for _ in range(codes.shape[1])]
    unique, stats = resolve_collisions(codes, strategy="reassign", scores=scores)
    assert len({tuple(r) for r in unique.tolist()}) == codes.shape[0]
    assert (unique[:, :-1] >= 0).all() and (unique[:, :-1] < k).all()
    # Re-assignment only ever removes collisions, so the appended groups are no larger.
    assert stats["collision_codebook_size"] <= max(1, stats["max_collision_group"])
    # Items that did not collide keep their codes.
    counts = {}
    for r in codes.tolist():
        counts[tuple(r)] = counts.get(tuple(r), 0) + 1
    lonely = np.array([counts[tuple(r)] == 1 for r in codes.tolist()], dtype=bool)
    np.testing.assert_array_equal(unique[lonely, :-1], codes[lonely])


def test_reassign_moves_the_worse_fitting_item_to_its_next_nearest_code():
    codes = np.array([[0, 0], [0, 0]])
    # Item 1 fits code (0, 0) better than item 0; item 0's runner-up at position 1 is code 2.
    s0 = np.array([[0.9, 0.1, 0.0], [0.95, 0.0, 0.0]])
    s1 = np.array([[0.8, 0.0, 0.7], [0.9, 0.1, 0.2]])
    unique, stats = resolve_collisions(codes, strategy="reassign", scores=[s0, s1])
    np.testing.assert_array_equal(unique, [[0, 2, 0], [0, 0, 0]])
    assert stats["reassigned"] == 1 and stats["collision_codebook_size"] == 1


def test_collision_stats_hand_computed():
    codes = np.array([[1, 2], [1, 2], [1, 2], [0, 0], [3, 3]])
    stats = collision_stats(codes)
    assert stats["max_collision_group"] == 3
    assert stats["collision_rate"] == pytest.approx(1 - 3 / 5)
    assert stats["colliding_items"] == pytest.approx(3 / 5)


def test_min_collision_size_fixes_the_vocabulary():
    _, stats = resolve_collisions(np.array([[0], [1]]), min_collision_size=4)
    assert stats["collision_codebook_size"] == 4


def test_semantic_ids_round_trip(tmp_path):
    codes = np.array([[3, 1, 0], [3, 1, 1], [0, 2, 0]])
    sids = SemanticIds(codes=codes, codebook_sizes=[4, 3, 2], item_ids=["a", "b", "c"],
                       position_names=["shared0", "text0", "collision"])
    path = sids.save(tmp_path)
    assert path == tmp_path / "tokenizer" / "semantic_ids.parquet"
    import polars as pl

    frame = pl.read_parquet(path)
    assert frame.columns == ["item_idx", "item_id", "t0", "t1", "t2"]
    back = SemanticIds.from_run_dir(tmp_path)
    np.testing.assert_array_equal(back.codes, codes)
    assert back.codebook_sizes == [4, 3, 2] and back.item_ids == ["a", "b", "c"]
    assert back.position_names == ["shared0", "text0", "collision"]
    np.testing.assert_array_equal(back.offsets(), [0, 4, 7])
    assert back.vocab_size() == 9
    np.testing.assert_array_equal(back.token_ids()[1], [3, 5, 8])
    assert back.item_of()[(0, 2, 0)] == 2


def test_semantic_ids_refuse_duplicates_and_out_of_range_codes(tmp_path):
    with pytest.raises(DataError, match="not unique"):
        SemanticIds(codes=np.array([[1, 0], [1, 0]]), codebook_sizes=[2, 1], item_ids=["a", "b"]).save(tmp_path)
    with pytest.raises(DataError, match="outside"):
        SemanticIds(codes=np.array([[5, 0]]), codebook_sizes=[2, 1], item_ids=["a"]).save(tmp_path)
    with pytest.raises(DataError, match="missing artefact"):
        SemanticIds.from_run_dir(tmp_path / "nowhere")
