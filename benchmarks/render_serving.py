"""The README's serving figures, from ``benchmarks/results/serve_*.json`` (``benchmarks/serve.py``).

The block sits between ``<!-- serving:begin -->`` and ``<!-- serving:end -->``;
``python benchmarks/render_results.py`` writes it with the other generated blocks (and
``--check`` checks it).
"""

from __future__ import annotations

import json
from pathlib import Path



def _rate(row: dict) -> str:
    return f"{row['requests_per_s']:,.1f} req/s ({row['p50_ms']:,.0f} / {row['p95_ms']:,.0f} ms)"


def _label(server: str) -> str:
    return ("no batching (`--max-batch 1`)" if server.startswith("no batching")
            else "micro-batching (default)")


def _settings(r: dict) -> str:
    threads = f"{r['threads']} torch thread{'' if r['threads'] == 1 else 's'}"
    if "workers" not in r:  # a file from before the busy-machine rounds: one model worker
        return f"{threads} per call, one model worker, torch's default wait policy"
    return (f"{threads} per model worker, {r['workers']} workers, "
            f"`OMP_WAIT_POLICY={r['OMP_WAIT_POLICY']}`")


def serving_table(path: Path) -> str:
    """One serve result file as a paragraph and an idle / busy table."""
    r = json.loads(path.read_text())
    # Files written before the busy-machine rounds hold the idle figures at the top level.
    idle = r.get("idle") or {**{k: v for k, v in r.items() if k.startswith("python_")},
                             "http": r["http"]}
    busy, ratio = r.get("busy"), r.get("busy_slowdown", {})
    when = (f"code {r['code_version']}, {r['date']}; " if "code_version" in r else "")
    machine = r.get("machine", "2 CPU cores")
    neighbour = (f" *Busy*: beside {r['busy_neighbour']}, started and stopped by the benchmark."
                 if busy else " Idle machine only: measured before the busy-machine rounds.")
    lines = [
        f"`python benchmarks/serve.py {r['run_dir']} --json benchmarks/results/{path.name}` "
        f"({when}{r['users']} users, k = {r['k']}, {machine}; {_settings(r)}): loading takes "
        f"{r['load_s']:g} s.{neighbour} HTTP cells: requests/s (p50 / p95 latency).",
        "",
        "| measurement | idle | busy | busy / idle |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (("python_one_by_one_users_per_s", "Python API, one user per call"),
                       ("python_batched64_users_per_s", "Python API, calls of 64 users"),
                       ("python_batched64_all_cores_users_per_s",
                        "Python API, calls of 64 users, one torch thread per core")):
        if key not in idle:
            continue
        cells = [f"{idle[key]:,.1f} users/s", f"{busy[key]:,.1f} users/s" if busy else "–",
                 f"{ratio[key]:.2f}×" if key in ratio else "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for i, row in enumerate(idle["http"]):
        other = busy["http"][i] if busy else None
        key = f"http {row['server']} c={row['concurrency']}"
        cells = [_rate(row), _rate(other) if other else "–",
                 f"{ratio[key]:.2f}×" if key in ratio else "–"]
        lines.append(f"| HTTP, {_label(row['server'])}, {row['concurrency']} concurrent | "
                     + " | ".join(cells) + " |")
    if r.get("note"):
        lines += ["", f"Note: {r['note']}"]
    defaults = r.get("torch_defaults")
    if defaults and defaults.get("busy"):
        d_idle, d_busy, d_ratio = defaults["idle"], defaults["busy"], defaults["busy_slowdown"]
        lines += ["", (
            f"With torch's own settings instead ({defaults['threads']} threads per call, "
            f"`OMP_WAIT_POLICY` {defaults['OMP_WAIT_POLICY']}; a fresh process, "
            f"{defaults['users']} users), the Python API serves "
            f"{d_idle['python_one_by_one_users_per_s']:,.1f} users/s idle and "
            f"{d_busy['python_one_by_one_users_per_s']:,.1f} busy one user per call "
            f"({d_ratio['python_one_by_one_users_per_s']:.1f}× slower), "
            f"{d_idle['python_batched64_users_per_s']:,.1f} and "
            f"{d_busy['python_batched64_users_per_s']:,.1f} in calls of 64 "
            f"({d_ratio['python_batched64_users_per_s']:.1f}×).")]
    return "\n".join(lines) + "\n"


def serving_block(results: Path) -> str:
    return "\n".join(serving_table(p) for p in sorted(results.glob("serve_*.json")))
