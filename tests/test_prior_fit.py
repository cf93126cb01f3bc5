"""The priors' weights are fitted on validation users inside the ``train-retriever`` stage, saved
with the run, and the saved lists are the model's own lists re-ordered by them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest
import torch

from generative_rec.config import PriorsConfig
from generative_rec.priors import CandidatePriors, coordinate_ascent, fit_priors, ndcg_at_10
from generative_rec.data import histories_to_examples
from generative_rec.transitions import TransitionCounts, recent_items
from recdata.metrics import per_user_hits
from tests.test_retriever import tiny_cfg, write_run

torch.set_num_threads(1)


def test_ndcg_at_10_matches_the_project_metric():
    rng = np.random.default_rng(0)
    items = rng.integers(-1, 30, size=(200, 20))
    targets = rng.integers(0, 30, size=200)
    want = per_user_hits(ranked=items, targets=targets, ks=(10,))["ndcg@10"].mean()
    assert ndcg_at_10(items, targets) == pytest.approx(want)


def test_coordinate_ascent_finds_a_separable_maximum_and_ties_keep_the_earlier_value():
    grids = {"a": [0, 1, 2, 3], "b": [0, 10, 20], "c": [5, 6]}

    def score(s):  # separable, maximum at a=2, b=10; c never matters (a tie)
        return -(s["a"] - 2) ** 2 - (s["b"] - 10) ** 2 / 100

    best, value, trials = coordinate_ascent(grids=grids, start={"a": 0, "b": 0, "c": 5},
                                            score=score, rounds=2)
    brute = max(itertools.product(*grids.values()),
                key=lambda v: score(dict(zip(grids, v))))
    assert (best["a"], best["b"]) == brute[:2] and best["c"] == 5
    assert value == pytest.approx(score(best))
    # Each setting is scored once, however often the passes meet it.
    keys = [tuple(sorted((k, v) for k, v in t.items() if k != "ndcg@10")) for t in trials]
    assert len(keys) == len(set(keys))


def _successor_problem(n_users: int = 300, n_items: int = 60, seed: int = 0):
    """Lists whose model order misses the pattern: each user's target is the most frequent
    training successor of their last item, which the model ranks 15th."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(n_items)
    sequences = [np.array([i, succ[i]]) for i in range(n_items) for _ in range(3)]
    counts = TransitionCounts.from_sequences(sequences, n_items=n_items)
    last = rng.integers(0, n_items, size=n_users)
    targets = succ[last]
    items = np.stack([rng.permutation(np.setdiff1d(np.arange(n_items), [t]))[:20] for t in targets])
    items[:, 14] = targets
    scores = -np.arange(20, dtype=np.float32)[None, :].repeat(n_users, 0)
    return items, scores, last[:, None], targets, counts


def test_fit_switches_on_a_prior_that_serves_validation_users_and_off_one_that_does_not():
    items, scores, recent, targets, counts = _successor_problem()
    fitted, report = fit_priors(items=items, scores=scores, recent=recent, targets=targets,
                                top_k=20, cfg=PriorsConfig(), transitions=counts, content=None)
    assert fitted.transition_weight > 0 and report["fitted"]
    assert report["valid_ndcg@10"] == pytest.approx(1.0)
    assert report["valid_ndcg@10_model"] == pytest.approx(ndcg_at_10(items, targets))
    # The report's figure is what the fitted priors give.
    ranked, _ = fitted.apply(items=items, scores=scores, recent=recent, top_k=20)
    assert ndcg_at_10(ranked, targets) == pytest.approx(report["valid_ndcg@10"])
    # Counts that point away from the targets are switched off: every weight > 0 would hurt.
    wrong = TransitionCounts.from_sequences(
        [np.array([i, (targets[0] + 1 + i) % 60]) for i in range(60)], n_items=60)
    items[:, 0] = targets  # the model is right already
    off, report = fit_priors(items=items, scores=scores, recent=recent, targets=targets,
                             top_k=20, cfg=PriorsConfig(), transitions=wrong, content=None)
    assert off.transition_weight == 0 and not off.active
    assert report["valid_ndcg@10"] == report["valid_ndcg@10_model"] == pytest.approx(1.0)


def test_fit_off_leaves_the_model_order():
    items, scores, recent, targets, counts = _successor_problem()
    priors, report = fit_priors(items=items, scores=scores, recent=recent, targets=targets,
                                top_k=20, cfg=PriorsConfig(fit=False), transitions=counts,
                                content=None)
    assert not priors.active and not report["fitted"]


def test_stage_fits_saves_and_applies_the_priors(tmp_path):
    from generative_rec import inference, stage
    from recdata.io import read_json
    from recdata.layout import layout
    from recdata.split import SequentialSplit

    run = write_run(tmp_path)
    cfg = tiny_cfg(schedule=dict(max_steps=15, eval_every=15, lr=5e-3), decoding=dict(candidates_n=20))
    stage.run(cfg=cfg, run_dir=run, seed=0, device="cpu")
    fit = read_json(layout(run).retriever_priors)
    assert fit["fitted"] and fit["trials"] and set(fit["weights"]) == set(CandidatePriors.WEIGHTS)
    # The validation figure the fit reports is the one of the saved validation lists.
    saved_valid = read_json(run / "retriever" / "metrics_valid.json")
    assert saved_valid["overall"]["ndcg@10"] == pytest.approx(fit["valid_ndcg@10"], abs=1e-6)
    # The saved final lists are the model's own lists re-ordered by the fitted priors.
    split = SequentialSplit.from_run_dir(run)
    priors = inference.load_priors(run)
    model_only = pl.read_parquet(layout(run).candidates_model_only).filter(
        pl.col("split") == "test").sort("user_idx")
    final = pl.read_parquet(layout(run).candidates).filter(pl.col("split") == "test").sort("user_idx")
    raw_items = np.array(model_only["items"].to_list())
    raw_scores = np.array(model_only["scores"].to_list())
    # The toy sequences are cyclic: the last item's successor is the target, so the fit keeps
    # the transition prior.
    assert priors.transition_weight > 0
    hist = histories_to_examples([s.tolist() for s in split.test_inputs], cfg.history.max_length).history
    want, _ = priors.apply(items=raw_items, scores=raw_scores,
                           recent=recent_items(hist, priors.history_needed), top_k=20)
    assert want.tolist() != raw_items.tolist()
    assert np.array(final["items"].to_list()).tolist() == want.tolist()
    # The model-only metrics are those of the model-only lists.
    model_metrics = read_json(layout(run).retriever_metrics_model_only)
    hits = per_user_hits(ranked=raw_items, targets=split.test_targets, ks=(10,))
    assert model_metrics["overall"]["recall@10"] == pytest.approx(hits["recall@10"].mean())
    summary = json.loads((run / "retriever" / "config.json").read_text())["summary"]
    assert summary["priors"] == fit["weights"]
