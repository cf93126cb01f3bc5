"""The public API: ``Recommender`` over a trained run (what ``mmqrec recommend`` prints)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from recdata.errors import DataError
from mmqrec import Recommender, format_table
from test_ranker_stage import build_run, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ranking.stage import run

    run_dir = build_run(tmp_path_factory.mktemp("recommend"), seed=3)
    run(cfg=tiny_config(variants=["sid"], epochs=1), run_dir=run_dir, seed=0, device="cpu")
    return run_dir


def recommend(*, run_dir: Path, user_id: str, k: int = 10, exclude_seen: bool = True):
    return Recommender.load(run_dir, device="cpu").recommend([user_id], k=k, exclude_seen=exclude_seen)[0]


def _history(run_dir: Path, user_id: str) -> set[int]:
    users = pl.read_parquet(run_dir / "data" / "users.parquet")
    u = users.filter(pl.col("user_id") == user_id)["user_idx"][0]
    ratings = pl.read_parquet(run_dir / "data" / "ratings.parquet")
    return set(ratings.filter(pl.col("user_idx") == u)["item_idx"].to_list())


def _item_index(run_dir: Path) -> dict[str, int]:
    items = pl.read_parquet(run_dir / "data" / "items.parquet")
    return dict(zip(items["item_id"].to_list(), items["item_idx"].to_list()))


def test_recommend_excludes_seen_items_and_never_repeats(trained: Path) -> None:
    from tokenizer.sid import SemanticIds

    codes = SemanticIds.from_run_dir(trained).codes
    titles = pl.read_parquet(trained / "data" / "items.parquet").sort("item_idx")["title"].to_list()
    index = _item_index(trained)
    for user_id in ("0", "7", "19"):
        result = recommend(run_dir=trained, user_id=user_id, k=5)
        assert not result.fallback and result.variant == "sid"
        got = [index[it["item_id"]] for it in result.items]
        assert len(got) == 5 == len(set(got))
        assert not set(got) & _history(trained, user_id)
        scores = [it["score"] for it in result.items]
        assert scores == sorted(scores, reverse=True)
        for i, it in zip(got, result.items):
            assert it["semantic_id"] == codes[i].tolist() and it["title"] == titles[i]
        assert "seen items excluded" in result.message
        json.dumps(result.to_dict())


def test_keeping_seen_items_is_a_flag(trained: Path) -> None:
    index = _item_index(trained)
    # the candidates hold three seen items; with a long list some of them come back
    kept = recommend(run_dir=trained, user_id="4", k=15, exclude_seen=False)
    got = [index[it["item_id"]] for it in kept.items]
    assert len(got) == len(set(got))
    assert set(got) & _history(trained, "4")
    assert "seen items kept" in kept.message


def test_short_candidate_lists_are_topped_up_with_popular_unseen_items(trained: Path) -> None:
    index = _item_index(trained)
    result = recommend(run_dir=trained, user_id="2", k=30)
    got = [index[it["item_id"]] for it in result.items]
    assert len(got) == 30 == len(set(got))
    assert not set(got) & _history(trained, "2")
    assert "popular items appended" in result.message


def test_unknown_user_is_a_one_line_data_error(trained: Path) -> None:
    with pytest.raises(DataError) as info:
        recommend(run_dir=trained, user_id="no-such-user", k=10)
    assert "no-such-user" in str(info.value) and "\n" not in str(info.value)


def test_user_without_history_gets_a_labelled_popularity_fallback(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    path = run / "data" / "users.parquet"
    users = pl.read_parquet(path)
    new = {c: [None] for c in users.columns}
    new.update({"user_idx": [users.height], "user_id": ["newcomer"]})
    pl.concat([users, pl.DataFrame(new, schema=users.schema)]).write_parquet(path)

    result = recommend(run_dir=run, user_id="newcomer", k=4)
    assert result.fallback and "no history" in result.message and "popular" in result.message
    strata = pl.read_parquet(run / "data" / "strata.parquet")
    counts = dict(zip(strata["item_idx"].to_list(), strata["train_count"].to_list()))
    got = [_item_index(run)[it["item_id"]] for it in result.items]
    assert len(got) == 4
    assert [counts[i] for i in got] == sorted(counts.values(), reverse=True)[:4]


def test_format_table_shows_titles_scores_and_semantic_ids(trained: Path) -> None:
    result = recommend(run_dir=trained, user_id="1", k=3)
    text = format_table(result)
    lines = text.splitlines()
    assert lines[0].startswith("user 1:")
    assert len(lines) == 3 + 3
    first = result.items[0]
    assert first["title"][:20] in lines[3]
    assert "-".join(str(c) for c in first["semantic_id"]) in lines[3]
    assert f"{first['score']:.4f}" in lines[3]


def test_k_must_be_positive(trained: Path) -> None:
    rec = Recommender.load(trained, device="cpu")
    for bad in (0, -3, 2.5, True, rec.n_items + 1):
        with pytest.raises(DataError, match="k must be"):
            rec.recommend(["1"], k=bad)


def test_recommend_orders_candidates_by_the_stored_fusion_weight(trained: Path) -> None:
    import numpy as np

    from recdata.io import read_json
    from ranking.checkpoint import load_model
    from ranking.two_stage import fuse_scores, order_candidates, score_candidates

    alpha = read_json(trained / "ranker" / "config.json")["variants"]["sid"]["fusion_alpha"]
    model, _, cfg, _ = load_model(run_dir=trained, variant="sid")
    user_idx = 5
    user_id = pl.read_parquet(trained / "data" / "users.parquet").filter(pl.col("user_idx") == user_idx)["user_id"][0]
    rec = Recommender.load(trained, device="cpu")
    history, feedback = rec._histories[user_idx], rec._feedback[user_idx]
    cand = pl.read_parquet(trained / "retriever" / "candidates.parquet").filter(
        (pl.col("user_idx") == user_idx) & (pl.col("split") == "test"))
    items = np.asarray(cand["items"][0])[: cfg.candidates_n]
    retr = np.asarray(cand["scores"][0])[: cfg.candidates_n]
    probs = score_candidates(model=model, users=np.array([user_idx]), histories=[history], feedback=[feedback],
                             candidates=[items], history_len=cfg.history_len)[0]
    order_by = fuse_scores(retr, probs, alpha) if alpha < 1 else probs
    expect, _ = order_candidates(items, order_by, seen=history, k=4)
    result = recommend(run_dir=trained, user_id=user_id, k=4)
    index = _item_index(trained)
    assert [index[it["item_id"]] for it in result.items] == expect.tolist()
    for it, i in zip(result.items, expect.tolist()):
        assert it["p_like"] == pytest.approx(float(probs[list(items).index(i)]))


def test_batched_lists_equal_one_user_at_a_time(trained: Path) -> None:
    rec = Recommender.load(trained, device="cpu")
    users = rec.user_ids[:12]
    batched = rec.recommend(users, k=6)
    for user, result in zip(users, batched):
        alone = rec.recommend([user], k=6)[0]
        assert result.user_id == user
        assert [it["item_id"] for it in result.items] == [it["item_id"] for it in alone.items]
        assert [it["score"] for it in result.items] == pytest.approx([it["score"] for it in alone.items])


def test_ad_hoc_history_excludes_its_items_and_ranks_as_a_known_user(trained: Path) -> None:
    rec = Recommender.load(trained, device="cpu")
    history = [it["item_id"] for it in rec.history("3", last=5)]
    anonymous = rec.recommend_history(history, k=5)
    assert anonymous.user_id is None and len(anonymous.items) == 5
    assert not {it["item_id"] for it in anonymous.items} & set(history)
    assert all(it["p_like"] is None for it in anonymous.items)
    assert "no known user" in anonymous.message
    as_user = rec.recommend_history(history, k=5, user_id="3")
    assert all(it["p_like"] is not None for it in as_user.items)
    empty = rec.recommend_history([], k=4)
    assert empty.fallback and len(empty.items) == 4
    with pytest.raises(DataError, match="unknown item 'nope'"):
        rec.recommend_history(["nope"], k=3)
    with pytest.raises(DataError, match="list of ids"):
        rec.recommend_history("abc", k=3)


def test_history_and_item_lookups(trained: Path) -> None:
    rec = Recommender.load(trained, device="cpu")
    index = _item_index(trained)
    full = rec.history("4")
    assert {index[it["item_id"]] for it in full} == _history(trained, "4")
    assert rec.history("4", last=3) == full[-3:]
    first = full[0]
    assert rec.item(first["item_id"]) == first
    with pytest.raises(DataError, match="unknown item"):
        rec.item("missing")


def test_batch_export_writes_one_row_per_user_and_rank(trained: Path, tmp_path: Path) -> None:
    from mmqrec.export import export_recommendations

    users_file = tmp_path / "users.txt"
    users_file.write_text("# a subset\n2\n5\n\n9\n")
    out = tmp_path / "recs.parquet"
    summary = export_recommendations(run_dir=trained, out=out, k=4, users_file=users_file,
                                     chunk_size=2, device="cpu")
    frame = pl.read_parquet(out)
    assert summary["users"] == 3 and summary["rows"] == frame.height == 12
    assert frame["user_id"].to_list() == ["2"] * 4 + ["5"] * 4 + ["9"] * 4
    assert frame["rank"].to_list() == [1, 2, 3, 4] * 3
    rec = Recommender.load(trained, device="cpu")
    want = rec.recommend(["5"], k=4)[0]
    got = frame.filter(pl.col("user_id") == "5")
    assert got["item_id"].to_list() == [it["item_id"] for it in want.items]
    assert got["semantic_id"].to_list() == [it["semantic_id"] for it in want.items]
    users_file.write_text("2\nghost\n")
    with pytest.raises(DataError, match="unknown user 'ghost'"):
        export_recommendations(run_dir=trained, out=tmp_path / "x.parquet", k=4,
                               users_file=users_file, device="cpu")
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.timeout(300)
def test_batch_export_under_torchrun_shards_users_and_merges_in_order(trained: Path, tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "all.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMQREC_NO_PROGRESS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(port), "-m", "pipeline", "recommend", str(trained), "--all", "--out", str(out),
         "-k", "3", "--chunk-size", "5", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=280, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pl.read_parquet(out)
    rec = Recommender.load(trained, device="cpu")
    assert frame["user_id"].unique(maintain_order=True).to_list() == rec.user_ids
    assert frame.height == 3 * len(rec.user_ids)
    single = tmp_path / "one.parquet"
    from mmqrec.export import export_recommendations

    export_recommendations(run_dir=trained, out=single, k=3, chunk_size=5, device="cpu")
    assert pl.read_parquet(single).equals(frame)
    assert not list(tmp_path.glob("all.rank*"))  # the shards are merged and removed
