"""The train-ranker stage end to end on a small synthetic run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recdata.errors import DataError
from recdata.io import read_json
from ranking.config import RankerConfig

STRATA = {"popular", "middle", "long_tail", "cold"}


def tiny_config(**overrides) -> RankerConfig:
    values = dict(
        embedding_dim=8, hidden_sizes=[16], attention_hidden=8, history_len=8, epochs=2, batch_size=64,
        candidates_n=16, cpu_threads=1,
    )
    values.update(overrides)
    return RankerConfig(**values)


def build_run(root: Path, *, seed: int = 0, n_users: int = 40) -> Path:
    """Synthetic data + structured SIDs (tokenizer API) + retriever-style candidates."""
    from recdata.split import SequentialSplit
    from recdata.synthetic import write_synthetic_run_data
    from tokenizer.sid import SemanticIds, resolve_collisions

    run = root / "run"
    write_synthetic_run_data(run, n_users=n_users, n_items=48, seed=seed, with_images=False)
    items = pl.read_parquet(run / "data" / "items.parquet").sort("item_idx")
    n = items.height
    idx = np.arange(n)
    codes, stats = resolve_collisions(np.stack([idx % 6, (idx // 6) % 3], axis=1))
    SemanticIds(
        codes=codes, codebook_sizes=[6, 3, stats["collision_codebook_size"]], item_ids=items["item_id"].to_list()
    ).save(run)
    split = SequentialSplit.from_run_dir(run)
    rng = np.random.default_rng(seed)
    rows = {"user_idx": [], "split": [], "items": [], "scores": []}
    for u, seq in enumerate(split.sequences):
        for name, target, hist in (("valid", seq[-2], seq[:-2]), ("test", seq[-1], seq[:-1])):
            cand = [int(x) for x in rng.choice(n, 11, replace=False)] + [int(target), int(hist[0]), int(hist[-1])]
            cand.insert(2, cand[0])  # a repeated candidate must appear once
            rows["user_idx"].append(u)
            rows["split"].append(name)
            rows["items"].append(cand)
            rows["scores"].append(sorted(rng.normal(size=len(cand)).tolist(), reverse=True))
    (run / "retriever").mkdir()
    pl.DataFrame(rows, schema={"user_idx": pl.Int64, "split": pl.String, "items": pl.List(pl.Int64),
                               "scores": pl.List(pl.Float64)}).write_parquet(run / "retriever" / "candidates.parquet")
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ranking.stage import run

    run_dir = build_run(tmp_path_factory.mktemp("ranker"))
    summary = run(cfg=tiny_config(), run_dir=run_dir, seed=0, device="cpu")
    assert set(summary) >= {"itemid", "sid", "seconds"}
    return run_dir


def test_stage_writes_contract_artefacts(trained: Path) -> None:
    out = trained / "ranker"
    for name in ("model_itemid.safetensors", "model_sid.safetensors", "config.json", "metrics.json",
                 "two_stage_ranked.parquet"):
        assert (out / name).exists(), name
    metrics = read_json(out / "metrics.json")
    for model in ("ranker_itemid", "ranker_sid"):
        assert set(metrics[model]) == {"overall", "strata"}
        assert {"auc", "gauc", "logloss"} <= set(metrics[model]["overall"])
        assert set(metrics[model]["strata"]) == STRATA
        for value in (metrics[model]["overall"]["auc"], metrics[model]["overall"]["gauc"]):
            assert 0.0 <= value <= 1.0
    two = metrics["two_stage"]
    assert {"protocol", "retriever_only", "ranker_itemid", "ranker_sid"} <= set(two)
    assert two["protocol"]["candidates_n"] == 16 and two["protocol"]["exclude_seen"] is False
    assert {"recall@10", "ndcg@10", "mrr"} <= set(two["ranker_sid"]["overall"])
    assert metrics["data"]["train_rows_held_out_for_two_stage"] > 0
    saved = read_json(out / "config.json")
    assert saved["variants"]["sid"]["spec"]["field_names"] == ["sid_0", "sid_1", "sid_2"]
    assert saved["variants"]["itemid"]["spec"]["field_names"] == ["itemid"]
    assert saved["serve_variant"] == "sid"


def test_reloaded_checkpoint_reproduces_the_test_metrics(trained: Path) -> None:
    from ranking.checkpoint import load_model
    from recdata.metrics import ctr_metrics
    from ranking.features import build_ctr_data
    from ranking.train import predict

    metrics = read_json(trained / "ranker" / "metrics.json")
    data = build_ctr_data(run_dir=trained)
    rows = data.examples.rows("test")
    ex = data.examples
    for variant in ("itemid", "sid"):
        model, spec, cfg, name = load_model(run_dir=trained, variant=variant)
        assert name == variant and spec["item_repr"] == variant
        probs = predict(model, data, rows, history_len=cfg.history_len, device="cpu")
        again = ctr_metrics(users=ex.user[rows], items=ex.item[rows], labels=ex.label[rows], probs=probs, strata=data.strata)
        assert again["overall"]["auc"] == pytest.approx(metrics[f"ranker_{variant}"]["overall"]["auc"], abs=1e-12)
        assert again["overall"]["logloss"] == pytest.approx(metrics[f"ranker_{variant}"]["overall"]["logloss"], abs=1e-12)


def test_same_seed_gives_the_same_outputs(trained: Path, tmp_path: Path) -> None:
    from ranking.stage import run

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("ranker"))
    run(cfg=tiny_config(), run_dir=copy, seed=0, device="cpu")
    a = read_json(trained / "ranker" / "metrics.json")
    b = read_json(copy / "ranker" / "metrics.json")
    for key in ("ranker_itemid", "ranker_sid", "two_stage"):
        assert a[key] == b[key]
    from recdata.io import load_tensor_metadata, load_tensors

    # compare tensors, not bytes: safetensors does not fix the order of its JSON header
    first = load_tensors(trained / "ranker" / "model_sid.safetensors")
    second = load_tensors(copy / "ranker" / "model_sid.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert load_tensor_metadata(trained / "ranker" / "model_sid.safetensors") == load_tensor_metadata(
        copy / "ranker" / "model_sid.safetensors"
    )


def _test_inputs(trained: Path):
    from recdata.split import SequentialSplit
    from ranking.checkpoint import load_model
    from ranking.features import build_ctr_data
    from ranking.stage import read_candidates
    from ranking.two_stage import FeedbackLookup

    split = SequentialSplit.from_run_dir(trained)
    users, cands, retr = read_candidates(trained, split="test", n=16)
    model, _, cfg, _ = load_model(run_dir=trained, variant="sid")
    data = build_ctr_data(run_dir=trained)
    lookup = FeedbackLookup.from_store(data.examples.user, data.examples.item, data.examples.label, data.n_items)
    histories = [split.test_inputs[u] for u in users]
    feedback = [lookup(u, h) for u, h in zip(users, histories)]
    return model, cfg, users, cands, retr, histories, feedback


def test_batched_rerank_matches_the_one_pair_at_a_time_oracle(trained: Path) -> None:
    from ranking.two_stage import rerank, rerank_reference

    model, cfg, users, cands, _, histories, feedback = _test_inputs(trained)
    common = dict(model=model, users=users, histories=histories, feedback=feedback, candidates=cands,
                  history_len=cfg.history_len, exclude_seen=True)
    ranked, scores = rerank(**common)
    reference = rerank_reference(**common)
    for row, (cand, hist, ref) in enumerate(zip(cands, histories, reference)):
        items = ranked[row].tolist()
        oracle = dict(ref)  # item -> the oracle's own logit, one forward per pair
        assert len(items) == len(set(items))
        assert set(items) == set(cand.tolist()) - set(hist.tolist()) == set(oracle)
        assert scores[row].tolist() == sorted(scores[row].tolist(), reverse=True)
        # The batched order is the oracle's order, up to float noise between near-equal logits.
        assert all(oracle[a] >= oracle[b] - 1e-6 for a, b in zip(items, items[1:]))


def test_rankers_learn_what_a_popularity_score_cannot_see(tmp_path: Path) -> None:
    """Synthetic users like one cluster and dislike another: a CTR model that learned nothing
    (or only item popularity) scores AUC ~0.5 on the test rows; the trained ones must not."""
    from ranking.features import build_ctr_data
    from ranking.stage import run
    from recdata.metrics import auc

    run_dir = build_run(tmp_path, seed=0, n_users=200)
    run(cfg=tiny_config(epochs=30, patience=30, lr=0.01, batch_size=64), run_dir=run_dir, seed=0,
        device="cpu")
    metrics = read_json(run_dir / "ranker" / "metrics.json")
    data = build_ctr_data(run_dir=run_dir)
    ex, test, train = data.examples, data.examples.rows("test"), data.examples.rows("train")
    liked_counts = np.bincount(ex.item[train][ex.label[train] > 0.5], minlength=data.n_items)
    popularity = auc(ex.label[test].astype(int), liked_counts[ex.item[test]].astype(float))
    for variant in ("ranker_itemid", "ranker_sid"):
        assert metrics[variant]["overall"]["auc"] > max(0.65, popularity + 0.1), (variant, popularity)


def test_served_two_stage_lists_use_the_validation_tuned_fusion(trained: Path) -> None:
    from ranking.two_stage import fuse_scores, order_candidates, score_candidates

    model, cfg, users, cands, retr, histories, feedback = _test_inputs(trained)
    metrics = read_json(trained / "ranker" / "metrics.json")["two_stage"]
    fusion = metrics["protocol"]["fusion_sid"]
    scan = {float(a): v for a, v in fusion["valid_ndcg@10"].items()}
    assert set(scan) == {round(0.1 * i, 1) for i in range(11)}
    assert fusion["alpha"] == max(scan, key=lambda a: (scan[a], -a))
    assert read_json(trained / "ranker" / "config.json")["variants"]["sid"]["fusion_alpha"] == fusion["alpha"]
    assert metrics["protocol"]["ranked_file_alpha"] == fusion["alpha"]
    ranked = pl.read_parquet(trained / "ranker" / "two_stage_ranked.parquet").sort("user_idx")
    assert ranked["user_idx"].to_list() == users.tolist()
    probs = score_candidates(model=model, users=users, histories=histories, feedback=feedback, candidates=cands,
                             history_len=cfg.history_len)
    for row, (cand, hist) in enumerate(zip(cands, histories)):
        # The evaluation protocol here keeps seen items (ranker.exclude_seen follows
        # eval.exclude_history, off by default).
        fused = fuse_scores(retr[row], probs[row], fusion["alpha"])
        expect, _ = order_candidates(cand, fused, seen=None)
        score = {int(i): float(f) for i, f in reversed(list(zip(cand.tolist(), fused)))}
        got = ranked["items"][row].to_list()
        assert len(got) == min(len(expect), 20) and set(got) <= set(expect.tolist())
        # Ordered by the fused score. Batching moves a logit by float noise (~1e-5 here, where the
        # barely trained model's logits are nearly equal), which the standardisation divides by
        # the logits' spread: allow exactly that much.
        p = np.clip(probs[row], 1e-12, 1 - 1e-12)
        spread = max(float(np.std(np.log(p) - np.log1p(-p))), 1e-12)
        tol = 1e-6 + fusion["alpha"] * 1e-4 / spread
        assert all(score[a] >= score[b] - tol for a, b in zip(got, got[1:]))


def test_fusion_weight_ends_are_the_two_single_orders() -> None:
    from ranking.two_stage import fuse_scores

    retr = np.array([-1.0, -2.0, -3.0, -4.0])
    probs = np.array([0.2, 0.9, 0.5, 0.7])
    assert np.argsort(-fuse_scores(retr, probs, 1.0)).tolist() == [1, 3, 2, 0]
    assert np.argsort(-fuse_scores(retr, probs, 0.0)).tolist() == [0, 1, 2, 3]
    # standardised: an affine change of the retriever's scale changes nothing
    np.testing.assert_allclose(fuse_scores(retr, probs, 0.4), fuse_scores(10 * retr + 3, probs, 0.4))
    assert np.isfinite(fuse_scores(np.array([-1.0, -np.inf]), np.array([0.5, 0.5]), 0.5)).all()


def test_retriever_only_baseline_follows_the_same_protocol(trained: Path) -> None:
    from recdata.metrics import ranking_metrics
    from recdata.split import SequentialSplit
    from ranking.stage import read_candidates

    split = SequentialSplit.from_run_dir(trained)
    users, cands, _ = read_candidates(trained, split="test", n=16)
    lists = np.full((len(users), 20), -1)
    for row, (u, cand) in enumerate(zip(users, cands)):
        kept = list(dict.fromkeys(int(i) for i in cand))[:20]  # seen items kept, as the ranker's
        lists[row, : len(kept)] = kept
    expect = ranking_metrics(ranked=lists, targets=split.test_targets[users], strata=split.strata)
    got = read_json(trained / "ranker" / "metrics.json")["two_stage"]["retriever_only"]
    assert got["overall"] == pytest.approx(expect["overall"])


def test_itemid_only_needs_no_tokenizer_and_sid_without_one_is_a_data_error(trained: Path, tmp_path: Path) -> None:
    from ranking.stage import run

    copy = tmp_path / "noid"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("ranker", "tokenizer", "retriever"))
    summary = run(cfg=tiny_config(variants=["itemid"], epochs=1), run_dir=copy, seed=0, device="cpu")
    assert set(summary) == {"itemid", "seconds"}
    metrics = read_json(copy / "ranker" / "metrics.json")
    assert "skipped" in metrics["two_stage"]
    assert read_json(copy / "ranker" / "config.json")["serve_variant"] == "itemid"
    with pytest.raises(DataError, match="semantic_ids.parquet"):
        run(cfg=tiny_config(variants=["sid"], epochs=1), run_dir=copy, seed=0, device="cpu")


def test_bad_config_is_a_data_error() -> None:
    with pytest.raises(DataError, match="item_repr"):
        RankerConfig(item_repr="title")
    with pytest.raises(DataError, match="variants"):
        RankerConfig(variants=["itemid", "itemid"])
    with pytest.raises(DataError, match="unknown ranker model"):
        from ranking.stage import run

        run(cfg=RankerConfig(model="xgboost"), run_dir=Path("/nonexistent"), seed=0, device="cpu")


def test_implicit_dataset_trains_on_sampled_negatives(trained: Path, tmp_path: Path) -> None:
    from ranking.stage import run

    copy = tmp_path / "implicit"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("ranker"))
    path = copy / "data" / "ratings.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("rating"), pl.lit(1, dtype=pl.Int8).alias("label")).write_parquet(path)
    run(cfg=tiny_config(epochs=1, negatives_per_positive=2), run_dir=copy, seed=0, device="cpu")
    metrics = read_json(copy / "ranker" / "metrics.json")
    assert metrics["data"]["implicit"] is True
    assert metrics["data"]["sampled_negatives"] == 2 * frame.height - metrics["data"]["negatives_dropped_no_unseen_item"]
    test = metrics["ranker_sid"]["overall"]
    assert 0 < test["positives"] < test["impressions"] and test["auc"] is not None
