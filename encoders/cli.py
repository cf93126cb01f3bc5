"""`python -m encoders RUN_DIR [options]` — run the encode stage alone (also under torchrun).

    torchrun --nproc_per_node 2 -m encoders /runs/ml100k --device cpu

Options mirror EncoderConfig fields; the summary is printed as JSON (by rank 0 only).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from recdata.errors import DataError

from encoders.config import EncoderConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m encoders", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--no-text", dest="text", action="store_false", help="skip the text encoder")
    parser.add_argument("--no-image", dest="image", action="store_false", help="skip the image encoder")
    parser.add_argument("--text-model")
    parser.add_argument("--text-template")
    parser.add_argument("--max-text-tokens", type=int)
    parser.add_argument("--image-model")
    parser.add_argument("--image-weights", help="weights file, or 'none' for random init")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--shard-size", type=int)
    parser.add_argument("--num-workers", type=int)
    half = parser.add_mutually_exclusive_group()
    half.add_argument("--half", dest="half_precision", action="store_true", default=None)
    half.add_argument("--no-half", dest="half_precision", action="store_false")
    return parser


def config_from_args(args: argparse.Namespace) -> EncoderConfig:
    values = {f.name: getattr(args, f.name) for f in fields(EncoderConfig) if getattr(args, f.name, None) is not None}
    return EncoderConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from encoders.stage import run

    try:
        summary = run(cfg=config_from_args(args), run_dir=args.run_dir, seed=args.seed, device=args.device)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
