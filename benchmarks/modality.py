"""Modality and tokenizer ablation: the same retriever and schedule on five ID tables, over
several seeds, summarised as mean ± sd.

    python benchmarks/modality.py --dataset ml-100k-mm --seeds 0 1 2
    python benchmarks/modality.py --dataset ml-100k-mm --seeds 0 1 2 --summarise-only

Each seed is one invocation of ``benchmarks/quality.py --profile modality --set seed=N`` (config
``configs/bench/<dataset>.cpu-modality.yaml``: MMQ on text + image, on text only and on images
only, RQ-VAE on the concatenated embedding, BBQ; the heuristic and most-popular beside them),
which writes its own table ``quality_<dataset>_cpu-modality_seed-N.{json,md}``; the run
directory is shared, so the data and embeddings are made once. This script then writes
``benchmarks/results/modality_<dataset>.{json,md}``: per system, test R@10 / N@10 as mean ± sd
over the seeds, with and without the priors, and per MMQ setting the tokenizer's collision rate
and each expert's mean gate weight (how much of the fused latent each expert carries).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Row order: the ID tables, then the baselines.
TOKENIZERS = {
    "mmq_tiger": "MMQ, text + image",
    "mmq_text": "MMQ, text only",
    "mmq_image": "MMQ, image only",
    "rqvae_tiger": "RQ-VAE, text + image concatenated",
    "bbq_tiger": "BBQ, text + image",
}
BASELINES = ("heuristic", "pop")


def seed_stem(dataset: str, seed: int) -> str:
    return f"quality_{dataset}_cpu-modality_seed-{seed}"


def run_seed(dataset: str, seed: int, out: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--dataset", dataset,
           "--budget", "cpu", "--profile", "modality", "--set", f"seed={seed}", "--out", str(out)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def tokenizer_stats(run_dir: Path) -> dict[str, Any]:
    """Collision rate and per-expert mean gate weights of the run's tokenizer."""
    path = run_dir / "tokenizer" / "metrics.json"
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text())
    gates = {group: [round(float(g), 4) for g in stats.get("importance", [])]
             for group, stats in (metrics.get("gates") or {}).items()}
    return {"collision_rate": metrics.get("collision_rate"), "gates": gates}


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def summarise(dataset: str, seeds: list[int], tokenizer_runs: dict[int, dict[str, Any]],
              results: Path = RESULTS) -> dict[str, Any]:
    tables = {}
    for seed in seeds:
        path = results / f"{seed_stem(dataset, seed)}.json"
        if not path.exists():
            raise SystemExit(f"error: {path} is missing: run this seed first")
        tables[seed] = json.loads(path.read_text())
    rows = []
    names = [*TOKENIZERS, *BASELINES]
    for name in names:
        row: dict[str, Any] = {"system": name, "ids": TOKENIZERS.get(name, "")}
        for suffix, label in (("", "with_priors"), ("_model_only", "model_only")):
            got = {seed: next((s for s in t["systems"] if s["system"] == name + suffix), None)
                   for seed, t in tables.items()}
            if any(v is None for v in got.values()):
                continue
            row[label] = {metric: _mean_sd([got[s][metric] for s in seeds])
                          for metric in ("recall@10", "ndcg@10")}
        stats = [tokenizer_runs.get(seed, {}).get(name) for seed in seeds]
        stats = [s for s in stats if s]
        if stats:
            collisions = [s["collision_rate"] for s in stats if s.get("collision_rate") is not None]
            if collisions:
                row["collision_rate"] = _mean_sd(collisions)
            row["gates"] = stats[-1].get("gates", {})  # the last seed's: one tokenizer's experts
        if "with_priors" in row:
            rows.append(row)
    first = tables[seeds[0]]
    return {
        "dataset": dataset, "seeds": seeds, "config": first["config"],
        "code_versions": sorted({t["code_version"] for t in tables.values()}),
        "date": time.strftime("%Y-%m-%d"), "machine": first["machine"],
        "test_users": first["test_users"], "items": first["items"],
        "seconds_per_seed": {s: t["this_invocation_seconds"] for s, t in tables.items()},
        "tables": [f"{seed_stem(dataset, s)}.md" for s in seeds],
        "rows": rows,
    }


def _cell(stat: dict[str, float] | None) -> str:
    return "—" if not stat else f"{stat['mean']:.4f} ± {stat['sd']:.4f}"


def markdown(summary: dict[str, Any]) -> str:
    seeds = summary["seeds"]
    lines = [
        f"### Modality and tokenizer ablation, {summary['dataset']}",
        "",
        f"`python benchmarks/modality.py --dataset {summary['dataset']} --seeds "
        f"{' '.join(map(str, seeds))}` (config `{summary['config']}`, code "
        f"{', '.join(summary['code_versions'])}, {summary['date']}); {summary['test_users']} test "
        f"users, {summary['items']} items; mean ± sd over {len(seeds)} seeds (tokenizer and "
        "retriever initialisation), every row with the same retriever and schedule. The priors "
        "and the heuristic read every modality in every row: the rows differ in their IDs.",
        "",
        "| system | IDs | R@10 | N@10 | R@10, model only | N@10, model only | collision rate "
        f"| mean gate weight per expert (seed {seeds[-1]}) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in summary["rows"]:
        wp, mo = row.get("with_priors", {}), row.get("model_only", {})
        gates = "; ".join(f"{group} " + " / ".join(f"{g:.2f}" for g in weights)
                          for group, weights in (row.get("gates") or {}).items())
        lines.append(
            f"| {row['system']} | {row['ids']} | {_cell(wp.get('recall@10'))} | "
            f"{_cell(wp.get('ndcg@10'))} | {_cell(mo.get('recall@10'))} | "
            f"{_cell(mo.get('ndcg@10'))} | {_cell(row.get('collision_rate'))} | {gates or '—'} |")
    secs = ", ".join(f"seed {s}: {v:.0f} s" for s, v in summary["seconds_per_seed"].items())
    lines += ["", f"Wall time per seed ({summary['machine']}): {secs}. Per-seed tables: "
              + ", ".join(f"`{t}`" for t in summary["tables"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k-mm")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None,
                    help="run directory shared by the seeds (default runs/quality-<dataset>-cpu-modality)")
    ap.add_argument("--summarise-only", action="store_true",
                    help="only rebuild the summary from the per-seed tables already written")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "runs" / f"quality-{args.dataset}-cpu-modality"
    stats_path = RESULTS / f"modality_{args.dataset}_tokenizers.json"
    tokenizer_runs = ({int(k): v for k, v in json.loads(stats_path.read_text()).items()}
                      if stats_path.exists() else {})
    if not args.summarise_only:
        for seed in args.seeds:
            run_seed(args.dataset, seed, out)
            tokenizer_runs[seed] = {"mmq_tiger": tokenizer_stats(out)}
            for variant in ("mmq_text", "mmq_image", "rqvae_tiger", "bbq_tiger"):
                tokenizer_runs[seed][variant] = tokenizer_stats(out / "variants" / variant)
            RESULTS.mkdir(parents=True, exist_ok=True)
            stats_path.write_text(json.dumps(tokenizer_runs, indent=1, sort_keys=True) + "\n")
    summary = summarise(args.dataset, args.seeds, tokenizer_runs)
    (RESULTS / f"modality_{args.dataset}.json").write_text(json.dumps(summary, indent=1) + "\n")
    md = markdown(summary)
    (RESULTS / f"modality_{args.dataset}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
