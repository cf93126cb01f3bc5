"""The ``heuristic`` and ``sasrec_priors`` baselines: a rule with no learned model over the whole
catalogue, and SASRec's candidates re-ordered by the retriever's priors, each with its weights
fitted on validation users."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from eval.baselines import run_baseline
from eval.config import EvalConfig, HeuristicConfig, SASRecConfig
from eval.heuristic import Heuristic, fit_heuristic
from generative_rec.content import ContentVectors
from recdata.errors import DataError
from recdata.io import save_tensors
from recdata.layout import layout
from recdata.metrics import per_user_hits
from recdata.split import SequentialSplit
from recdata.topk import top_k_reference


def _cyclic_run(tmp_path, n_users: int = 60, n_items: int = 40, seed: int = 0):
    """A run whose users walk a fixed successor cycle with noise, and random text embeddings."""
    from recdata.synthetic import write_synthetic_run_data

    write_synthetic_run_data(tmp_path, n_users=n_users, n_items=n_items, with_images=False)
    split = SequentialSplit.from_run_dir(tmp_path)
    rng = np.random.default_rng(seed)
    save_tensors(layout(tmp_path).embeddings("text"),
                 {"embeddings": rng.normal(size=(split.n_items, 8)).astype(np.float32),
                  "mask": np.ones(split.n_items, dtype=bool)})
    return split


def _brute_force(split, content, setting, histories, user):
    """The rule's score of every item for one history, term by term in float64."""
    hist = [int(i) for i in histories[user]]
    last = hist[-1]
    counts = np.zeros(split.n_items)
    for seq in split.train_sequences:
        for a, b in zip(seq[:-1], seq[1:]):
            if a == last:
                counts[b] += 1
    v = content.vectors.astype(np.float64)
    score = setting["transition_weight"] * np.log1p(counts)
    for h, item in enumerate(hist[::-1][: setting["content_history"]]):
        sim = np.maximum(v @ v[item], 0.0)
        sim[item] = 0.0
        score += setting["content_weight"] * setting["content_decay"] ** h * sim
    score += setting["popularity_weight"] * np.log1p(split.train_counts)
    return score


def test_rule_scores_and_target_ranks_match_a_brute_force_oracle(tmp_path):
    split = _cyclic_run(tmp_path)
    content = ContentVectors.from_run_dir(tmp_path)
    rule = Heuristic(split=split, content=content)
    setting = {"transition_weight": 2.0, "content_weight": 3.0, "content_history": 3,
               "content_decay": 0.5, "popularity_weight": 0.1}
    users = np.arange(split.n_users)
    for exclude in (False, True):
        block = rule.block(histories=split.valid_inputs, users=users, depth=3, exclude=exclude)
        scores = block.scores(setting, rule.popularity)
        for u in (0, 7, 31):
            want = _brute_force(split, content, setting, split.valid_inputs, u)
            if exclude:
                want[np.asarray(split.valid_inputs[u])] = -np.inf
            # Cosines are stored in half precision.
            np.testing.assert_allclose(scores[u], want, atol=3 * 3e-3)
        # The target's rank is its place in the tie-broken full sort of those scores.
        ranked, _ = top_k_reference(scores, k=split.n_items, users=users)
        rank = rule.rank_of_targets(block, setting, split.valid_targets)
        for u in range(split.n_users):
            where = np.flatnonzero(ranked[u] == split.valid_targets[u])
            assert rank[u] == (where[0] if len(where) else split.n_items)


def test_weights_are_fitted_on_validation_users_and_rank_the_test_users(tmp_path):
    split = _cyclic_run(tmp_path)
    cfg = HeuristicConfig(rounds=1)
    lists, info = fit_heuristic(split=split, run_dir=tmp_path, cfg=cfg, exclude_history=False,
                                depth=20)
    # The fitted setting is the best of every trial, and better than no rule at all.
    assert info["valid_ndcg@10"] == max(t["ndcg@10"] for t in info["trials"])
    assert info["valid_ndcg@10"] > info["trials"][0]["ndcg@10"]
    # The test lists are the rule's full ranking under the fitted weights.
    rule = Heuristic(split=split, content=ContentVectors.from_run_dir(tmp_path))
    users = np.arange(split.n_users)
    block = rule.block(histories=split.test_inputs, users=users,
                       depth=max(cfg.content_history), exclude=False)
    want, _ = top_k_reference(block.scores(info["weights"], rule.popularity), k=20, users=users)
    assert lists[False][0].tolist() == want.tolist()
    # The other protocol removes each user's history items.
    for u in range(split.n_users):
        assert not np.isin(lists[True][0][u], split.test_inputs[u]).any()


def test_heuristic_baseline_runs_through_the_registry_and_beats_popularity(tmp_path):
    split = _cyclic_run(tmp_path)
    cfg = EvalConfig(baselines=["pop", "heuristic"], bootstrap_samples=20,
                     heuristic=HeuristicConfig(rounds=1))
    pop = run_baseline(name="pop", split=split, cfg=cfg, run_dir=tmp_path)
    rule = run_baseline(name="heuristic", split=split, cfg=cfg, run_dir=tmp_path)
    assert set(rule["info"]["weights"]) >= {"transition_weight", "content_weight",
                                            "popularity_weight"}
    assert rule["overall"]["ndcg@10"] > pop["overall"]["ndcg@10"]
    frame = pl.read_parquet(tmp_path / "baselines" / "heuristic" / "ranked.parquet")
    assert frame.height == split.n_users


def test_sasrec_priors_needs_sasrec_first(tmp_path):
    split = _cyclic_run(tmp_path)
    with pytest.raises(DataError, match="list sasrec before it"):
        run_baseline(name="sasrec_priors", split=split, cfg=EvalConfig(bootstrap_samples=20),
                     run_dir=tmp_path)


@pytest.mark.slow
def test_sasrec_priors_reorders_sasrec_candidates_with_weights_fitted_on_validation(tmp_path):
    from eval.recbole_sasrec import CANDIDATES_FILE
    from recdata.io import load_tensors

    split = _cyclic_run(tmp_path)
    cfg = EvalConfig(baselines=["sasrec", "sasrec_priors"], bootstrap_samples=20,
                     sasrec=SASRecConfig(epochs=1, hidden_size=16, inner_size=32, n_layers=1))
    sasrec = run_baseline(name="sasrec", split=split, cfg=cfg, run_dir=tmp_path, device="cpu")
    cands = load_tensors(tmp_path / "baselines" / "sasrec" / CANDIDATES_FILE)
    assert cands["valid_items"].shape == (split.n_users, 50)
    # Every catalogue item once, then -1 padding past the catalogue's end.
    row = cands["valid_items"][0].numpy()
    assert sorted(row[row >= 0].tolist()) == list(range(min(50, split.n_items)))
    # SASRec's own lists are the head of its candidates.
    sas_ranked = pl.read_parquet(tmp_path / "baselines" / "sasrec" / "ranked.parquet")
    assert sas_ranked.sort("user_idx")["items"].to_list() == \
        cands["test_items"][:, :20].numpy().tolist()
    res = run_baseline(name="sasrec_priors", split=split, cfg=cfg, run_dir=tmp_path,
                       device="cpu")
    info = res["info"]
    assert info["valid_ndcg@10"] >= info["valid_ndcg@10_sasrec"]
    # A one-epoch SASRec barely learns the cycle; the successor counts do.
    assert info["priors"]["transition_weight"] > 0
    assert res["overall"]["ndcg@10"] > sasrec["overall"]["ndcg@10"]
    hits = per_user_hits(ranked=np.array(pl.read_parquet(
        tmp_path / "baselines" / "sasrec_priors" / "ranked.parquet").sort("user_idx")["items"]
        .to_list()), targets=split.test_targets, ks=(10,))
    assert res["overall"]["ndcg@10"] == pytest.approx(hits["ndcg@10"].mean())
