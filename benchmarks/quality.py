"""Retrieval quality benchmark: every system on one split, one command, one results file.

    python benchmarks/quality.py --dataset ml-100k-mm --budget cpu
    python benchmarks/quality.py --dataset amazon-beauty --budget cpu --out runs/quality-beauty

Runs the whole pipeline with ``configs/bench/<dataset>.<budget>.yaml`` (the generative
retriever on MMQ IDs, the variants it names — RQ-VAE and BBQ IDs, BBQRec — most-popular and
RecBole's SASRec, all on the same leave-one-out split and full-catalogue ranking), then prints
and writes ``benchmarks/results/quality_<dataset>_<budget>.{json,md}``: Recall/NDCG@5/10/20
with 95 % bootstrap intervals over test users, R@10 per popularity stratum of the target,
distinct items in the top-10 lists, invalid IDs, wall time per stage, and the published
anchors for the dataset beside them. A stage already up to date in ``--out`` is not re-run, so
an interrupted benchmark resumes. ``python benchmarks/render_results.py`` then rewrites the
README's results block from the results folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Published figures on the same data and protocol (../shared/reference/anchors.md): leave-one-out,
# full ranking. R@5, N@5, R@10, N@10.
ANCHORS: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {
    "amazon-beauty": [
        ("SASRec (TIGER's table)", (0.0387, 0.0249, 0.0605, 0.0318)),
        ("TIGER (paper)", (0.0454, 0.0321, 0.0648, 0.0384)),
        ("MMQ (paper, text + image)", (0.0455, 0.0296, 0.0675, 0.0384)),
        ("SASRec, full-softmax CE, tuned (library port)", (0.0508, 0.0348, 0.0740, 0.0423)),
        ("RPG (KDD 2025)", (0.0550, 0.0381, 0.0809, 0.0464)),
    ],
}
RETRIEVAL_STAGES = ("data", "encode", "tokenize", "train-retriever", "variants", "evaluate")
BUDGETS = {"cpu": "2 idle CPU cores", "gpu": "one H100/H200"}
KS = (5, 10, 20)
STRATA = ("popular", "middle", "long_tail", "cold")
# A stratum with fewer test users than this cannot separate systems: reported, not compared.
MIN_STRATUM_USERS = 100


def config_path(dataset: str, budget: str) -> Path:
    return ROOT / "configs" / "bench" / f"{dataset}.{budget}.yaml"


def stage_seconds(run_dir: Path) -> dict[str, float]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {name: round(float(s.get("seconds") or 0.0), 1)
            for name, s in manifest["stages"].items() if name in RETRIEVAL_STAGES}


def learning_curves(run_dir: Path) -> dict[str, list[list[float]]]:
    """Validation NDCG@10 by training step of every retriever in the run (main and variants)."""
    logs = {"retriever": run_dir / "retriever" / "train_log.jsonl"}
    for path in sorted((run_dir / "variants").glob("*/retriever/train_log.jsonl")):
        logs[f"variants/{path.parts[-3]}"] = path
    curves = {}
    for name, path in logs.items():
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            curves[name] = [[r["step"], r["valid_ndcg@10"]] for r in rows
                            if "valid_ndcg@10" in r]
    return curves


def system_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    n_items = int(metrics["dataset"]["items"])
    rows = []
    for name, sec in metrics["retrieval"].items():
        overall, ci = sec["overall"], sec.get("ci", {}).get("overall", {})
        row: dict[str, Any] = {"system": name}
        for k in KS:
            for m in ("recall", "ndcg"):
                key = f"{m}@{k}"
                row[key] = overall.get(key)
                if key in ci:
                    row[f"{key}_ci"] = ci[key]
        row["invalid@10"] = overall.get("invalid@10")
        cov = sec.get("exposure", {}).get("coverage@10")
        row["distinct@10"] = None if cov is None else int(round(cov * n_items))
        row["strata_recall@10"] = {s: sec.get("strata", {}).get(s, {}).get("recall@10")
                                   for s in STRATA}
        rows.append(row)
    rows.sort(key=lambda r: -(r["ndcg@10"] or 0.0))
    return rows


def _fmt(x: float | None, ci: list[float] | None = None) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown(result: dict[str, Any]) -> str:
    ds, budget = result["dataset"], result["budget"]
    per_stratum = result["test_users_per_stratum"]
    strata = [s for s in STRATA if per_stratum.get(s, 0) >= MIN_STRATUM_USERS]
    small = [f"{s} ({per_stratum.get(s, 0)})" for s in STRATA
             if 0 < per_stratum.get(s, 0) < MIN_STRATUM_USERS]
    lines = [
        f"### {ds}, `{budget}` budget ({BUDGETS[budget]})",
        "",
        f"`python benchmarks/quality.py --dataset {ds} --budget {budget}` "
        f"(config `{result['config']}`, code {result['code_version']}, "
        f"{result['date']}); {result['test_users']} test users, {result['items']} items, "
        "leave-one-out, full-catalogue ranking, history items not excluded; 95 % bootstrap "
        "intervals over test users.",
        "",
        "| system | R@5 | N@5 | R@10 | N@10 | R@20 | N@20 | "
        + " | ".join(f"{s} R@10 ({per_stratum[s]})" for s in strata)
        + " | distinct@10 | invalid@10 |",
        "|---|" + "---:|" * (6 + len(strata) + 2),
    ]
    for r in result["systems"]:
        cells = [r["system"], _fmt(r["recall@5"]), _fmt(r["ndcg@5"]),
                 _fmt(r["recall@10"], r.get("recall@10_ci")),
                 _fmt(r["ndcg@10"], r.get("ndcg@10_ci")), _fmt(r["recall@20"]),
                 _fmt(r["ndcg@20"])]
        cells += [_fmt(r["strata_recall@10"].get(s)) for s in strata]
        cells += [str(r["distinct@10"]), _fmt(r["invalid@10"])]
        lines.append("| " + " | ".join(cells) + " |")
    if small:
        lines += ["", "Strata with too few test users to separate systems (not shown): "
                  + ", ".join(small) + "."]
    anchors = ANCHORS.get(ds, [])
    if anchors:
        lines += ["", "Published anchors on the same data and protocol (R@5 / N@5 / R@10 / N@10): "
                  + "; ".join(f"{n} {a[0]:.4f} / {a[1]:.4f} / {a[2]:.4f} / {a[3]:.4f}"
                              for n, a in anchors) + "."]
    for name, curve in result.get("curves", {}).items():
        lines += ["", f"Learning curve of `{name}` (validation NDCG@10 at step): "
                  + ", ".join(f"{int(step)}: {value:.4f}" for step, value in curve) + "."]
    secs = result["stage_seconds"]
    lines += ["", "Wall time per stage (s): " + ", ".join(f"{k} {v:g}" for k, v in secs.items())
              + f"; total {result['total_seconds']:g} s on {result['machine']}."]
    return "\n".join(lines) + "\n"


def code_version() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True,
                        choices=["ml-100k-mm", "ml-1m-mm", "amazon-beauty"])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default runs/quality-<dataset>-<budget>)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as for `mmqrec run` (results are then labelled "
                             "with it)")
    args = parser.parse_args(argv)

    from pipeline.config import load_config
    from pipeline.stages import run_pipeline

    cfg_file = config_path(args.dataset, args.budget)
    if not cfg_file.exists():
        parser.error(f"no benchmark config {cfg_file.relative_to(ROOT)}")
    run_dir = args.out or ROOT / "runs" / f"quality-{args.dataset}-{args.budget}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(cfg_file, args.set)
    t0 = time.perf_counter()
    # Retrieval quality only: the CTR ranker (and its two-stage lists) is benchmarked by
    # benchmarks/ranker.py.
    run_pipeline(cfg=cfg, run_dir=run_dir, only=RETRIEVAL_STAGES)
    total = time.perf_counter() - t0

    metrics = json.loads((run_dir / "metrics.json").read_text())
    ds = metrics["dataset"]
    secs = stage_seconds(run_dir)
    result = {
        "dataset": args.dataset, "budget": args.budget,
        "config": str(cfg_file.relative_to(ROOT)), "overrides": args.set,
        "code_version": code_version(), "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "test_users": ds["test_users"], "items": ds["items"],
        "test_users_per_stratum": ds["test_targets_per_stratum"],
        "systems": system_rows(metrics),
        "anchors": {n: dict(zip(("recall@5", "ndcg@5", "recall@10", "ndcg@10"), a))
                    for n, a in ANCHORS.get(args.dataset, [])},
        "stage_seconds": secs,
        "curves": learning_curves(run_dir),
        "total_seconds": round(sum(secs.values()), 1),
        "this_invocation_seconds": round(total, 1),
        "comparisons": metrics.get("comparisons", {}),
    }
    suffix = "" if not args.set else "_" + "_".join(
        re.sub(r"[^A-Za-z0-9_]+", "-", s).strip("-") for s in args.set)
    stem = f"quality_{args.dataset}_{args.budget}{suffix}"
    args.results.mkdir(parents=True, exist_ok=True)
    from recdata.io import write_json, write_text

    write_json(args.results / f"{stem}.json", result)
    md = markdown(result)
    write_text(args.results / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
