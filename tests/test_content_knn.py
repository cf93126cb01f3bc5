"""The ``content_knn`` baseline: content-only nearest neighbours of the recent history over the
whole catalogue, ``score(j) = sum_{h<H} decay^h * max(0, cos(recent_h, j))``, H and decay fitted
on validation users; it can recommend items never seen in training, most-popular cannot."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from eval.baselines import baseline_key, run_baseline
from eval.config import ContentKnnConfig, EvalConfig
from eval.heuristic import fit_heuristic
from eval.stage import run as evaluate
from recdata.errors import DataError
from recdata.io import save_tensors, write_parquet
from recdata.layout import layout
from recdata.split import SequentialSplit
from recdata.strata import popularity_strata
from recdata.topk import top_k_reference

# Decays of 1/2 and 1 keep every score an exact binary fraction (cosines are multiples of 1/8),
# so the oracle's float64 scores and the baseline's half-precision cosines agree to the bit
# and the many exact ties are ordered by the shared hash alone.
EXACT = ContentKnnConfig(content_history=[1, 2, 3, 5], content_decay=[0.5, 1.0], rounds=2,
                         fit_users=0)


def _signed_embeddings(run_dir, n_items: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Text and image vectors of four entries +-1 (mostly +1) in eight dimensions: per-modality
    cosines are multiples of 1/4, some negative; every third item has no image."""
    rng = np.random.default_rng(seed)
    out = {}
    for modality in ("text", "image"):
        emb = np.zeros((n_items, 8), np.float32)
        for i in range(n_items):
            emb[i, rng.choice(8, size=4, replace=False)] = rng.choice([1.0, 1.0, -1.0], size=4)
        mask = np.ones(n_items, bool) if modality == "text" else np.arange(n_items) % 3 != 0
        save_tensors(layout(run_dir).embeddings(modality), {"embeddings": emb, "mask": mask})
        out[modality] = (emb, mask)
    return out


def _oracle_scores(embeddings, histories, *, history: int, decay: float) -> np.ndarray:
    """``[U, N]`` scores by the formula, in float64: the mean over the modalities of each
    item pair's cosine (0 where either lacks the modality), clipped at 0, summed over the
    ``history`` most recent items with weights ``decay**h``; a recent item adds nothing to
    itself."""
    cos = 0.0
    for emb, mask in embeddings.values():
        unit = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
        cos = cos + (unit @ unit.T) * np.outer(mask, mask)
    cos = np.maximum(cos / len(embeddings), 0.0)
    out = np.zeros((len(histories), len(cos)))
    for u, hist in enumerate(histories):
        for h, item in enumerate([int(i) for i in hist][::-1][:history]):
            sim = cos[item].copy()
            sim[item] = 0.0
            out[u] += decay ** h * sim
    return out


def _ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based place of each target in its row's full tie-broken sort."""
    ranked, _ = top_k_reference(scores, k=scores.shape[1])
    return np.array([int(np.flatnonzero(row == t)[0]) for row, t in zip(ranked, targets)])


def test_lists_and_fit_match_a_brute_force_oracle(tmp_path):
    from recdata.synthetic import write_synthetic_run_data

    write_synthetic_run_data(tmp_path, n_users=30, n_items=24, with_images=False)
    split = SequentialSplit.from_run_dir(tmp_path)
    embeddings = _signed_embeddings(tmp_path, split.n_items, seed=1)
    lists, info = fit_heuristic(split=split, run_dir=tmp_path, cfg=EXACT.as_heuristic(),
                                exclude_history=False, depth=split.n_items, name="content_knn")

    # Every trial is content alone, and its validation NDCG@10 is the oracle's.
    assert info["rule"].startswith("sum_{h<H} decay^h*max(0,cos(recent_h,j))")
    assert {t["content_history"] for t in info["trials"]} == set(EXACT.content_history)
    assert {t["content_decay"] for t in info["trials"]} == set(EXACT.content_decay)
    for trial in info["trials"]:
        assert (trial["transition_weight"], trial["popularity_weight"]) == (0.0, 0.0)
        assert trial["content_weight"] == 1.0
        rank = _ranks(_oracle_scores(embeddings, split.valid_inputs,
                                     history=trial["content_history"],
                                     decay=trial["content_decay"]), split.valid_targets)
        ndcg = np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean()
        assert trial["ndcg@10"] == pytest.approx(ndcg, abs=1e-6)
    assert info["valid_ndcg@10"] == max(t["ndcg@10"] for t in info["trials"])
    # Coordinate ascent moved off its start (H = 1, decay 1/2) to a better setting.
    assert info["valid_ndcg@10"] > info["trials"][0]["ndcg@10"]

    # The test lists are the oracle's full tie-broken sort under the fitted setting, the whole
    # catalogue long, with and without each user's history items.
    weights = info["weights"]
    want = _oracle_scores(embeddings, split.test_inputs, history=weights["content_history"],
                          decay=weights["content_decay"])
    assert any(len(np.unique(row)) < len(row) for row in want)  # ties for the hash to break
    for exclude in (False, True):
        hist = split.test_inputs if exclude else None
        ranked, scores = top_k_reference(want, k=split.n_items, exclude=hist)
        np.testing.assert_array_equal(lists[exclude][0], ranked)
        np.testing.assert_array_equal(lists[exclude][1], scores)


def _write_cold_run(run_dir):
    """Four topics of six warm items and one cold item each. A warm item is its topic's axis
    plus a little of an axis of its own; the cold item is the axis itself, so it is nearer to
    every warm item of its topic than any other item is. Each user reads four consecutive
    items of one topic; the even users' test target is their topic's cold item (never in
    training), the odd users' a warm item."""
    topics, per_topic = 4, 6
    n_warm = topics * per_topic
    n_items = n_warm + topics
    warm = np.arange(n_warm).reshape(topics, per_topic)
    cold = n_warm + np.arange(topics)
    emb = np.zeros((n_items, topics + n_warm), np.float32)
    for k in range(topics):
        emb[warm[k], k] = 1.0
        emb[warm[k], topics + warm[k]] = 0.3
        emb[cold[k], k] = 1.0
    sequences = []
    for k in range(topics):
        for r in range(per_topic):
            seq = [int(warm[k, (r + i) % per_topic]) for i in range(4)]
            sequences.append(seq + [int(cold[k]) if r % 2 == 0
                                    else int(warm[k, (r + 4) % per_topic])])
    counts = np.zeros(n_items, np.int64)
    for seq in sequences:
        np.add.at(counts, seq[:-2], 1)
    data = layout(run_dir).data_dir
    write_parquet(data / "items.parquet", pl.DataFrame(
        {"item_idx": np.arange(n_items), "item_id": [f"i{i}" for i in range(n_items)]}))
    write_parquet(data / "sequences.parquet", pl.DataFrame(
        {"user_idx": np.arange(len(sequences)), "user_id": [f"u{u}" for u in range(len(sequences))],
         "items": sequences},
        schema={"user_idx": pl.Int64, "user_id": pl.Utf8, "items": pl.List(pl.Int64)}))
    write_parquet(data / "strata.parquet", pl.DataFrame(
        {"item_idx": np.arange(n_items), "train_count": counts,
         "stratum": popularity_strata(counts)}))
    save_tensors(layout(run_dir).embeddings("text"),
                 {"embeddings": emb, "mask": np.ones(n_items, dtype=bool)})
    return SequentialSplit.from_run_dir(run_dir)


def test_cold_targets_nearest_to_the_history_come_first_where_pop_cannot_list_them(tmp_path):
    split = _write_cold_run(tmp_path)
    is_cold = split.strata[split.test_targets] == "cold"
    assert is_cold.sum() == 12 and (split.train_counts[split.test_targets[is_cold]] == 0).all()
    cfg = EvalConfig(ks=[1, 5, 10], baselines=["pop", "content_knn"], bootstrap_samples=20,
                     report=False)
    evaluate(cfg=cfg, run_dir=tmp_path, device="cpu")

    def ranked(name):
        frame = pl.read_parquet(layout(tmp_path).baseline_dir(name) / "ranked.parquet")
        return np.array(frame.sort("user_idx")["items"].to_list())

    knn, pop = ranked("content_knn"), ranked("pop")
    assert (knn[is_cold, 0] == split.test_targets[is_cold]).all()
    assert not (pop == split.test_targets[:, None])[is_cold].any()
    # Both rows are in the merged results, each with every stratum's metrics.
    rows = json.loads((tmp_path / "metrics.json").read_text())["retrieval"]
    assert rows["content_knn"]["strata"]["cold"]["recall@1"] == 1.0
    assert rows["content_knn"]["strata"]["cold"]["ndcg@10"] == 1.0
    assert rows["pop"]["strata"]["cold"]["recall@10"] == 0.0
    assert set(rows["content_knn"]["strata"]) == set(rows["pop"]["strata"])


def test_content_knn_needs_embeddings_and_keys_its_own_config(tmp_path):
    from recdata.synthetic import write_synthetic_run_data

    write_synthetic_run_data(tmp_path, n_users=20, n_items=16, with_images=False)
    split = SequentialSplit.from_run_dir(tmp_path)
    with pytest.raises(DataError, match="content_knn baseline ranks by content similarity"):
        run_baseline(name="content_knn", split=split, cfg=EvalConfig(bootstrap_samples=20),
                     run_dir=tmp_path)
    # Its grids are part of its cache key and of no other baseline's.
    base, other = EvalConfig(), EvalConfig(content_knn={"content_history": [1, 2]})
    assert isinstance(other.content_knn, ContentKnnConfig)
    key = {name: [baseline_key(name=name, cfg=c, fingerprint="f", seed=0) for c in (base, other)]
           for name in ("content_knn", "heuristic")}
    assert key["content_knn"][0] != key["content_knn"][1]
    assert key["heuristic"][0] == key["heuristic"][1]
    with pytest.raises(DataError, match="eval.content_knn: content_history must be >= 1"):
        ContentKnnConfig(content_history=[0])
