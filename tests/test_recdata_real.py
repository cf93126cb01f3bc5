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


def _ml100k_copy_with(tmp_path, extra_line: str):
    """A data root whose ml-100k.inter is the real one plus ``extra_line``; everything else
    is linked to the shared data, never copied."""
    src = require_shared("movielens", "ml-100k").parent
    root = tmp_path / "data"
    ml = root / "movielens"
    (ml / "ml-100k").mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name != "ml-100k":
            (ml / entry.name).symlink_to(entry)
    for entry in (src / "ml-100k").iterdir():
        if entry.name != "ml-100k.inter":
            (ml / "ml-100k" / entry.name).symlink_to(entry)
    text = (src / "ml-100k" / "ml-100k.inter").read_text()
    (ml / "ml-100k" / "ml-100k.inter").write_text(text.rstrip("\n") + "\n" + extra_line + "\n")
    return root, len(text.rstrip("\n").splitlines()) + 1


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("196\tnot-an-item\tx\tyesterday", "column 'timestamp' must be a number, got 'yesterday'"),
        ("196\t242\tnan\t881250949", "column 'rating' must be a finite number, got 'nan'"),
        ("196\t99999\t3\t881250949", "item_id '99999' is not in ml-100k.item"),
        ("196\t242\t3", "empty 'timestamp'"),
    ],
)
def test_ml100k_malformed_row_is_one_line_with_file_and_line(tmp_path, row, problem):
    root, line = _ml100k_copy_with(tmp_path, row)
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "data", "stats", "--dataset", "ml-100k-mm",
         "--data-root", str(root)], capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"ml-100k.inter, line {line}: {problem}" in lines[0]


def test_amazon_unknown_item_names_its_line(tmp_path):
    src = require_shared("amazon-beauty")
    root = tmp_path / "data"
    (root / "amazon-beauty").mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name != "sequences.txt":
            (root / "amazon-beauty" / entry.name).symlink_to(entry)
    text = (src / "sequences.txt").read_text().rstrip("\n")
    (root / "amazon-beauty" / "sequences.txt").write_text(text + "\nuser-x 1 no-such-item\n")
    from recdata import DataError

    with pytest.raises(DataError) as info:
        load_dataset(name="amazon-beauty", data_root=root)
    assert f"sequences.txt, line {len(text.splitlines()) + 1}: item 'no-such-item'" in str(info.value)
