"""Serving speed of a trained run: load time, one user at a time against batched calls, and the
HTTP service's throughput and latency as concurrency grows (micro-batching on against off).

    python benchmarks/serve.py runs/demo --users 256 --json benchmarks/results/serve_ml-100k.json

Baselines run in the same process on the same users: ``recommend([u])`` in a loop for the
batched Python call, and the server with ``max_batch=1`` (every request its own model call) for
the micro-batched one.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmqrec import Recommender  # noqa: E402


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


def _serve_in_thread(rec: Recommender, max_batch: int):
    import uvicorn

    from mmqrec.server import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rec, max_batch=max_batch, max_wait_ms=5.0),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--users", type=int, default=256, help="users per measurement")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    rec = Recommender.load(args.run_dir, device=args.device)
    load_s = time.perf_counter() - t0
    users = rec.user_ids[: args.users]
    rec.recommend(users[:4], k=args.k)  # warm-up

    t0 = time.perf_counter()
    for user in users:
        rec.recommend([user], k=args.k)
    one_by_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    for lo in range(0, len(users), 64):
        rec.recommend(users[lo: lo + 64], k=args.k)
    batched = time.perf_counter() - t0
    result = {
        "run_dir": str(args.run_dir), "device": args.device, "threads": torch.get_num_threads(),
        "users": len(users), "k": args.k, "load_s": round(load_s, 2),
        "python_one_by_one_users_per_s": round(len(users) / one_by_one, 1),
        "python_batched64_users_per_s": round(len(users) / batched, 1),
        "http": [],
    }
    print(f"load {load_s:.2f} s; Python API: one user per call {result['python_one_by_one_users_per_s']} "
          f"users/s, batches of 64 {result['python_batched64_users_per_s']} users/s")
    print("| server | concurrency | requests/s | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for max_batch, label in ((1, "no batching (max_batch=1)"), (64, "micro-batching (max_batch=64)")):
        server, thread, base = _serve_in_thread(rec, max_batch)
        try:
            for c in [int(x) for x in args.concurrency.split(",")]:
                row = {"server": label, **_http_round(base, users, args.k, c)}
                result["http"].append(row)
                print(f"| {label} | {c} | {row['requests_per_s']} | {row['p50_ms']} | {row['p95_ms']} |",
                      flush=True)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
