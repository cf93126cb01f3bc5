"""Loading, validation, splits and strata on data the tests write themselves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recdata import DataError, load_dataset
from recdata.config import DataConfig
from recdata.prepare import kcore_filter, prepare
from recdata.split import SequentialSplit
from recdata.strata import popularity_strata
from tests.conftest import REPO_ROOT


def write_custom(folder: Path, *, items: str, interactions: str, users: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text(items)
    (folder / "interactions.csv").write_text(interactions)
    if users is not None:
        (folder / "users.csv").write_text(users)
    return folder


GOOD_ITEMS = "item_id,title,genre,image\na,Alpha,drama,a.png\nb,Beta,comedy,\nc,,horror,missing.png\n"
GOOD_LOG = "user_id,item_id,timestamp,rating\nu1,a,10,5\nu1,b,20,3\nu1,c,20,4\nu2,b,5,2\nu2,a,6,4\nu2,c,7,5\n"


def test_custom_dataset_loads_and_counts_missing_images(tmp_path):
    from PIL import Image

    folder = write_custom(tmp_path / "d", items=GOOD_ITEMS, interactions=GOOD_LOG)
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    ds = load_dataset(name="custom", path=folder)
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 6)
    assert stats["items_with_image"] == 1
    assert stats["skipped"] == {"image_files_missing": 1}
    assert ds.text_fields == ("title", "genre")
    assert stats["items_with_text"] == 3  # item c has no title but has a genre


def test_ties_in_time_keep_file_order(tmp_path):
    folder = write_custom(tmp_path / "d", items=GOOD_ITEMS, interactions=GOOD_LOG)
    prepare(dataset=load_dataset(name="custom", path=folder), cfg=DataConfig(dataset="custom"), run_dir=tmp_path / "run")
    split = SequentialSplit.from_run_dir(tmp_path / "run")
    by_user = dict(zip(split.user_ids, split.sequences))
    ids = split.item_ids
    # u1 saw b and c at the same second; b comes first in the file, so c is the test item.
    assert [ids[i] for i in by_user["u1"]] == ["a", "b", "c"]
    assert [ids[i] for i in by_user["u2"]] == ["b", "a", "c"]


def test_image_outside_folder_only_when_opted_in(tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"not really a jpeg")
    folder = write_custom(tmp_path / "d", items=f"item_id,title,image\na,A,{outside}\nb,B,\nc,C,\n",
                          interactions=GOOD_LOG)
    with pytest.raises(DataError, match="leaves the dataset folder"):
        load_dataset(name="custom", path=folder)
    ds = load_dataset(name="custom", path=folder, images_outside_folder=True)
    assert ds.items.filter(pl.col("item_id") == "a")["image_path"][0] == str(outside.resolve())


@pytest.mark.parametrize(
    ("items", "log", "message"),
    [
        (GOOD_ITEMS, "user_id,timestamp\nu1,1\n", "missing required column 'item_id'"),
        (GOOD_ITEMS, "user_id,item_id,timestamp\nu1,a,1\nu1,b,yesterday\n", "line 3: column 'timestamp' must be an integer"),
        (GOOD_ITEMS, "user_id,item_id,rating\nu1,a,5\nu1,b,great\n", "line 3: column 'rating' must be a number"),
        (GOOD_ITEMS, "user_id,item_id,rating\nu1,a,5\nu1,b,nan\n", "line 3: column 'rating' must be a finite number"),
        (GOOD_ITEMS, "user_id,item_id,rating\nu1,a,-inf\nu1,b,4\n", "line 2: column 'rating' must be a finite number"),
        ("item_id,title,image\na,A,\nb,B,../../../../etc/passwd\nc,C,\n", GOOD_LOG,
         "line 3: image path '../../../../etc/passwd' leaves the dataset folder"),
        ("item_id,title,image\na,A,/etc/hostname\nb,B,\nc,C,\n", GOOD_LOG,
         "line 2: image path '/etc/hostname' leaves the dataset folder"),
        (GOOD_ITEMS, "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu1,a,1\n", "line 4: duplicate interaction"),
        (GOOD_ITEMS, "user_id,item_id,timestamp\nu1,a,1\nu1,zz,2\n", "line 3: item_id 'zz' is not in items.csv"),
        ("item_id,title\na,A\na,B\n", GOOD_LOG, "line 3: duplicate item_id 'a'"),
        ("item_id,title,image_path\na,A,a.jpg\nb,B,\nc,C,\n", GOOD_LOG,
         "column 'image_path' is reserved: name the image column 'image'"),
        (GOOD_ITEMS, "user_id,item_id,timestamp\nu1,a,1\n,b,2\n", "line 3: empty 'user_id'"),
    ],
)
def test_malformed_custom_files_name_file_row_and_problem(tmp_path, items, log, message):
    folder = write_custom(tmp_path / "d", items=items, interactions=log)
    with pytest.raises(DataError) as info:
        load_dataset(name="custom", path=folder)
    text = str(info.value)
    assert message in text
    assert ".csv" in text
    assert "\n" not in text


def test_cli_reports_bad_file_on_one_line_without_traceback(tmp_path):
    folder = write_custom(tmp_path / "d", items=GOOD_ITEMS, interactions="user_id,item_id\nu1,nope\n")
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "data", "stats", "--dataset", "custom", "--path", str(folder)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "interactions.csv, line 2" in lines[0] and "'nope'" in lines[0]


def test_failed_load_writes_nothing(tmp_path):
    from recdata.stage import run

    folder = write_custom(tmp_path / "d", items=GOOD_ITEMS, interactions="user_id,item_id\nu1,nope\n")
    with pytest.raises(DataError):
        run(cfg=DataConfig(dataset="custom", path=str(folder)), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "data").exists()


def test_kcore_is_iterated_until_stable():
    frame = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3"],
            "item_id": ["a", "b", "a", "b", "c"],
        }
    )
    out = kcore_filter(frame, k=2)
    assert sorted(out["item_id"].to_list()) == ["a", "a", "b", "b"]
    assert kcore_filter(frame, k=3).height == 0


def test_title_year_matching_is_unique_or_nothing():
    from recdata.movielens import match_by_title_year

    movies = [
        ("260", "Star Wars: Episode IV - A New Hope", "1977", "Sci-Fi"),
        ("1196", "Star Wars: Episode V - The Empire Strikes Back", "1980", "Sci-Fi"),
        ("1", "Twin Film", "1990", "Drama"),
        ("2", "Twin Film", "1990", "Comedy"),
    ]
    found = match_by_title_year(
        [("50", "Star Wars", "1977"), ("172", "Empire Strikes Back, The", "1980"),
         ("9", "Twin Film", "1990"), ("10", "Star Wars", "1978"), ("11", "Star Wars", None)],
        movies,
    )
    assert found == {"50": "260", "172": "1196"}


def test_popularity_strata_shares_and_cold():
    counts = np.array([10, 9, 8, 7, 6, 5, 4, 3, 0, 0])
    strata = popularity_strata(counts, popular_share=0.25, long_tail_share=0.25)
    assert list(strata[:2]) == ["popular", "popular"]
    assert list(strata[6:8]) == ["long_tail", "long_tail"]
    assert list(strata[8:]) == ["cold", "cold"]
    assert set(strata[2:6]) == {"middle"}


def test_synthetic_split_invariants(synthetic_run):
    split = SequentialSplit.from_run_dir(synthetic_run)
    assert split.n_users == 50 and split.n_items == 60
    for seq in split.sequences:
        assert seq[-1] == split.test_targets[split.sequences.index(seq)] if False else True
    assert np.array_equal(split.test_targets, np.array([s[-1] for s in split.sequences]))
    assert np.array_equal(split.valid_targets, np.array([s[-2] for s in split.sequences]))
    counts = np.zeros(split.n_items, dtype=int)
    for train in split.train_sequences:
        np.add.at(counts, train, 1)
    assert np.array_equal(counts, split.train_counts)


def test_cold_item_protocol_keeps_items_out_of_training(tmp_path):
    from recdata.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(n_users=80, n_items=60, seed=1, with_images=False)
    prepare(dataset=ds, cfg=DataConfig(dataset="synthetic", cold_item_share=0.2), run_dir=tmp_path, seed=3)
    split = SequentialSplit.from_run_dir(tmp_path)
    held = pl.read_parquet(tmp_path / "data" / "strata.parquet")["cold_holdout"].to_numpy()
    assert held.sum() == 12
    for seq in split.sequences:
        assert not held[seq[:-2]].any()  # never in a training sequence
    assert (split.strata[held] == "cold").all()
    # validation targets hold them too, so the channel for new items can be fitted on them
    assert held[split.test_targets].any() and held[split.valid_targets].any()


def test_prepare_is_deterministic(tmp_path):
    from recdata.synthetic import write_synthetic_run_data

    write_synthetic_run_data(tmp_path / "a", with_images=False, seed=5)
    write_synthetic_run_data(tmp_path / "b", with_images=False, seed=5)
    for name in ("sequences", "strata", "ratings", "items"):
        a = pl.read_parquet(tmp_path / "a" / "data" / f"{name}.parquet")
        b = pl.read_parquet(tmp_path / "b" / "data" / f"{name}.parquet")
        assert a.equals(b), name


def test_ml100k_falls_back_to_recbole_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("MMQREC_DATA", str(tmp_path / "nowhere"))
    ds = load_dataset(name="ml-100k-mm", data_root=tmp_path / "nowhere")
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    assert stats["items_with_image"] == 0
    assert stats["items_with_text"] == 1681
    assert any("recbole" in w for w in stats["warnings"])
