"""The loaders on the real datasets (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from recdata import load_dataset
from tests.conftest import REPO_ROOT, require_shared


def _stats_cli(name: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "data", "stats", "--dataset", name, "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, check=True,
    )
    return json.loads(out.stdout)


def test_ml100k_stats_cli_counts():
    require_shared("movielens", "ml-100k")
    stats = _stats_cli("ml-100k-mm")
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    # 1,620 posters through the published join, 36 more recovered by a unique title+year match.
    assert stats["items_with_image"] == 1656
    assert stats["skipped"]["items_matched_to_ml1m_by_title_year"] == 37
    assert stats["skipped"]["items_without_ml1m_match"] == 22
    # The item titled "unkonwn" (year "unkonwn", genre "unknown") has no text at all.
    assert stats["items_with_text"] == 1681
    assert stats["skipped"]["item_year_unparseable"] == 1
    assert stats["skipped"]["item_year_repaired_from_title"] == 1


def test_ml100k_title_year_fallback_finds_star_wars():
    require_shared("movielens", "ml-100k")
    import polars as pl

    items = load_dataset(name="ml-100k-mm").items
    star_wars = items.filter(pl.col("item_id") == "50").row(0, named=True)
    assert star_wars["ml1m_movie_id"] == "260"
    assert star_wars["image_path"].endswith("/260.jpg")
    assert star_wars["director"] == "George Lucas"
    # The row with "V" as its year and "(1995)" in its title is repaired, not guessed.
    land = items.filter(pl.col("item_id") == "1412").row(0, named=True)
    assert land["year"] == "1995" and not land["title"].endswith("(1995)")


def test_ml1m_drops_null_movie_ids_and_reads_latin1():
    require_shared("movielens", "ml-1m")
    ds = load_dataset(name="ml-1m-mm")
    stats = ds.stats()
    assert stats["skipped"]["ratings_missing_movie_id"] == 776
    assert stats["interactions"] == 1_000_209 - 776
    assert stats["users"] == 6040
    # ISO-8859-1 titles decode to real accented characters, not replacement marks.
    titles = ds.items["title"].to_list()
    assert any("é" in t for t in titles if t)
    assert not any("\ufffd" in t for t in titles if t)
    # CRLF line ends must not leak into the plot text.
    assert not any("\r" in p for p in ds.items["plot"].drop_nulls().to_list())


def test_amazon_beauty_sequences():
    require_shared("amazon-beauty")
    stats = load_dataset(name="amazon-beauty").stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert stats["items_with_image"] == 0


def test_ml100k_split_invariants(tmp_path):
    require_shared("movielens", "ml-100k")
    from recdata.config import DataConfig
    from recdata.split import SequentialSplit
    from recdata.stage import run

    run(cfg=DataConfig(dataset="ml-100k-mm"), run_dir=tmp_path)
    split = SequentialSplit.from_run_dir(tmp_path)
    assert split.n_users == 943 and split.n_items == 1682
    for seq, train in zip(split.sequences, split.train_sequences):
        assert len(train) == len(seq) - 2
    # one test item per user, and no test interaction (user, position) inside training
    assert split.test_targets.shape == (943,)
    counts = np.zeros(split.n_items, dtype=int)
    for train in split.train_sequences:
        np.add.at(counts, train, 1)
    assert np.array_equal(counts, split.train_counts)
    # strata cover every item exactly once
    assert set(np.unique(split.strata)) <= {"popular", "middle", "long_tail", "cold"}
    assert len(split.strata) == split.n_items
    assert np.all((split.strata == "cold") == (split.train_counts == 0))


@pytest.mark.parametrize("name", ["ml-100k-mm"])
def test_ranking_split_is_chronological(tmp_path, name):
    require_shared("movielens", "ml-100k")
    import polars as pl

    from recdata.config import DataConfig
    from recdata.stage import run

    run(cfg=DataConfig(dataset=name), run_dir=tmp_path)
    ratings = pl.read_parquet(tmp_path / "data" / "ratings.parquet")
    assert ratings.height == 100_000
    last_train = ratings.filter(pl.col("split") == "train")["timestamp"].max()
    first_test = ratings.filter(pl.col("split") == "test")["timestamp"].min()
    assert last_train <= first_test
    assert ratings.filter(pl.col("split") == "test").height == 10_000
    assert (ratings["label"] == (ratings["rating"] > 3).cast(pl.Int8)).all()
