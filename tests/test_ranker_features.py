"""CTR rows from run_dir/data: histories without leakage, implicit negatives, user features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recdata.errors import DataError
from ranking.features import (
    FEEDBACK_NEG,
    FEEDBACK_POS,
    SPLITS,
    bucket_age,
    build_ctr_data,
    drop_train_pairs,
    gather_history,
    history_arrays,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recdata.synthetic import write_synthetic_run_data

    run = tmp_path_factory.mktemp("ctr") / "run"
    write_synthetic_run_data(run, n_users=20, n_items=30, seed=1, with_images=False)
    return run


def _chronological(run_dir: Path) -> dict[int, list[tuple[int, int]]]:
    """Reference: per user, (item, label) in timestamp order, ties by file order."""
    frame = pl.read_parquet(run_dir / "data" / "ratings.parquet").with_row_index("_row")
    out: dict[int, list[tuple[int, int]]] = {}
    for row in frame.sort(["timestamp", "_row"]).iter_rows(named=True):
        out.setdefault(row["user_idx"], []).append((row["item_idx"], row["label"]))
    return out


def test_history_is_strictly_earlier_interactions_in_order(run_dir: Path) -> None:
    data = build_ctr_data(run_dir=run_dir)
    ref = _chronological(run_dir)
    ex = data.examples
    length = 6
    items, feedback, mask = gather_history(data.history, ex.user, ex.hist_end, length)
    seen_position: dict[int, int] = {}
    for r in range(len(ex.user)):
        u = int(ex.user[r])
        j = seen_position.get(u, 0)  # rows are grouped per user in chronological order
        seen_position[u] = j + 1
        assert (int(ex.item[r]), int(ex.label[r])) == ref[u][j]
        expect = ref[u][max(0, j - length) : j]
        got_items = items[r][mask[r]].tolist()
        got_fb = feedback[r][mask[r]].tolist()
        assert got_items == [i for i, _ in expect]
        assert got_fb == [FEEDBACK_POS if lab else FEEDBACK_NEG for _, lab in expect]
        assert mask[r].tolist() == [False] * (length - len(expect)) + [True] * len(expect)


def test_rows_keep_the_data_stage_split_and_labels(run_dir: Path) -> None:
    data = build_ctr_data(run_dir=run_dir)
    frame = pl.read_parquet(run_dir / "data" / "ratings.parquet")
    assert not data.implicit
    for i, name in enumerate(SPLITS):
        assert int((data.examples.split == i).sum()) == int((frame["split"] == name).sum())
    assert data.examples.label.sum() == frame["label"].sum()
    assert data.users.names == ["age", "gender", "occupation"]
    assert data.users.values.shape == (data.n_users, 3) and (data.users.values > 0).all()


def test_implicit_data_gets_seeded_unseen_negatives(tmp_path: Path, run_dir: Path) -> None:
    import shutil

    run = tmp_path / "implicit"
    shutil.copytree(run_dir, run)
    path = run / "data" / "ratings.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("rating"), pl.lit(1, dtype=pl.Int8).alias("label")).write_parquet(path)

    a = build_ctr_data(run_dir=run, negatives_per_positive=3, seed=5)
    b = build_ctr_data(run_dir=run, negatives_per_positive=3, seed=5)
    c = build_ctr_data(run_dir=run, negatives_per_positive=3, seed=6)
    assert a.implicit
    n_pos = frame.height
    neg = a.examples.label == 0
    assert int((~neg).sum()) == n_pos
    assert int(neg.sum()) + a.stats["negatives_dropped_no_unseen_item"] == 3 * n_pos
    user_items = {(int(u), int(i)) for u, i in zip(frame["user_idx"], frame["item_idx"])}
    assert not any((int(u), int(i)) in user_items for u, i in zip(a.examples.user[neg], a.examples.item[neg]))
    np.testing.assert_array_equal(a.examples.item, b.examples.item)
    assert not np.array_equal(a.examples.item, c.examples.item)
    # a negative shares its positive's history and split
    pos_of = {}
    for r in np.flatnonzero(~neg):
        pos_of[int(a.examples.hist_end[r])] = r
    for r in np.flatnonzero(neg)[:50]:
        p = pos_of[int(a.examples.hist_end[r])]
        assert a.examples.user[r] == a.examples.user[p] and a.examples.split[r] == a.examples.split[p]
    # history feedback on implicit data is "liked" for every interaction
    assert (a.history.feedback == FEEDBACK_POS).all()


def test_drop_train_pairs_only_touches_training_rows(run_dir: Path) -> None:
    data = build_ctr_data(run_dir=run_dir)
    ex = data.examples
    train = np.flatnonzero(ex.split == 0)[:3]
    test = np.flatnonzero(ex.split == 2)[:2]
    pick = np.concatenate([train, test])
    kept, dropped = drop_train_pairs(ex, users=ex.user[pick], items=ex.item[pick], n_items=data.n_items)
    pairs = {(int(ex.user[r]), int(ex.item[r])) for r in pick}
    # every training row of a listed pair goes (the synthetic users repeat items)
    expect = sum((int(u), int(i)) in pairs and s == 0 for u, i, s in zip(ex.user, ex.item, ex.split))
    assert dropped == expect >= 3
    assert len(kept.user) == len(ex.user) - expect
    assert not any((int(u), int(i)) in pairs and s == 0 for u, i, s in zip(kept.user, kept.item, kept.split))
    assert int((kept.split == 2).sum()) == int((ex.split == 2).sum())


@pytest.mark.parametrize(
    "value, expect",
    [(1, "<18"), (17, "<18"), (18, "18-24"), (24, "18-24"), (25, "25-34"), (45, "45-49"), (56, "56+"),
     (73, "56+"), (None, None), ("x", None), (0, None)],
)
def test_age_buckets_cover_raw_ages_and_ml1m_codes(value: object, expect: str | None) -> None:
    assert bucket_age(value) == expect


def test_history_arrays_right_aligns_and_truncates() -> None:
    items, fb, mask = history_arrays(np.array([4, 5, 6]), np.array([1, 2, 2]), 5)
    assert items.tolist() == [0, 0, 4, 5, 6] and fb.tolist() == [0, 0, 1, 2, 2]
    assert mask.tolist() == [False, False, True, True, True]
    items, _, mask = history_arrays(np.arange(8), np.full(8, 2), 3)
    assert items.tolist() == [5, 6, 7] and mask.all()


def test_bad_split_value_is_a_data_error(tmp_path: Path, run_dir: Path) -> None:
    import shutil

    run = tmp_path / "bad"
    shutil.copytree(run_dir, run)
    path = run / "data" / "ratings.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("holdout")).otherwise(pl.col("split")).alias("split")).write_parquet(path)
    with pytest.raises(DataError, match="split must be one of"):
        build_ctr_data(run_dir=run)
