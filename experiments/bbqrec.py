"""Measure the BBQ tokenizer and BBQRec (with and without reweighting) on a run directory.

The run directory needs ``data/`` and ``embeddings/`` (e.g. a copy of a main run). The script
trains the BBQ tokenizer into ``RUN_DIR/tokenizer/`` (unless ``--skip-tokenizer``), then BBQRec
and its no-reweighting ablation, and prints tokenizer metrics, overall and per-stratum
Recall@10 / NDCG@10, and wall-clock times.

    python experiments/bbqrec.py --run-dir runs/ml100k_bbq
    python experiments/bbqrec.py --run-dir RUN --bbq contrastive_weight=0 --rec similarity=prefix

``--bbq`` / ``--rec`` take ``key=value`` overrides of BBQConfig / BBQRecConfig (values parsed as
YAML). ``--tag`` suffixes the output folders so several settings can share one run directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import yaml


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def _row(name: str, metrics: dict, seconds: float) -> str:
    o, s = metrics["overall"], metrics["strata"]

    def fmt(d: dict, key: str) -> str:
        return "  -   " if d.get(key) is None else f"{d[key]:.4f}"

    cells = [fmt(o, "recall@10"), fmt(o, "ndcg@10")]
    for stratum in ("popular", "middle", "long_tail", "cold"):
        cells += [fmt(s[stratum], "recall@10"), fmt(s[stratum], "ndcg@10")]
    return f"| {name:<26} | " + " | ".join(cells) + f" | {seconds:7.1f} |"


def _per_user_ndcg10(run_dir: Path, name: str, targets) -> "np.ndarray":
    import numpy as np
    import polars as pl

    from recdata.metrics import per_user_hits

    frame = pl.read_parquet(run_dir / name / "ranked.parquet").sort("user_idx")
    ranked = np.array([row[:20] + [-1] * (20 - len(row)) for row in frame["items"].to_list()], dtype=np.int64)
    return per_user_hits(ranked=ranked, targets=targets, ks=(10,))["ndcg@10"]


def _paired_bootstrap(a, b, *, samples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over users and its 95 % percentile interval over resampled users."""
    import numpy as np

    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(1)
    return float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--bbq", nargs="*", default=[], help="BBQConfig overrides key=value")
    parser.add_argument("--tokenizer", nargs="*", default=[], help="TokenizerConfig overrides key=value")
    parser.add_argument("--rec", nargs="*", default=[], help="BBQRecConfig overrides key=value")
    parser.add_argument("--skip-tokenizer", action="store_true", help="reuse RUN_DIR/tokenizer")
    parser.add_argument("--no-ablation", action="store_true", help="skip the no-reweighting model")
    parser.add_argument("--no-rec", action="store_true", help="tokenizer only")
    parser.add_argument("--tag", default="", help="suffix of the BBQRec output folders")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from generative_rec.bbqrec import stage as rec_stage
    from generative_rec.bbqrec.config import BBQRecConfig
    from recdata.io import read_json
    from tokenizer.bbq import stage as bbq_stage
    from tokenizer.bbq.config import BBQConfig
    from tokenizer.config import TokenizerConfig

    run_dir = args.run_dir
    if not args.skip_tokenizer:
        tok_cfg = dataclasses.replace(TokenizerConfig(), name="bbq", **_overrides(args.tokenizer))
        bbq_cfg = BBQConfig(**_overrides(args.bbq))
        start, cpu = time.perf_counter(), time.process_time()
        bbq_stage.run(cfg=tok_cfg, run_dir=run_dir, seed=args.seed, device=args.device, bbq=bbq_cfg)
        print(f"bbq tokenizer: {time.perf_counter() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU "
              f"(bbq config: {json.dumps(_overrides(args.bbq)) or 'defaults'})")
    tm = read_json(run_dir / "tokenizer" / "metrics.json")
    beh = tm.get("behaviour", {}).get("level0", {})
    print(f"tokenizer {tm['tokenizer']}: reconstruction {tm['reconstruction']:.4f}, entropy "
          f"{tm['entropy']:.3f} bits, utilisation {tm['utilization']:.3f} (min {tm['min_utilization']:.3f}), "
          f"collision rate {tm['collision_rate']:.4f}, max group {tm['max_collision_group']}, "
          f"SID length {tm['sid_length']}, train {tm['train_seconds']:.1f} s")
    print("  per position: " + ", ".join(
        f"{p['name']} util {p['utilization']:.3f} H {p['entropy']:.2f}" for p in tm["per_position"]))
    if beh:
        print(f"  behaviour: next item shares level-0 code {beh['same_code_next']:.4f} vs chance "
              f"{beh['same_code_chance']:.4f} (lift {beh['lift']:.2f}); final contrastive "
              f"{tm['behaviour']['final_contrastive']:.4f}, CLUB {tm['behaviour']['final_club_mi']:.4f}")
    if args.no_rec:
        return

    rec_over = _overrides(args.rec)
    systems = [("bbqrec", True)] + ([] if args.no_ablation else [("bbqrec_noreweight", False)])
    header = ("| system                     | R@10   | N@10   | pop R@10 | pop N@10 | mid R@10 | mid N@10 "
              "| tail R@10 | tail N@10 | cold R@10 | cold N@10 | train s |")
    rows = []
    for name, reweight in systems:
        cfg = BBQRecConfig(**{**rec_over, "reweight": reweight, "name": name + args.tag})
        start, cpu = time.perf_counter(), time.process_time()
        summary = rec_stage.run(cfg=cfg, run_dir=run_dir, seed=args.seed, device=args.device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        metrics = read_json(run_dir / cfg.name / "metrics.json")
        rows.append(_row(cfg.name, metrics, seconds))
        print(f"{cfg.name}: best epoch {summary['best_epoch']} (valid NDCG@10 "
              f"{summary['best_valid_ndcg@10']:.4f}), {metrics['train']['epochs_run']} epochs, "
              f"train {summary['train_seconds']:.1f} s, total {seconds:.1f} s wall / {cpu:.1f} s CPU")
        table = metrics["similarity_bias"]["table[layer][head][similarity]"]
        if table is not None:
            print(f"  learned bias ({metrics['similarity_bias']['mode']}; layer x head x similarity 0..L): "
                  + json.dumps([[[round(v, 3) for v in head] for head in layer] for layer in table]))
    print(header)
    print("".join(c if c == "|" else "-" for c in header))
    for row in rows:
        print(row)
    if len(systems) == 2:
        from recdata.split import SequentialSplit

        targets = SequentialSplit.from_run_dir(run_dir).test_targets
        names = [n + args.tag for n, _ in systems]
        mean, lo, hi = _paired_bootstrap(_per_user_ndcg10(run_dir, names[0], targets),
                                         _per_user_ndcg10(run_dir, names[1], targets))
        print(f"NDCG@10 {names[0]} - {names[1]}: {mean:+.4f} (95 % paired bootstrap over users: "
              f"[{lo:+.4f}, {hi:+.4f}])")
    print("users per stratum: " + ", ".join(f"{k} {v['users']}" for k, v in metrics["strata"].items())
          + "; full-catalogue ranking, history items not excluded")


if __name__ == "__main__":
    main()
