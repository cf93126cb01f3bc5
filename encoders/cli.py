"""`python -m encoders RUN_DIR [--set KEY=VALUE ...]` — run the encode stage alone (also under torchrun).

    torchrun --nproc_per_node 2 -m encoders /runs/ml100k --device cpu --set image=false

``--set`` takes EncoderConfig fields with the same syntax as ``mmqrec --set`` (without the
``encoders.`` prefix); the summary is printed as JSON (by rank 0 only).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from recdata.errors import DataError
from recdata.overrides import config_with_overrides

from encoders.config import EncoderConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m encoders", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an EncoderConfig field, e.g. batch_size=32 or text=false (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from encoders.stage import run

    try:
        cfg = config_with_overrides(EncoderConfig, args.set, "encoders")
        summary = run(cfg=cfg, run_dir=args.run_dir, seed=args.seed, device=args.device)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
