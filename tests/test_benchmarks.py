"""The documented benchmark and experiment commands start as written, and the figures in the
README and docs/ are the committed results, laid out so that a reader can find them."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script_module(path: str):
    """Import a script of benchmarks/ or experiments/ as the interpreter runs it: its folder first
    on sys.path, so its sibling imports resolve."""
    folder = str((ROOT / path).parent)
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(Path(path).stem)
    finally:
        sys.path.remove(folder)
# The runnable scripts; a module they share (no main guard) is imported, not run.
SCRIPTS = sorted(str(p.relative_to(ROOT)) for folder in ("benchmarks", "experiments")
                 for p in (ROOT / folder).glob("*.py") if "__main__" in p.read_text())


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts_from_any_folder(script, tmp_path):
    # Run as documented (`python benchmarks/X.py`) but from another folder: the project must come
    # from the installed package, and the script's own folder, first on sys.path, must not shadow
    # one of its modules.
    out = subprocess.run([sys.executable, str(ROOT / script), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout.lower()


MODULES = sorted(str(p.relative_to(ROOT)) for folder in ("benchmarks", "experiments")
                 for p in (ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("script", MODULES + ["benchmarks/gpu_session.sh"])
def test_script_names_no_machine_path_and_edits_no_import_path(script):
    text = (ROOT / script).read_text()
    assert "sys.path.insert" not in text and "sys.path.append" not in text
    assert not re.search(r"(?<![\w.])/(work|home|root|Users|mnt|tmp)/", text), script


def render(*args: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_results.py"),
                           "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)


def test_readme_and_docs_results_are_generated_from_committed_files():
    out = render("--check")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_new_result_makes_check_fail_and_every_system_of_it_is_rendered(tmp_path):
    for rel in ("README.md", "docs", "benchmarks/results"):
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    path = tmp_path / "benchmarks" / "results" / "quality_amazon-beauty_cpu.json"
    result = json.loads(path.read_text())
    row = dict(result["systems"][0], system="new_system", **{"recall@10": 0.4321})
    result["systems"].append(row)
    path.write_text(json.dumps(result))
    out = render("--check", root=tmp_path)
    assert out.returncode == 1 and "README.md" in out.stdout, out.stdout + out.stderr
    assert render(root=tmp_path).returncode == 0
    readme = (tmp_path / "README.md").read_text()
    assert re.search(r"^\| new_system \| 0\.4321 ", readme, re.M), readme
    assert render("--check", root=tmp_path).returncode == 0


def test_a_table_run_with_overrides_shows_them_in_its_heading_and_command():
    results = (ROOT / "docs" / "results.md").read_text()
    for path in (ROOT / "benchmarks" / "results").glob("quality_*.json"):
        if "-modality_seed-" in path.stem:
            continue  # shown through its summary, modality_*.md
        overrides = json.loads(path.read_text()).get("overrides") or []
        for item in overrides:
            heading = next(line for line in results.splitlines()
                           if line.startswith("### ") and f"`{item}`" in line)
            block = results.split(heading, 1)[1]
            command = re.search(r"`(python benchmarks/quality\.py [^`]*)`", block).group(1)
            assert f"--set {item}" in command or f"--set '{item}'" in command, command


def _tables_by_heading(text: str) -> dict[str, int]:
    tables: dict[str, int] = {}
    heading, in_table, fence = "(top)", False, False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence:
            continue
        if re.match(r"#{1,6} ", line):
            heading, in_table = line, False
        elif line.startswith("|"):
            if not in_table:
                tables[heading] = tables.get(heading, 0) + 1
            in_table = True
        else:
            in_table = False
    return tables


DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS)
def test_no_two_tables_share_a_heading_and_no_heading_repeats(doc):
    text = (ROOT / doc).read_text()
    shared = {h: n for h, n in _tables_by_heading(text).items() if n > 1}
    assert not shared, shared
    headings = [line for line in text.splitlines() if re.match(r"#{1,6} ", line)]
    assert len(headings) == len(set(headings)), sorted(h for h in headings if headings.count(h) > 1)


def test_tables_checker_sees_a_shared_heading():
    assert _tables_by_heading("## A\n\n| x |\n|---|\n\ntext\n\n| y |\n|---|\n") == {"## A": 2}


def test_readme_reads_in_five_minutes_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for doc in DOCS + ["experiments/README.md"]:
        text = (ROOT / doc).read_text()
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if not re.match(r"[a-z]+://", target):
                assert ((ROOT / doc).parent / target).exists(), f"{doc} links to {target}"


def test_quality_table_marks_small_strata_and_lists_anchors():
    quality = script_module("benchmarks/quality.py")
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

    transition_split = script_module("experiments/transition_split.py")
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

    quality = script_module("benchmarks/quality.py")
    bench = tmp_path / "configs" / "bench"
    bench.mkdir(parents=True)
    (bench / "amazon-beauty.cpu-wide.yaml").write_text(
        f"extends: {quality.config_path('amazon-beauty', 'cpu')}\n"
        "retriever:\n  decoding:\n    candidates_n: 80\n")
    monkeypatch.setattr(quality, "ROOT", tmp_path)
    path = quality.config_path("amazon-beauty", "cpu", "wide")
    assert path == bench / "amazon-beauty.cpu-wide.yaml"
    cfg = load_config(path)
    base = load_config(ROOT / "configs" / "bench" / "amazon-beauty.cpu.yaml")
    assert cfg.section("retriever").decoding.candidates_n == 80
    assert cfg.variants == base.variants
    assert quality.budget_label("cpu", "wide") == "cpu-wide" and quality.budget_label("cpu", None) == "cpu"
    result = {"dataset": "amazon-beauty", "budget": "cpu", "profile": "wide", "config": "c.yaml",
              "code_version": "abc", "date": "2026-01-01", "test_users": 10, "items": 5,
              "test_users_per_stratum": {}, "systems": [], "stage_seconds": {},
              "total_seconds": 0.0, "machine": "x"}
    md = quality.markdown(result)
    assert "`cpu` budget (2 idle CPU cores), profile `wide`" in md
    assert "--budget cpu --profile wide`" in md


def test_the_modality_summary_is_the_mean_and_sd_over_the_seed_tables(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import modality

    def row(name, r, n):
        return {"system": name, "recall@10": r, "ndcg@10": n}

    for seed, (a, b) in enumerate([(0.10, 0.05), (0.12, 0.07)]):
        table = {"config": "c.yaml", "code_version": "abc", "machine": "m", "test_users": 9,
                 "items": 5, "this_invocation_seconds": 60.0,
                 "systems": [row("mmq_tiger", a, b), row("mmq_tiger_model_only", a / 2, b / 2),
                             row("heuristic", 0.2, 0.1)]}
        (tmp_path / f"{modality.seed_stem('ds', seed)}.json").write_text(json.dumps(table))
    stats = {0: {"mmq_tiger": {"collision_rate": 0.1, "gates": {"text": [0.5, 0.5]}}},
             1: {"mmq_tiger": {"collision_rate": 0.3, "gates": {"text": [0.9, 0.1]}}}}
    summary = modality.summarise("ds", [0, 1], stats, results=tmp_path)
    mmq = next(r for r in summary["rows"] if r["system"] == "mmq_tiger")
    assert mmq["with_priors"]["recall@10"] == {"mean": 0.11, "sd": 0.0141}
    assert mmq["model_only"]["ndcg@10"]["mean"] == 0.03
    assert mmq["collision_rate"]["mean"] == 0.2 and mmq["gates"] == {"text": [0.9, 0.1]}
    assert [r["system"] for r in summary["rows"]] == ["mmq_tiger", "heuristic"]
    assert "0.1100 ± 0.0141" in modality.markdown(summary)
    with pytest.raises(SystemExit, match="missing"):
        modality.summarise("ds", [0, 1, 2], stats, results=tmp_path)
