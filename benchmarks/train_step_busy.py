"""One retriever training step on an idle machine and beside a busy process, with the thread
settings training commands choose (:mod:`recdata.threads`) and with torch's own.

    python benchmarks/train_step_busy.py runs/demo --json benchmarks/results/train_step_busy_ml-100k.json

Runs ``benchmarks/train_step.py RUN --paths eager`` in a fresh process per setting (OpenMP reads
its wait policy once per process), first idle, then beside one CPU-burning process this script
starts and stops itself (``busy.py`` beside this script):

* ``mmqrec``: as many threads as :func:`recdata.threads.free_cores` finds free when the step
  starts, as ``mmqrec run`` and the stage commands do (OpenMP's own wait policy);
* ``torch defaults``: one thread per core, OpenMP's default (spinning) wait policy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from busy import DESCRIPTION, busy_neighbour
from recdata.threads import ENV_DEFAULTS, free_cores, usable_cores

STEP = Path(__file__).resolve().with_name("train_step.py")


def _step(run_dir: Path, *, env: dict[str, str], steps: int, warmup: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        proc = subprocess.run(
            [sys.executable, "-u", str(STEP), str(run_dir), "--paths", "eager", "--steps", str(steps),
             "--warmup", str(warmup), "--json", str(out)],
            env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise SystemExit(f"train_step.py failed: {proc.stderr.strip().splitlines()[-1:]}")
        return json.loads(out.read_text())[0]


def _settings(name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (*ENV_DEFAULTS, "OMP_NUM_THREADS")}
    if name == "mmqrec":
        env["OMP_NUM_THREADS"] = str(free_cores())  # measured now: idle, or beside the neighbour
    return env


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run with data/ and tokenizer/")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    rows = []
    print(f"{args.run_dir}: eager retriever step, {args.steps} timed steps, "
          f"{usable_cores()} usable cores; busy = {DESCRIPTION}")
    print("| settings | machine | threads | ms/step | busy / idle |")
    print("|---|---|---:|---:|---:|")
    idle_ms: dict[str, float] = {}
    for condition in ("idle", "busy"):
        for name in ("mmqrec", "torch defaults"):
            def measure() -> dict:
                env = _settings(name)
                threads = int(env.get("OMP_NUM_THREADS", usable_cores()))
                row = _step(args.run_dir, env=env, steps=args.steps, warmup=args.warmup,
                            timeout=args.timeout)
                return {"settings": name, "condition": condition, "threads": threads,
                        "wait_policy": env.get("OMP_WAIT_POLICY", "default"),
                        "ms_per_step": row["ms_per_step"], "mean_loss": row["mean_loss"]}

            if condition == "busy":
                with busy_neighbour():
                    row = measure()
            else:
                row = measure()
                idle_ms[name] = row["ms_per_step"]
            ratio = round(row["ms_per_step"] / idle_ms[name], 2)
            row["busy_over_idle"] = ratio
            rows.append(row)
            print(f"| {name} | {condition} | {row['threads']} | {row['ms_per_step']} | "
                  f"{ratio if condition == 'busy' else ''} |")
    if args.json:
        args.json.write_text(json.dumps({"run_dir": str(args.run_dir), "steps": args.steps,
                                         "busy_neighbour": DESCRIPTION, "rows": rows},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
