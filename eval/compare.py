"""Two evaluated runs side by side (``mmqrec report compare RUN_A RUN_B``).

Reads each run's merged ``metrics.json``. When both runs share the same split (identical
``data/`` sequences and strata), the two generative retrievers are also compared user by user
(paired bootstrap and sign test) from their stored candidate lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from eval.baselines import data_fingerprint
from recdata.metrics import STRATA, per_user_hits, target_strata
from eval.stats import paired_comparison
from eval.ranked import read_ranked
from eval.report import STRATUM_LABELS, fmt, fmt_ci
from eval.sections import is_run
from recdata.errors import DataError
from recdata.io import read_json, write_text
from recdata.split import SequentialSplit
from recdata.layout import layout

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")


def _load(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        raise DataError("no merged metrics (run `mmqrec evaluate` on this run first)", path=path)
    return read_json(path)


def _delta(a: Any, b: Any) -> str:
    if a is None or b is None:
        return "—"
    return f"{b - a:+.4f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out + [""]


def _retriever_of(metrics: Mapping[str, Any]) -> str | None:
    for name, sec in metrics.get("retrieval", {}).items():
        if str(sec.get("source", "")).startswith("retriever/candidates"):
            return name
    return None


def _same_split(run_a: Path, run_b: Path) -> bool:
    try:
        return data_fingerprint(run_a) == data_fingerprint(run_b)
    except DataError:
        return False


def compare_runs(*, run_a: Path, run_b: Path, out: Path | None = None) -> str:
    """Markdown comparison of two runs (B − A deltas); also written to ``out`` when given."""
    run_a, run_b = Path(run_a), Path(run_b)
    ma, mb = _load(run_a), _load(run_b)
    same = _same_split(run_a, run_b)
    lines = [f"# Comparison: A = {run_a} vs B = {run_b}", ""]
    lines.append(
        "Both runs use the same split (identical data/ sequences and strata)." if same else
        "WARNING: the runs do not share the same split; differences mix data and model changes."
    )
    lines.append("")

    da, db = ma.get("dataset", {}), mb.get("dataset", {})
    lines += ["## Dataset", ""]
    lines += _table(["quantity", "A", "B"], [[k, fmt(da.get(k)), fmt(db.get(k))] for k in (
        "name", "users", "items", "interactions", "test_users")])

    ta, tb = ma.get("tokenizer", {}), mb.get("tokenizer", {})
    lines += ["## Tokenizer", ""]
    rows = []
    for k in ("tokenizer", "reconstruction", "entropy", "utilization", "collision_rate",
              "max_collision_group", "sid_length"):
        a = ta.get(k) if is_run(ta) else "not run"
        b = tb.get(k) if is_run(tb) else "not run"
        delta = _delta(a, b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            else ""
        rows.append([k, fmt(a), fmt(b), delta])
    lines += _table(["metric", "A", "B", "B − A"], rows)

    ra, rb = ma.get("retrieval", {}), mb.get("retrieval", {})
    systems = list(dict.fromkeys([*ra, *rb]))
    lines += ["## Retrieval", ""]
    for scope in ("overall", *STRATA):
        rows = []
        for system in systems:
            row = [system]
            for metric in METRICS:
                vals = []
                for run in (ra, rb):
                    sec = run.get(system)
                    if sec is None:
                        vals.append(None)
                        continue
                    v = sec["overall"] if scope == "overall" else sec.get("strata", {}).get(
                        scope, {})
                    vals.append(v.get(metric))
                row += [fmt(vals[0]), fmt(vals[1]), _delta(vals[0], vals[1])]
            rows.append(row)
        headers = ["system"] + [f"{m} {side}" for m in METRICS for side in ("A", "B", "Δ")]
        lines += [f"### {STRATUM_LABELS.get(scope, scope)}", ""] + _table(headers, rows)

    ka, kb = _retriever_of(ma), _retriever_of(mb)
    if same and ka and kb:
        split = SequentialSplit.from_run_dir(run_a)
        depth = max(ma.get("protocol", {}).get("ks") or [20])
        lists = []
        for run in (run_a, run_b):
            ranked, _ = read_ranked(layout(run).candidates,
                                    n_users=split.n_users, depth=depth)
            lists.append(per_user_hits(ranked=ranked, targets=split.test_targets,
                                       valid_items=split.n_items))
        labels = target_strata(split.test_targets, split.strata)
        rows = []
        for metric in ("ndcg@10", "recall@10"):
            for scope in ("overall", *STRATA):
                sel = labels == scope if scope != "overall" else labels == labels
                if not sel.any():
                    continue
                res = paired_comparison(lists[1][metric][sel], lists[0][metric][sel])
                rows.append([metric, STRATUM_LABELS.get(scope, scope), fmt(res["users"]),
                             fmt(res["mean_b"]), fmt(res["mean_a"]),
                             fmt_ci(res["diff"], res["ci"]), fmt(res["p_bootstrap"], 3),
                             fmt(res["p_sign"], 3)])
        lines += [f"## Paired test: retriever B ({kb}) − retriever A ({ka})", ""]
        lines += _table(["metric", "scope", "users", "A", "B", "B − A [interval]",
                         "p (bootstrap)", "p (sign)"], [
            [r[0], r[1], r[2], r[4], r[3], r[5], r[6], r[7]] for r in rows])

    ga, gb = ma.get("ranking", {}), mb.get("ranking", {})
    lines += ["## Ranking (CTR)", ""]
    models = list(dict.fromkeys([*(ga if is_run(ga) else {}), *(gb if is_run(gb) else {})]))
    if not models:
        lines += ["Not run in either run.", ""]
    else:
        rows = []
        for model in models:
            for scope in ("overall", "long_tail"):
                row = [model, STRATUM_LABELS.get(scope, scope)]
                for metric in ("auc", "gauc", "logloss"):
                    vals = []
                    for run in (ga, gb):
                        sec = run.get(model) if is_run(run) else None
                        v = None
                        if sec:
                            part = sec["overall"] if scope == "overall" else sec.get(
                                "strata", {}).get(scope, {})
                            v = part.get(metric)
                        vals.append(v)
                    row += [fmt(vals[0]), fmt(vals[1]), _delta(vals[0], vals[1])]
                rows.append(row)
        lines += _table(["model", "scope"] + [f"{m} {s}" for m in ("AUC", "GAUC", "log-loss")
                                              for s in ("A", "B", "Δ")], rows)
    text = "\n".join(lines).rstrip() + "\n"
    if out is not None:
        write_text(out, text)
    return text
