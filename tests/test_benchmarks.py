"""The documented benchmark commands start as written, and the README's results are the
committed ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    # Run as the README says (`python benchmarks/X.py`): the script's folder comes first on
    # sys.path, so a module there named like an installed package would shadow it.
    out = subprocess.run([sys.executable, f"benchmarks/{script}", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower()


def test_readme_results_are_generated_from_committed_files():
    out = subprocess.run([sys.executable, "benchmarks/render_results.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_quality_table_marks_small_strata_and_lists_anchors():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import quality
    finally:
        sys.path.pop(0)
    row = {"system": "mmq_tiger", "recall@5": 0.04, "ndcg@5": 0.03, "recall@10": 0.07,
           "ndcg@10": 0.04, "recall@20": 0.1, "ndcg@20": 0.05, "recall@10_ci": [0.06, 0.08],
           "invalid@10": 0.0, "distinct@10": 300,
           "strata_recall@10": {"popular": 0.1, "middle": 0.02, "long_tail": 0.0, "cold": 0.0}}
    result = {"dataset": "amazon-beauty", "budget": "cpu", "config": "c.yaml",
              "code_version": "abc", "date": "2026-01-01", "test_users": 1000, "items": 500,
              "test_users_per_stratum": {"popular": 700, "middle": 280, "long_tail": 19,
                                         "cold": 1},
              "systems": [row], "stage_seconds": {"encode": 1.0}, "total_seconds": 1.0,
              "machine": "x"}
    md = quality.markdown(result)
    assert "popular R@10 (700)" in md and "middle R@10 (280)" in md
    assert "long_tail R@10" not in md and "long_tail (19), cold (1)" in md
    assert "0.0700 [0.060, 0.080]" in md
    assert "TIGER (paper) 0.0454 / 0.0321 / 0.0648 / 0.0384" in md
    json.dumps(result)


def test_transition_split_finds_targets_that_follow_the_last_item_in_training(tmp_path):
    import numpy as np
    import polars as pl

    from recdata.split import SequentialSplit

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import transition_split
    finally:
        sys.path.pop(0)
    seqs = [[0, 1, 2, 3, 4], [2, 3, 5, 3, 4], [3, 4, 0, 1, 7]]
    split = SequentialSplit(item_ids=[str(i) for i in range(8)], user_ids=["a", "b", "c"],
                            sequences=[np.array(s) for s in seqs],
                            strata=np.array(["popular"] * 8), train_counts=np.ones(8, int))
    # Training pairs: 0>1 1>2 2>3 3>5 3>4 4>0. Validation: 2>3, 5>3, 0>1; test: 3>4 thrice, 1>7.
    seen, targets = transition_split.seen_transitions(split, "valid")
    assert seen.tolist() == [True, False, True] and targets.tolist() == [3, 3, 1]
    seen, targets = transition_split.seen_transitions(split, "test")
    assert seen.tolist() == [True, True, False] and targets.tolist() == [4, 4, 7]
    lists = tmp_path / "ranked.parquet"
    pl.DataFrame({"user_idx": [2, 0, 1, 0], "split": ["test", "test", "test", "valid"],
                  "items": [[7, 1], [1, 2, 4], [5], [3]],
                  "scores": [[1.0, 0.0], [3.0, 2.0, 1.0], [1.0], [1.0]]}).write_parquet(lists)
    ranks = transition_split.hits_at_k(lists, "test", targets, n_users=3)
    assert ranks.tolist() == [2, transition_split.K, 0]


def test_quality_profile_extends_the_budget_config_and_labels_its_results(tmp_path, monkeypatch):
    from pipeline.config import load_config

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import quality
    finally:
        sys.path.pop(0)
    bench = tmp_path / "configs" / "bench"
    bench.mkdir(parents=True)
    (bench / "amazon-beauty.cpu-wide.yaml").write_text(
        f"extends: {quality.config_path('amazon-beauty', 'cpu')}\n"
        "retriever:\n  candidates_n: 80\n")
    monkeypatch.setattr(quality, "ROOT", tmp_path)
    path = quality.config_path("amazon-beauty", "cpu", "wide")
    assert path == bench / "amazon-beauty.cpu-wide.yaml"
    cfg = load_config(path)
    base = load_config(ROOT / "configs" / "bench" / "amazon-beauty.cpu.yaml")
    assert cfg.section("retriever").candidates_n == 80
    assert cfg.variants == base.variants
    assert quality.budget_label("cpu", "wide") == "cpu-wide" and quality.budget_label("cpu", None) == "cpu"
    result = {"dataset": "amazon-beauty", "budget": "cpu", "profile": "wide", "config": "c.yaml",
              "code_version": "abc", "date": "2026-01-01", "test_users": 10, "items": 5,
              "test_users_per_stratum": {}, "systems": [], "stage_seconds": {},
              "total_seconds": 0.0, "machine": "x"}
    md = quality.markdown(result)
    assert "`cpu` budget (2 idle CPU cores), profile `wide`" in md
    assert "--budget cpu --profile wide`" in md
