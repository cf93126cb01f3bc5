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
an interrupted benchmark resumes. ``--profile NAME`` runs ``<dataset>.<budget>-<NAME>.yaml``, an
extension of the budget's config (e.g. systems that do not fit the budget), and labels
its results ``<budget>-<NAME>``. ``python benchmarks/render_results.py`` then rewrites the
README's results block from the results folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Published figures on the same data and protocol (../shared/reference/anchors.md): leave-one-out,
# full ranking. R@5, N@5, R@10, N@10 (None where the source reports only the @10 figures).
ANCHORS: dict[str, list[tuple[str, tuple[float | None, float | None, float, float]]]] = {
    "amazon-beauty": [
        ("SASRec (TIGER's table)", (0.0387, 0.0249, 0.0605, 0.0318)),
        ("TIGER (paper)", (0.0454, 0.0321, 0.0648, 0.0384)),
        ("MMQ (paper, text + image)", (0.0455, 0.0296, 0.0675, 0.0384)),
        ("SASRec, full-softmax CE, tuned (library port)", (0.0508, 0.0348, 0.0740, 0.0423)),
        ("RPG (KDD 2025)", (0.0550, 0.0381, 0.0809, 0.0464)),
    ],
    "ml-1m-mm": [
        ("SASRec, sampled softmax", (None, None, 0.2929, 0.1684)),
        ("eSASRec", (None, None, 0.3133, 0.1772)),
        ("HSTU", (None, None, 0.3097, 0.1720)),
        ("HSTU-large", (None, None, 0.3294, 0.1893)),
    ],
}
RETRIEVAL_STAGES = ("data", "encode", "tokenize", "train-retriever", "variants", "evaluate")
BUDGETS = {"cpu": "2 idle CPU cores", "gpu": "one H100/H200"}
KS = (5, 10, 20)
STRATA = ("popular", "middle", "long_tail", "cold")
# A stratum with fewer test users than this cannot separate systems: reported, not compared.
MIN_STRATUM_USERS = 100


def config_path(dataset: str, budget: str, profile: str | None = None) -> Path:
    return ROOT / "configs" / "bench" / f"{dataset}.{budget_label(budget, profile)}.yaml"


def budget_label(budget: str, profile: str | None) -> str:
    """``cpu``, or ``cpu-<profile>`` for a profile of the cpu budget (a config that extends the
    budget's, e.g. with systems that do not fit it)."""
    return budget if not profile else f"{budget}-{profile}"


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
    ds, budget, profile = result["dataset"], result["budget"], result.get("profile")
    per_stratum = result["test_users_per_stratum"]
    strata = [s for s in STRATA if per_stratum.get(s, 0) >= MIN_STRATUM_USERS]
    small = [f"{s} ({per_stratum.get(s, 0)})" for s in STRATA
             if 0 < per_stratum.get(s, 0) < MIN_STRATUM_USERS]
    lines = [
        f"### {ds}, `{budget}` budget ({BUDGETS[budget]})"
        + (f", profile `{profile}`" if profile else ""),
        "",
        f"`python benchmarks/quality.py --dataset {ds} --budget {budget}"
        + (f" --profile {profile}" if profile else "") + "` "
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
                  + "; ".join(f"{n} " + " / ".join("—" if v is None else f"{v:.4f}" for v in a)
                              for n, a in anchors) + "."]
    for name, curve in result.get("curves", {}).items():
        lines += ["", f"Learning curve of `{name}` (validation NDCG@10 at step): "
                  + ", ".join(f"{int(step)}: {value:.4f}" for step, value in curve) + "."]
    if result.get("note"):
        lines += ["", result["note"]]
    for name, why in result.get("dropped_baselines", {}).items():
        lines += ["", f"Baseline `{name}` is missing from this table: {why}."]
    secs = result["stage_seconds"]
    here = result.get("stages_here") or list(secs)
    lines += ["", "Wall time per stage (s): "
              + ", ".join(f"{k} {v:g}" + ("" if k in here else "*") for k, v in secs.items())
              + f"; total {result['total_seconds']:g} s on {result['machine']}"
              + ("; * run earlier, not counted." if set(secs) - set(here) else ".")]
    return "\n".join(lines) + "\n"


def machine(device: str) -> str:
    from recdata.runtime import resolve_device

    text = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    resolved = resolve_device(device)
    if resolved.startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name(resolved)}"
    return text


def train_baselines(*, cfg: Any, run_dir: Path) -> int:
    """Train (or reuse) every baseline of ``cfg.eval`` on the run's split, as evaluate would."""
    from eval.baselines import run_baseline
    from recdata.runtime import resolve_device
    from recdata.split import SequentialSplit

    split = SequentialSplit.from_run_dir(run_dir)
    for name in cfg.section("eval").baselines:
        run_baseline(name=name, split=split, cfg=cfg.section("eval"), run_dir=run_dir, seed=cfg.seed,
                     device=resolve_device(cfg.device))
    return 0


def code_version() -> str:
    # A copy of the tree without its git history (e.g. shipped to a GPU machine) is told its
    # commit through the environment.
    if os.environ.get("MMQREC_CODE_VERSION"):
        return os.environ["MMQREC_CODE_VERSION"]
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
    parser.add_argument("--profile", metavar="NAME",
                        help="run configs/bench/<dataset>.<budget>-<NAME>.yaml instead (an "
                             "extension of the budget's config, e.g. with systems beyond the "
                             "budget); results are labelled <budget>-<NAME>")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default runs/quality-<dataset>-<budget>)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as for `mmqrec run` (results are then labelled "
                             "with it)")
    parser.add_argument("--concurrent-baselines", action="store_true",
                        help="train the baselines in a second process while the retriever "
                             "trains (a GPU has room for both); evaluate then reuses them")
    parser.add_argument("--baselines-timeout", type=float, default=0.0, metavar="SECONDS",
                        help="with --concurrent-baselines: how long to wait for them once the "
                             "retriever is done (0 = as long as they take); a baseline not "
                             "finished by then is left out of the table, and the table says so")
    parser.add_argument("--baselines-only", action="store_true",
                        help="only train the config's baselines on the run's split (what the "
                             "second process of --concurrent-baselines runs)")
    parser.add_argument("--stages-from", choices=RETRIEVAL_STAGES, default=None,
                        help="run this stage and the later ones only; the earlier ones are "
                             "taken as they are in --out (e.g. computed on another machine)")
    parser.add_argument("--note", default="",
                        help="a sentence printed under the table (e.g. where earlier stages ran)")
    args = parser.parse_args(argv)

    from pipeline.config import load_config
    from pipeline.stages import run_pipeline
    from recdata.layout import layout

    cfg_file = config_path(args.dataset, args.budget, args.profile)
    label = budget_label(args.budget, args.profile)
    if not cfg_file.exists():
        parser.error(f"no benchmark config {cfg_file.relative_to(ROOT)}")
    run_dir = args.out or ROOT / "runs" / f"quality-{args.dataset}-{label}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = load_config(cfg_file, args.set)
    if args.baselines_only:
        return train_baselines(cfg=cfg, run_dir=run_dir)
    t0 = time.perf_counter()
    dropped: dict[str, str] = {}
    stages = RETRIEVAL_STAGES[RETRIEVAL_STAGES.index(args.stages_from or "data"):]
    if args.concurrent_baselines:
        if "data" in stages:
            run_pipeline(cfg=cfg, run_dir=run_dir, only=("data",))
        # The second process writes only baselines/<name>/, which evaluate reuses when its
        # key (config, split, seed) matches; the manifest stays this process's alone.
        second = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--dataset", args.dataset,
             "--budget", args.budget, "--out", str(run_dir), "--baselines-only",
             *(["--profile", args.profile] if args.profile else []),
             *[f"--set={s}" for s in args.set]])
        run_pipeline(cfg=cfg, run_dir=run_dir, only=stages[:-1])
        timed_out = False
        try:
            code = second.wait(timeout=args.baselines_timeout or None)
        except subprocess.TimeoutExpired:
            second.kill()
            code, timed_out = second.wait(), True
        # A baseline that did not finish beside the retriever is left out rather than trained
        # again after it, which would break the budget.
        finished = [b for b in cfg.section("eval").baselines
                    if (layout(run_dir).baseline_dir(b) / "metrics.json").exists()]
        for b in cfg.section("eval").baselines:
            if b not in finished:
                why = (f"still training {args.baselines_timeout:g} s after the retriever"
                       if timed_out else f"its process failed, exit {code}")
                dropped[b] = f"not finished beside the retriever ({why})"
                logging.warning("baseline %s: %s", b, dropped[b])
        cfg.section("eval").baselines = finished
    # Retrieval quality only: the CTR ranker (and its two-stage lists) is benchmarked by
    # benchmarks/ranker.py.
    run_pipeline(cfg=cfg, run_dir=run_dir, only=stages)
    total = time.perf_counter() - t0

    metrics = json.loads((run_dir / "metrics.json").read_text())
    ds = metrics["dataset"]
    secs = stage_seconds(run_dir)
    result = {
        "dataset": args.dataset, "budget": args.budget, "profile": args.profile,
        "config": str(cfg_file.relative_to(ROOT)), "overrides": args.set,
        "code_version": code_version(), "date": time.strftime("%Y-%m-%d"),
        "machine": machine(cfg.device),
        "note": args.note,
        "dropped_baselines": dropped,
        "test_users": ds["test_users"], "items": ds["items"],
        "test_users_per_stratum": ds["test_targets_per_stratum"],
        "systems": system_rows(metrics),
        "anchors": {n: dict(zip(("recall@5", "ndcg@5", "recall@10", "ndcg@10"), a))
                    for n, a in ANCHORS.get(args.dataset, [])},
        "stage_seconds": secs,
        "curves": learning_curves(run_dir),
        "stages_here": list(stages),
        "total_seconds": round(sum(v for k, v in secs.items() if k in stages), 1),
        "this_invocation_seconds": round(total, 1),
        "comparisons": metrics.get("comparisons", {}),
    }
    suffix = "" if not args.set else "_" + "_".join(
        re.sub(r"[^A-Za-z0-9_]+", "-", s).strip("-") for s in args.set)
    if len(suffix) > 80:  # file names have a length limit: keep a readable head and a hash
        suffix = suffix[:60] + "-" + hashlib.sha256(suffix.encode()).hexdigest()[:10]
    stem = f"quality_{args.dataset}_{label}{suffix}"
    args.results.mkdir(parents=True, exist_ok=True)
    from recdata.io import write_json, write_text

    write_json(args.results / f"{stem}.json", result)
    md = markdown(result)
    write_text(args.results / f"{stem}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
