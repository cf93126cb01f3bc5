"""Train the tokenizers on the embeddings of one or more run directories and print their quality
side by side: utilisation, token entropy, collision rate, largest collision group,
reconstruction error and training time.

    python experiments/tokenizer_quality.py RUN_DIR [RUN_DIR ...] [--variants mmq,rqvae,rqkmeans]
        [--epochs N] [--threads T] [--seed S] [--work DIR] [--json OUT]

Each variant trains in a scratch copy of the run directory (``data/`` and ``embeddings/`` are
linked, never modified), so the run directory's own ``tokenizer/`` is left alone. Variants:
the registry names plus the MMQ ablations of the paper (``mmq-l2``: Euclidean instead of cosine
assignment, ``mmq-noaux``, ``mmq-noortho``, ``mmq-specific``: specific experts only), SID length scaling
(``mmq-x2``: 4 + 4 + 4 experts; ``mmq-text4``: 4 text experts, as configs/amazon-beauty.yaml;
``mmq-text2``: 2 text experts and no vision experts), ``rqvae-text`` (RQ-VAE over the text embedding only) and
``rqkmeans-plain`` (residual k-means without the cluster-size cap).

Reconstruction is the per-element mean squared error on the standardised input each tokenizer
models ([text; image] for mmq, rqvae and rqkmeans on a multimodal run; text for rqvae-text), so
it is comparable between variants that model the same input. Entropy is in bits per position
(maximum log2 of the codebook size = 8 for 256 codes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch

from recdata.errors import DataError
from recdata.io import read_json
from tokenizer.config import TokenizerConfig
from tokenizer.stage import run as run_stage

VARIANTS: dict[str, dict] = {
    "mmq": {"name": "mmq"},
    "rqvae": {"name": "rqvae"},
    "rqkmeans": {"name": "rqkmeans"},
    "rqvae-text": {"name": "rqvae", "rq": {"input": "text"}},
    "mmq-l2": {"name": "mmq", "mmq": {"assignment": "l2"}},
    "mmq-noaux": {"name": "mmq", "mmq": {"aux_loss": False}},
    "mmq-noortho": {"name": "mmq", "mmq": {"ortho_loss": False}},
    "mmq-specific": {"name": "mmq", "mmq": {"specific_only": True}},
    "mmq-x2": {"name": "mmq", "mmq": {"n_shared": 4, "n_text": 4, "n_vision": 4}},
    "mmq-text4": {"name": "mmq", "mmq": {"n_text": 4}},
    "mmq-text2": {"name": "mmq", "mmq": {"n_text": 2, "n_vision": 0}},
    "mmq-ortho-weights": {"name": "mmq", "mmq": {"ortho_target": "weights", "ortho_weight": 0.005}},
    "mmq-ortho-out": {"name": "mmq", "mmq": {"ortho_target": "outputs", "ortho_weight": 1.0}},
    "mmq-ortho-out0.1": {"name": "mmq", "mmq": {"ortho_target": "outputs", "ortho_weight": 0.1}},
    "mmq-ortho-out0.3": {"name": "mmq", "mmq": {"ortho_target": "outputs", "ortho_weight": 0.3}},
    "mmq-ortho-out5": {"name": "mmq", "mmq": {"ortho_target": "outputs", "ortho_weight": 5.0}},
    "mmq-k512": {"name": "mmq", "codebook_size": 512},
    "rqkmeans-plain": {"name": "rqkmeans", "rq": {"balanced": False}},
}
"""Variant -> TokenizerConfig fields (tokenizer-specific ones in their ``mmq`` / ``rq`` section)."""


def scratch_run(run_dir: Path, work: Path) -> Path:
    """A run directory whose data/ and embeddings/ are links to ``run_dir``'s."""
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "embeddings"):
        link = work / sub
        if not link.exists():
            os.symlink((run_dir / sub).resolve(), link)
    return work


def dataset_name(run_dir: Path) -> str:
    meta = run_dir / "data" / "dataset.json"
    if meta.exists():
        return str(read_json(meta).get("name", run_dir.name))
    return run_dir.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--variants", default="mmq,rqvae,rqkmeans",
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=None, help="keep scratch run dirs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variants {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2

    work_root = args.work or Path(tempfile.mkdtemp(prefix="tokbench-"))
    rows = []
    header = ("| dataset | tokenizer | items | SID len | utilisation | min util | entropy (bits) "
              "| collision rate | max group | recon MSE | ortho term | text gates >0.9 | seconds |")
    print(header)
    print("|" + "|".join(["---"] * 13) + "|")
    for run_dir in args.run_dirs:
        ds = dataset_name(run_dir)
        for variant in names:
            fields = dict(VARIANTS[variant])
            if args.epochs is not None:
                fields["epochs"] = args.epochs
            try:
                cfg = TokenizerConfig.from_dict(fields)
            except DataError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            scratch = scratch_run(run_dir, work_root / f"{run_dir.name}-{variant}")
            try:
                summary = run_stage(cfg=cfg, run_dir=scratch, seed=args.seed, device=args.device)
            except DataError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            metrics = read_json(scratch / "tokenizer" / "metrics.json")
            row = {
                "dataset": ds, "tokenizer": variant, "items": metrics["n_items"],
                "sid_length": metrics["sid_length"], "utilization": metrics["utilization"],
                "min_utilization": metrics["min_utilization"], "entropy": metrics["entropy"],
                "collision_rate": metrics["collision_rate"],
                "max_collision_group": metrics["max_collision_group"],
                "reconstruction": metrics["reconstruction"], "seconds": summary["train_seconds"],
                "per_position": {p["name"]: round(p["utilization"], 3) for p in metrics["per_position"]},
                "ortho": (metrics.get("final_train_loss") or {}).get("ortho"),
                "gates": metrics.get("gates", {}),
            }
            hard = row["gates"].get("text", {}).get("hard_share")
            rows.append(row)
            print(f"| {ds} | {variant} | {row['items']} | {row['sid_length']} | "
                  f"{row['utilization']:.3f} | {row['min_utilization']:.3f} | {row['entropy']:.2f} | "
                  f"{row['collision_rate']:.4f} | {row['max_collision_group']} | "
                  f"{row['reconstruction']:.4f} | "
                  f"{'-' if row['ortho'] is None else format(row['ortho'], '.3g')} | "
                  f"{'-' if hard is None else format(hard, '.3f')} | {row['seconds']:.1f} |",
                  flush=True)
    print(f"\nthreads: {torch.get_num_threads()}, device: {args.device}, seed: {args.seed}, "
          f"scratch run dirs: {work_root}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
