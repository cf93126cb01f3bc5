"""The evaluate stage, merged metrics.json and the report, on a run dir built by the test.

Tokenizer, retriever and ranker sections are synthetic but follow the artefact formats of
docs/architecture.md; the test checks rendering and merging, not model quality.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from eval.compare import compare_runs
from eval.config import EvalConfig
from eval.stage import run
from recdata.io import write_json, write_parquet
from recdata.metrics import STRATA, gauc, ranking_metrics
from recdata.split import SequentialSplit

CONTRACT_RETRIEVAL = {"recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20",
                      "invalid@10"}
STRATUM_TITLES = ["Stratum: popular", "Stratum: middle", "Stratum: long-tail", "Stratum: cold"]


def _write_data(run_dir: Path) -> SequentialSplit:
    from recdata.synthetic import write_synthetic_run_data

    write_synthetic_run_data(run_dir, n_users=60, n_items=40, with_images=False)
    return SequentialSplit.from_run_dir(run_dir)


def _write_stage_outputs(run_dir: Path, split: SequentialSplit, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = split.n_users, split.n_items
    per_position = [
        {"name": name, "codebook_size": 16, "utilization": u, "entropy": 3.5, "perplexity": 11.3}
        for name, u in [("shared_0", 1.0), ("text_0", 0.75), ("vision_0", 0.5),
                        ("collision", 0.25)]
    ]
    write_json(run_dir / "tokenizer" / "metrics.json", {
        "tokenizer": "mmq", "reconstruction": 0.41, "entropy": 3.5, "utilization": 0.75,
        "collision_rate": 0.05, "max_collision_group": 2, "sid_length": 4,
        "codebook_sizes": [16, 16, 16, 16], "per_position": per_position,
    })
    rows = []
    for split_name in ("valid", "test"):
        for u in range(n_users):
            items = rng.permutation(n_items)[:30].tolist()
            rows.append({"user_idx": u, "split": split_name, "items": items,
                         "scores": sorted(rng.random(30).tolist(), reverse=True)})
    # One user with a short list containing an invalid id: counted, not dropped.
    rows[-1]["items"] = [n_items + 5] + rows[-1]["items"][:4]
    rows[-1]["scores"] = rows[-1]["scores"][:5]
    write_parquet(run_dir / "retriever" / "candidates.parquet", pl.DataFrame(rows))
    write_json(run_dir / "retriever" / "config.json", {"num_beams": 30, "max_history": 20})

    n_imp = 400
    users = rng.integers(0, n_users, size=n_imp)
    items = rng.integers(0, n_items, size=n_imp)
    labels = rng.integers(0, 2, size=n_imp)
    ranker = {}
    for variant in ("itemid", "sid"):
        probs = rng.random(n_imp)
        sec = {"overall": _ctr(users, labels, probs), "strata": {}}
        for s in STRATA:
            sel = split.strata[items] == s
            sec["strata"][s] = _ctr(users[sel], labels[sel], probs[sel])
        ranker[f"ranker_{variant}"] = sec
    ranker["two_stage"] = {"protocol": {"ranked_file_variant": "sid", "candidates_n": 30}}
    write_json(run_dir / "ranker" / "metrics.json", ranker)
    # A further system (BBQRec's layout): RUN_DIR/<name>/ranked.parquet + metrics.json.
    write_json(run_dir / "bbqrec" / "metrics.json", {"model": "bbqrec", "overall": {},
                                                     "strata": {}})
    write_parquet(run_dir / "bbqrec" / "ranked.parquet", pl.DataFrame({
        "user_idx": np.arange(n_users), "split": ["test"] * n_users,
        "items": [rng.permutation(n_items)[:20].tolist() for _ in range(n_users)],
    }))
    write_parquet(run_dir / "ranker" / "two_stage_ranked.parquet", pl.DataFrame({
        "user_idx": np.arange(n_users),
        "items": [rng.permutation(n_items)[:20].tolist() for _ in range(n_users)],
        "scores": [sorted(rng.random(20).tolist(), reverse=True) for _ in range(n_users)],
    }))


def _ctr(users, labels, probs):
    from recdata.metrics import auc, logloss

    if len(labels) == 0:
        return {"auc": None, "gauc": None, "logloss": None, "impressions": 0}
    g, used, excluded = gauc(users, labels, probs)
    return {"auc": auc(labels, probs), "gauc": g, "logloss": logloss(labels, probs),
            "impressions": int(len(labels)), "gauc_users": used, "gauc_users_excluded": excluded}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    split = _write_data(run_dir)
    _write_stage_outputs(run_dir, split)
    cfg = EvalConfig(baselines=["pop"], bootstrap_samples=100)
    summary = run(cfg=cfg, run_dir=run_dir, seed=0, device="cpu")
    return run_dir, split, cfg, summary


def test_metrics_json_follows_contract(evaluated):
    run_dir, split, _, summary = evaluated
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"dataset", "tokenizer", "retrieval", "ranking"} <= set(metrics)
    assert metrics["dataset"]["users"] == split.n_users
    assert metrics["dataset"]["items"] == split.n_items
    for key in ("reconstruction", "entropy", "utilization", "collision_rate",
                "max_collision_group", "sid_length"):
        assert key in metrics["tokenizer"]
    assert set(metrics["retrieval"]) == {"mmq_tiger", "pop", "bbqrec", "two_stage_sid"}
    for name, sec in metrics["retrieval"].items():
        assert CONTRACT_RETRIEVAL <= set(sec["overall"]), name
        assert set(sec["strata"]) == set(STRATA), name
        for s in STRATA:
            assert CONTRACT_RETRIEVAL <= set(sec["strata"][s]), (name, s)
    assert set(metrics["ranking"]) == {"ranker_itemid", "ranker_sid"}
    for sec in metrics["ranking"].values():
        assert {"auc", "gauc", "logloss"} <= set(sec["overall"])
        assert set(sec["strata"]) == set(STRATA)
    assert metrics["not_run"] == {}
    # Paired tests put every own system against the strongest baseline, and the generative
    # retriever against every other system, per stratum.
    comps = metrics["comparisons"]
    assert metrics["strongest_baseline"] == "pop"
    assert {(c["a"], c["b"]) for c in comps} == {
        ("mmq_tiger", "pop"), ("bbqrec", "pop"), ("two_stage_sid", "pop"),
        ("mmq_tiger", "bbqrec"), ("mmq_tiger", "two_stage_sid")}
    assert "The strongest baseline is pop" in (run_dir / "report" / "report.md").read_text()
    assert {c["scope"] for c in comps} == {"overall", "popular", "middle", "long_tail"}
    assert metrics["protocol"]["exclude_history"] is False
    assert metrics["protocol"]["decoding"]["num_beams"] == 30
    assert summary["systems"]["pop"]["ndcg@10"] == metrics["retrieval"]["pop"]["overall"]["ndcg@10"]


def test_retriever_metrics_recomputed_from_candidates(evaluated):
    run_dir, split, _, _ = evaluated
    frame = pl.read_parquet(run_dir / "retriever" / "candidates.parquet").filter(
        pl.col("split") == "test").sort("user_idx")
    ranked = np.full((split.n_users, 20), -1)
    for u, items in zip(frame["user_idx"], frame["items"]):
        ranked[u, : min(20, len(items))] = items[:20]
    expected = ranking_metrics(ranked=ranked, targets=split.test_targets, strata=split.strata,
                               valid_items=split.n_items)
    got = json.loads((run_dir / "metrics.json").read_text())["retrieval"]["mmq_tiger"]
    assert got["overall"] == pytest.approx(expected["overall"])
    # The short list with one invalid id: 1 invalid + 5 empty slots of 10, averaged over users.
    assert got["overall"]["invalid@10"] == pytest.approx(0.6 / split.n_users)


def test_report_lists_every_system_and_stratum(evaluated):
    run_dir, _, _, _ = evaluated
    md = (run_dir / "report" / "report.md").read_text()
    page = (run_dir / "report" / "report.html").read_text()
    for text in (md, page):
        for system in ("mmq_tiger", "pop", "bbqrec", "two_stage_sid", "ranker_itemid",
                       "ranker_sid"):
            assert system in text
        for title in STRATUM_TITLES:
            assert title in text
        for word in ("exclude_history", "tie_break", "leave-one-out", "num_beams",
                     "Codebook utilisation per expert", "vision_0", "Gini of exposure"):
            assert word in text
    retrieval = md.split("## Retrieval")[1].split("## Ranking")[0]
    overall = retrieval.split("### Overall")[1].split("###")[0]
    assert overall.count("\n| ") == 1 + 4  # header + four systems
    ranking = md.split("## Ranking (CTR)")[1].split("## Protocol")[0]
    for label in ("popular", "middle", "long-tail", "cold"):
        assert f"| ranker_sid | {label} |" in ranking


def test_html_is_self_contained_with_embedded_charts(evaluated):
    run_dir, _, _, _ = evaluated
    page = (run_dir / "report" / "report.html").read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 4  # NDCG@10, Recall@10, utilisation, ranker AUC
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    md = (run_dir / "report" / "report.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (run_dir / "report" / link).exists()


def test_report_without_matplotlib_says_so_instead_of_failing(evaluated, tmp_path, monkeypatch):
    run_dir, _, cfg, _ = evaluated
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "report")
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import now fails
    run(cfg=cfg, run_dir=copy, seed=0, device="cpu")
    md = (copy / "report" / "report.md").read_text()
    assert md.count("Figure not drawn (matplotlib is not installed)") == 4
    assert not list((copy / "report").glob("*.png"))
    assert "## Retrieval" in md


def test_evaluate_is_deterministic(evaluated, tmp_path):
    run_dir, _, cfg, _ = evaluated
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    run(cfg=cfg, run_dir=copy, seed=0, device="cpu")
    a = json.loads((run_dir / "metrics.json").read_text())
    b = json.loads((copy / "metrics.json").read_text())
    a.pop("run_dir"), b.pop("run_dir")
    assert a == b


def test_missing_sections_are_reported_not_run(tmp_path):
    _write_data(tmp_path)
    run(cfg=EvalConfig(baselines=["pop"], bootstrap_samples=50), run_dir=tmp_path, device="cpu")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["tokenizer"]["status"] == "not run"
    assert metrics["ranking"]["status"] == "not run"
    assert set(metrics["not_run"]) == {"retriever", "tokenizer", "ranking"}
    assert list(metrics["retrieval"]) == ["pop"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Not run" in md and "tokenizer/metrics.json not found" in md
    for title in STRATUM_TITLES:
        assert title in md


def test_compare_runs_side_by_side(evaluated, tmp_path):
    run_a, split, cfg, _ = evaluated
    run_b = tmp_path / "b"
    shutil.copytree(run_a / "data", run_b / "data")
    _write_stage_outputs(run_b, split, seed=1)
    write_json(run_b / "retriever" / "metrics.json", {"model": "rqvae_tiger"})
    run(cfg=cfg, run_dir=run_b, seed=0, device="cpu")
    out = tmp_path / "cmp.md"
    text = compare_runs(run_a=run_a, run_b=run_b, out=out)
    assert out.read_text() == text
    assert "same split" in text
    for system in ("mmq_tiger", "rqvae_tiger", "pop", "ranker_sid"):
        assert system in text
    assert "Paired test: retriever B (rqvae_tiger) − retriever A (mmq_tiger)" in text
    for label in ("popular", "middle", "long-tail"):
        assert f"### {label}" in text
    # pop is identical in both runs (same split): its deltas are zero.
    pop_row = next(line for line in text.split("### overall")[1].splitlines()
                   if line.startswith("| pop |"))
    assert "+0.0000" in pop_row and "-0" not in pop_row.replace("+0.0000", "")


def test_headline_leads_with_the_answer_and_marks_small_strata():
    from eval.report import headline_sentences, headline_table

    def system(r10, n10):
        vals = {"recall@10": r10, "ndcg@10": n10}
        return {"overall": vals, "strata": {s: vals for s in STRATA},
                "ci": {"overall": {"recall@10": [r10 - 0.01, r10 + 0.01]}}}

    metrics = {
        "dataset": {"test_users": 1000, "test_targets_per_stratum":
                    {"popular": 600, "middle": 350, "long_tail": 40, "cold": 0}},
        "retrieval": {"pop": system(0.05, 0.02), "mmq_tiger": system(0.09, 0.045)},
        "comparisons": [
            {"a": "mmq_tiger", "b": "pop", "metric": "ndcg@10", "scope": "overall",
             "users": 1000, "diff": 0.025, "ci": [0.015, 0.035], "p_bootstrap": 0.001},
            {"a": "mmq_tiger", "b": "sasrec", "metric": "ndcg@10", "scope": "overall",
             "users": 1000, "diff": 0.002, "ci": [-0.004, 0.008], "p_bootstrap": 0.5},
            {"a": "mmq_tiger", "b": "pop", "metric": "ndcg@10", "scope": "popular",
             "users": 600, "diff": 0.02, "ci": [0.01, 0.03], "p_bootstrap": 0.01},
        ],
    }
    table = headline_table(metrics)
    assert [r[0] for r in table.rows] == ["mmq_tiger", "pop"]  # best first
    assert table.headers[1] == "overall R@10 (n=1000)"
    assert any("middle" in h for h in table.headers)
    assert not any("long-tail" in h or "cold" in h for h in table.headers)
    assert "long-tail (40 users)" in table.caption and "cold" not in table.caption
    assert table.rows[0][1] == "0.0900 [0.0800, 0.1000]"
    said = headline_sentences(metrics)
    assert said[0].startswith("mmq_tiger beats pop on NDCG@10 by +0.0250 [+0.0150, +0.0350]")
    assert said[1].startswith("mmq_tiger and sasrec cannot be told apart")
    assert len(said) == 2  # per-stratum comparisons stay in the tables


def test_exclude_history_filters_the_retriever_lists_too(tmp_path):
    from eval.sections import retriever_system

    split = _write_data(tmp_path)
    _write_stage_outputs(tmp_path, split)
    keep, _, kept = retriever_system(tmp_path, split, EvalConfig(baselines=[]), 0)
    name, section, dropped = retriever_system(tmp_path, split, EvalConfig(baselines=[], exclude_history=True), 0)
    assert kept is not None and dropped is not None and name == keep
    seen_before = sum(np.isin(row, hist).sum() for row, hist in zip(kept, split.test_inputs))
    assert seen_before > 0  # the fixture's lists do contain history items
    for row, hist in zip(dropped, split.test_inputs):
        assert not np.isin(row[row >= 0], hist).any()
    assert "history items removed" in section["source"] and section["short_lists"] >= 0


def test_every_system_is_also_scored_under_the_other_protocol(evaluated):
    """The headline keeps history items (the default); each system whose stored list can show
    it also carries its figures with them removed, and the report puts both side by side."""
    from eval.popularity import popularity_ranking

    run_dir, split, _, _ = evaluated
    metrics = json.loads((run_dir / "metrics.json").read_text())
    pop = metrics["retrieval"]["pop"]
    removed, _ = popularity_ranking(train_counts=split.train_counts, n_users=split.n_users,
                                    depth=20, exclude=split.test_inputs)
    expected = ranking_metrics(ranked=removed, targets=split.test_targets, ks=(5, 10, 20),
                               valid_items=split.n_items)["overall"]
    assert pop["other_protocol"]["exclude_history"] is True
    assert pop["other_protocol"]["overall"] == pytest.approx(expected)
    assert pop["other_protocol"]["overall"]["recall@10"] != pop["overall"]["recall@10"]
    retriever = metrics["retrieval"]["mmq_tiger"]["other_protocol"]
    assert retriever["exclude_history"] is True and retriever["short_lists"] >= 1
    md = (run_dir / "report" / "report.md").read_text()
    table = md.split("### Both protocols")[1].split("##")[0]
    assert "history kept (headline)" in table and "history removed" in table
    row = next(line for line in table.splitlines() if line.startswith("| pop |"))
    assert f"{expected['recall@10']:.4f}" in row


def test_removed_headline_shows_kept_figures_only_where_the_list_was_not_filtered(tmp_path):
    from eval.sections import retriever_system

    split = _write_data(tmp_path)
    _write_stage_outputs(tmp_path, split)
    cfg_kept, cfg_removed = EvalConfig(baselines=[]), EvalConfig(baselines=[], exclude_history=True)
    _, kept, _ = retriever_system(tmp_path, split, cfg_kept, 0)
    _, removed, _ = retriever_system(tmp_path, split, cfg_removed, 0)
    # Each headline's other protocol is the other run's headline, for the same stored beams.
    assert removed["other_protocol"]["overall"] == pytest.approx(kept["overall"])
    assert kept["other_protocol"]["overall"] == pytest.approx(removed["overall"])
    assert kept["other_protocol"]["short_lists"] == removed["short_lists"]


def test_model_only_lists_and_a_same_tokenizer_variant_get_their_own_rows(tmp_path):
    """The model's own lists (before the priors) are reported as <name>_model_only, and a
    variant that reuses the main tokenizer (another retriever setting) keeps its own name."""
    import shutil

    split = _write_data(tmp_path)
    _write_stage_outputs(tmp_path, split)
    shutil.copy(tmp_path / "retriever" / "candidates.parquet",
                tmp_path / "retriever" / "candidates_model_only.parquet")
    variant = tmp_path / "variants" / "mmq_content"
    shutil.copytree(tmp_path / "retriever", variant / "retriever")
    shutil.copytree(tmp_path / "tokenizer", variant / "tokenizer")
    run(cfg=EvalConfig(baselines=["pop"], bootstrap_samples=20), run_dir=tmp_path, device="cpu")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"mmq_tiger", "mmq_tiger_model_only", "mmq_content",
            "mmq_content_model_only"} <= set(metrics["retrieval"])
    # Identical lists, identical figures: each row reads its own file.
    assert metrics["retrieval"]["mmq_tiger_model_only"]["overall"] == \
        metrics["retrieval"]["mmq_content"]["overall"]
    assert "candidates_model_only" in metrics["retrieval"]["mmq_tiger_model_only"]["source"]
