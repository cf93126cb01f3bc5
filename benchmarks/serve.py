"""Serving speed of a trained run, on an idle machine and beside a busy process: load time, one
user per call against batched calls, and the HTTP service's throughput and latency as
concurrency grows (micro-batching on against off).

    python benchmarks/serve.py runs/demo --json benchmarks/results/serve_ml-100k.json

Every figure is measured twice in one run: idle, then beside one CPU-burning process that the
benchmark starts and stops itself (``busy.py`` beside this script); the busy/idle ratio is printed for
each. Baselines run in the same process on the same users: ``recommend([u])`` in a loop for the
batched Python call, and the server with ``max_batch=1`` (every request its own model call) for
the micro-batched one. With ``--compare-defaults`` (on by default) a second process measures
the Python API with torch's own thread settings (a team of spinning OpenMP threads), idle and
busy, on fewer users, to show what the settings of :mod:`recdata.threads` change. Output is
line-buffered, so a stopped run keeps what it printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from recdata.threads import set_env_defaults, usable_cores

# Settings the benchmark measures the product with, before torch loads OpenMP; the
# --torch-defaults child process measures without them.
if "--torch-defaults" not in sys.argv:
    set_env_defaults()
# What OpenMP reads when torch loads just below (importing mmqrec later sets it too late).
WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY", "unset (torch default)")

import torch  # noqa: E402

from busy import DESCRIPTION, busy_neighbour  # noqa: E402
from mmqrec import Recommender  # noqa: E402
from pipeline.manifest import code_version  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_round(base: str, users: list[str], k: int, concurrency: int) -> dict:
    latencies: list[float] = []

    def one(user: str) -> None:
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"{base}/users/{user}/recommendations?k={k}", timeout=300) as r:
            r.read()
        latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, users))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"concurrency": concurrency, "requests": len(users),
            "requests_per_s": round(len(users) / wall, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)}


def _serve_in_thread(rec: Recommender, max_batch: int, workers: int):
    import uvicorn

    from mmqrec.server import create_app

    port = _free_port()
    app = create_app(rec, max_batch=max_batch, max_wait_ms=5.0, workers=workers)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _python_rates(rec: Recommender, users: list[str], k: int) -> dict:
    t0 = time.perf_counter()
    for user in users:
        rec.recommend([user], k=k)
    one_by_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lo in range(0, len(users), 64):
        rec.recommend(users[lo: lo + 64], k=k)
    batched = time.perf_counter() - t0
    out = {"python_one_by_one_users_per_s": round(len(users) / one_by_one, 1),
           "python_batched64_users_per_s": round(len(users) / batched, 1)}
    # A Python caller that leaves torch's thread count alone runs one call on every core.
    threads, cores = torch.get_num_threads(), usable_cores()
    if cores != threads:
        torch.set_num_threads(cores)
        t0 = time.perf_counter()
        for lo in range(0, len(users), 64):
            rec.recommend(users[lo: lo + 64], k=k)
        out["python_batched64_all_cores_users_per_s"] = round(len(users) / (time.perf_counter() - t0), 1)
        torch.set_num_threads(threads)
    return out


def _measure(rec: Recommender, users: list[str], args: argparse.Namespace, condition: str) -> dict:
    out = {"condition": condition, **_python_rates(rec, users, args.k), "http": []}
    print(f"[{condition}] Python API: one user per call {out['python_one_by_one_users_per_s']} "
          f"users/s, batches of 64 {out['python_batched64_users_per_s']} users/s"
          + (f" ({out['python_batched64_all_cores_users_per_s']} on {usable_cores()} threads)"
             if "python_batched64_all_cores_users_per_s" in out else ""))
    if args.python_only:
        return out
    for max_batch, label in ((1, "no batching (max_batch=1)"), (64, "micro-batching (max_batch=64)")):
        server, thread, base = _serve_in_thread(rec, max_batch, args.workers)
        try:
            for c in [int(x) for x in args.concurrency.split(",")]:
                row = {"server": label, **_http_round(base, users, args.k, c)}
                out["http"].append(row)
                print(f"[{condition}] | {label} | {c} | {row['requests_per_s']} | "
                      f"{row['p50_ms']} | {row['p95_ms']} |")
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    return out


def _ratios(idle: dict, busy: dict) -> dict:
    """How many times slower each measurement ran beside the busy process."""
    out = {key: round(idle[key] / busy[key], 2) for key in idle
           if key.startswith("python_") and key in busy}
    for a, b in zip(idle["http"], busy["http"]):
        out[f"http {a['server']} c={a['concurrency']}"] = round(a["requests_per_s"] / b["requests_per_s"], 2)
    return out


def _torch_defaults(args: argparse.Namespace) -> dict | None:
    """The Python API with torch's own thread settings, idle and busy, in a fresh process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "OMP_NUM_THREADS")}
    cmd = [sys.executable, "-u", str(Path(__file__).resolve()), str(args.run_dir), "--torch-defaults",
           "--python-only", "--users", str(args.defaults_users), "-k", str(args.k),
           "--device", args.device]
    print(f"torch defaults (fresh process, {args.defaults_users} users):")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.defaults_timeout)
    sys.stdout.write("".join(f"  {line}\n" for line in proc.stdout.splitlines()
                             if not line.startswith("{")))
    rows = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        print(f"  failed: {proc.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(rows[-1])


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--users", type=int, default=256, help="users per measurement")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the product's)")
    parser.add_argument("--workers", type=int, default=usable_cores(),
                        help="the server's model workers (default: one per usable core)")
    parser.add_argument("--no-busy", action="store_true", help="measure the idle machine only")
    parser.add_argument("--python-only", action="store_true", help="skip the HTTP rounds")
    parser.add_argument("--compare-defaults", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure torch's own thread settings in a second process")
    parser.add_argument("--defaults-users", type=int, default=24)
    parser.add_argument("--defaults-timeout", type=float, default=300.0)
    parser.add_argument("--torch-defaults", action="store_true",
                        help="(internal) keep torch's thread settings; print the result as JSON")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    if not args.torch_defaults:
        from recdata.threads import apply_threads

        apply_threads(requested=args.threads, role="serve")
    t0 = time.perf_counter()
    rec = Recommender.load(args.run_dir, device=args.device)
    load_s = time.perf_counter() - t0
    users = rec.user_ids[: args.users]
    rec.recommend(users[:4], k=args.k)  # warm-up
    settings = {"threads": torch.get_num_threads(), "workers": args.workers,
                "OMP_WAIT_POLICY": WAIT_POLICY}
    print(f"load {load_s:.2f} s; {settings}; {usable_cores()} usable cores")
    result = {"run_dir": str(args.run_dir), "device": args.device, **settings,
              "code_version": code_version(), "date": datetime.date.today().isoformat(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "users": len(users), "k": args.k, "load_s": round(load_s, 2),
              "busy_neighbour": DESCRIPTION}
    idle = _measure(rec, users, args, "idle")
    result["idle"] = idle
    if not args.no_busy:
        with busy_neighbour():
            busy = _measure(rec, users, args, "busy")
        result["busy"] = busy
        result["busy_slowdown"] = _ratios(idle, busy)
        worst = max(result["busy_slowdown"].values())
        print(f"busy / idle: {result['busy_slowdown']}; worst {worst}x")
    if args.torch_defaults:
        print(json.dumps(result))
        return 0
    if args.compare_defaults and not args.no_busy:
        result["torch_defaults"] = _torch_defaults(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
