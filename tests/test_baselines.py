"""Baselines: most-popular ranking and SASRec trained through RecBole on our exact split."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eval.baselines import run_baseline
from eval.config import EvalConfig, SASRecConfig
from recdata.metrics import ranking_metrics
from eval.popularity import popularity_ranking
from eval.ranked import read_ranked
from recdata.split import SequentialSplit
from recdata.topk import top_k_reference


def _split(sequences: list[list[int]], n_items: int) -> SequentialSplit:
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
    counts = np.bincount(np.concatenate([s[:-2] for s in seqs]), minlength=n_items)
    strata = np.where(counts == 0, "cold", np.where(counts >= np.median(counts[counts > 0]),
                                                    "popular", "long_tail"))
    return SequentialSplit(
        item_ids=[f"i{i}" for i in range(n_items)], user_ids=[f"u{u}" for u in range(len(seqs))],
        sequences=seqs, strata=strata.astype(str), train_counts=counts,
    )


def test_popularity_ranking_hand_computed():
    counts = np.array([3, 5, 5, 0, 1, 2])
    ranked, scores = popularity_ranking(train_counts=counts, n_users=2, depth=4)
    # 1 and 2 tie on 5: their order is the shared per-user hash, the rest by count.
    for row in ranked.tolist():
        assert sorted(row[:2]) == [1, 2] and row[2:] == [0, 5]
    assert scores[0].tolist() == [5, 5, 3, 2]
    ranked, _ = popularity_ranking(
        train_counts=counts, n_users=2, depth=5, exclude=[np.array([2, 5]), np.array([], int)]
    )
    assert ranked[0].tolist() == [1, 0, 4, 3, -1]
    assert sorted(ranked[1, :2].tolist()) == [1, 2] and ranked[1, 2:].tolist() == [0, 5, 4]


def test_pop_baseline_writes_metrics_and_reuses_them(tmp_path):
    from recdata.synthetic import write_synthetic_run_data

    write_synthetic_run_data(tmp_path, n_users=40, n_items=30, with_images=False)
    split = SequentialSplit.from_run_dir(tmp_path)
    cfg = EvalConfig(baselines=["pop"], bootstrap_samples=50)
    res = run_baseline(name="pop", split=split, cfg=cfg, run_dir=tmp_path)
    out = tmp_path / "baselines" / "pop"
    ranked, missing = read_ranked(out / "ranked.parquet", n_users=split.n_users, depth=20)
    assert missing == 0
    want, _ = top_k_reference(np.tile(split.train_counts.astype(float), (split.n_users, 1)), k=20)
    assert ranked.tolist() == want.tolist()
    assert (np.diff(split.train_counts[ranked], axis=1) <= 0).all()
    hit10 = np.mean([t in row[:10] for t, row in zip(split.test_targets, ranked)])
    assert res["overall"]["recall@10"] == pytest.approx(hit10)
    assert set(res["strata"]) == {"popular", "middle", "long_tail", "cold"}
    assert res["ci"]["overall"]["recall@10"][0] <= hit10 <= res["ci"]["overall"]["recall@10"][1]

    stamp = (out / "metrics.json").stat().st_mtime_ns
    again = run_baseline(name="pop", split=split, cfg=cfg, run_dir=tmp_path)
    assert again == res and (out / "metrics.json").stat().st_mtime_ns == stamp
    excl = EvalConfig(baselines=["pop"], bootstrap_samples=50, exclude_history=True)
    res_ex = run_baseline(name="pop", split=split, cfg=excl, run_dir=tmp_path)
    assert res_ex["key"] != res["key"]
    ranked_ex, _ = read_ranked(out / "ranked.parquet", n_users=split.n_users, depth=20)
    for user, row in enumerate(ranked_ex):
        assert not np.isin(row, split.test_inputs[user]).any()


def test_sasrec_export_rows_follow_split(tmp_path):
    from eval.recbole_sasrec import DATASET, export_atomic_files

    split = _split([[0, 1, 2, 3, 4, 5], [5, 4, 3]], n_items=7)
    rows = export_atomic_files(split=split, data_path=tmp_path, max_seq_length=2)
    assert rows == {"train_rows": 3 + 0, "valid_rows": 2, "test_rows": 2}
    folder = tmp_path / DATASET
    train = (folder / f"{DATASET}.train.inter").read_text().splitlines()
    assert train[0] == "user_id:token\titem_id_list:token_seq\titem_id:token"
    # prefixes of s[:-2] = [0, 1, 2, 3], truncated to the last 2 items
    assert train[1:] == ["0\t0\t1", "0\t0 1\t2", "0\t1 2\t3"]
    assert (folder / f"{DATASET}.valid.inter").read_text().splitlines()[1:] == [
        "0\t2 3\t4", "1\t5\t4"]
    assert (folder / f"{DATASET}.test.inter").read_text().splitlines()[1:] == [
        "0\t3 4\t5", "1\t5 4\t3"]
    assert (folder / f"{DATASET}.item").read_text().split() == ["item_id:token"] + [
        str(i) for i in range(7)]
    rows = export_atomic_files(split=split, data_path=tmp_path, max_seq_length=2,
                               max_train_prefixes=2)
    assert rows["train_rows"] == 2
    assert (folder / f"{DATASET}.train.inter").read_text().splitlines()[1:] == [
        "0\t0 1\t2", "0\t1 2\t3"]


@pytest.mark.slow
def test_sasrec_through_recbole_uses_our_split_and_metrics(tmp_path, monkeypatch, caplog):
    from eval.recbole_sasrec import train_and_rank

    caplog.set_level(logging.INFO)

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rng = np.random.default_rng(0)
    n_items = 12
    sequences = [list(rng.permutation(10)[: rng.integers(4, 9)]) for _ in range(30)]
    sequences[0] = sequences[0] + [11]  # item 11 is only ever a test target (cold)
    sequences[1] = sequences[1] + [10]
    split = _split(sequences, n_items)
    assert split.strata[11] == "cold" and split.strata[10] == "cold"

    argv, level = list(sys.argv), logging.getLogger().level
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    cfg = SASRecConfig(epochs=2, hidden_size=16, inner_size=32, n_layers=1, max_seq_length=5,
                       train_batch_size=32)
    kwargs = dict(split=split, cfg=cfg, ks=[5, 10], depth=n_items, seed=3, device="cpu")
    lists, info = train_and_rank(work_dir=tmp_path / "a", **kwargs)
    ranked, scores = lists[False]

    # RecBole's test rows are exactly our users, histories (truncated) and targets.
    assert info["split_check"]["test_users"] == split.n_users
    # Full-catalogue lists: every item, cold ones included, is scored and ranked.
    assert sorted(ranked[0].tolist()) == list(range(n_items))
    assert (np.diff(scores, axis=1) <= 0).all()
    ours = ranking_metrics(ranked=ranked, targets=split.test_targets, ks=(5, 10))["overall"]
    for k in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
        assert ours[k] == pytest.approx(info["recbole_test"][k], abs=1e-6), k

    # RecBole's process-wide side effects are undone and nothing lands in the cwd.
    assert sys.argv == argv and logging.getLogger().level == level
    assert not logging.getLogger().filters
    # RecBole's INFO chatter (logged on the root logger) is silenced; ours still comes through.
    assert not [r for r in caplog.records if r.name == "root" and r.levelno < logging.WARNING]
    assert any(r.name == "eval.recbole_sasrec" and "epoch" in r.getMessage()
               for r in caplog.records)
    assert len(info["epoch_log"]) == 2
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == cuda
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "a" / "model.safetensors").exists()
    assert not list((tmp_path / "a").rglob("*.pth"))

    # The protocol with history items removed ranks the same scores: the kept list without
    # the user's history items, in the same order.
    removed, _ = lists[True]
    for user, history in enumerate(split.test_inputs):
        kept = [i for i in ranked[user] if i not in set(history)]
        assert removed[user, : len(kept)].tolist() == kept
        assert not set(removed[user].tolist()) & set(history)

    again, _ = train_and_rank(work_dir=tmp_path / "b", **kwargs)
    assert np.array_equal(ranked, again[False][0])  # same seed → same lists


@pytest.mark.slow
def test_sasrec_baseline_stage_entry(tmp_path):
    from recdata.synthetic import write_synthetic_run_data

    write_synthetic_run_data(tmp_path, n_users=40, n_items=30, with_images=False)
    split = SequentialSplit.from_run_dir(tmp_path)
    cfg = EvalConfig(baselines=["sasrec"], bootstrap_samples=50,
                     sasrec=SASRecConfig(epochs=1, hidden_size=16, inner_size=32, n_layers=1))
    res = run_baseline(name="sasrec", split=split, cfg=cfg, run_dir=tmp_path, device="cpu")
    frame = pl.read_parquet(tmp_path / "baselines" / "sasrec" / "ranked.parquet")
    assert frame.height == split.n_users and frame["items"].list.len().min() == 20
    assert res["overall"]["users"] == split.n_users
    assert res["info"]["split_check"]["test_users"] == split.n_users
    assert (tmp_path / "baselines" / "sasrec" / "recbole_data").is_dir()


def test_drop_seen_filters_stored_lists_and_counts_short_ones():
    from eval.ranked import drop_seen

    ranked = np.array([[5, 3, 9, 1, -1], [2, 4, 6, 8, 0]])
    lists, short = drop_seen(ranked, [np.array([3, 1]), np.array([7])], depth=3)
    assert lists.tolist() == [[5, 9, -1], [2, 4, 6]]
    assert short == 1
