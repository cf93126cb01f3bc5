"""The evaluation report (report.md + self-contained report.html + PNG charts).

It is rendered from the merged ``metrics.json`` alone, so a report can be rebuilt (or two runs
compared) without recomputing anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from eval.charts import ChartsUnavailable, grouped_bars, simple_bars
from recdata.metrics import STRATA
from eval.render import Bullets, Code, Document, Heading, Image, Para, Table, to_html, to_markdown
from eval.sections import is_run
from recdata.io import write_text

def _figure(doc: Document, caption: str, draw: Callable[[], Path]) -> None:
    """Add the figure ``draw`` writes, or a line saying why there is none."""
    try:
        doc.add(Image(draw(), caption))
    except ChartsUnavailable as exc:
        doc.add(Para(f"Figure not drawn ({exc}): {caption}."))


STRATUM_LABELS = {"popular": "popular", "middle": "middle", "long_tail": "long-tail",
                  "cold": "cold"}


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "—"
    if not ci:
        return fmt(value)
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def _ks(metrics: Mapping[str, Any]) -> list[int]:
    ks = metrics.get("protocol", {}).get("ks")
    return list(ks) if ks else [5, 10, 20]


def _retrieval_table(systems: Mapping[str, Any], scope: str, ks: list[int]) -> Table:
    """One row per system for ``scope`` ("overall" or a stratum name)."""
    ci_cols = {"recall@10", "ndcg@10"}
    names = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr", "invalid@10"]
    headers = ["system", "users"] + [n.replace("recall", "Recall").replace("ndcg", "NDCG")
                                     .replace("mrr", "MRR") for n in names]
    rows = []
    for system, sec in systems.items():
        values = sec["overall"] if scope == "overall" else sec.get("strata", {}).get(scope, {})
        cis = sec.get("ci", {})
        cis = cis.get("overall", {}) if scope == "overall" else cis.get("strata", {}).get(scope, {})
        cis = cis or {}
        row = [system, fmt(values.get("users"))]
        for n in names:
            row.append(fmt_ci(values.get(n), cis.get(n)) if n in ci_cols else fmt(values.get(n)))
        rows.append(row)
    return Table(headers=headers, rows=rows)


# A stratum with fewer test users than this cannot separate systems: the headline marks it
# instead of printing a row of zeros (with ~20 users one hit moves Recall@10 by .05).
MIN_STRATUM_USERS = 100


def _stratum_users(metrics: Mapping[str, Any]) -> dict[str, int]:
    tps = metrics.get("dataset", {}).get("test_targets_per_stratum", {})
    return {s: int(tps.get(s) or 0) for s in STRATA}


def headline_table(metrics: Mapping[str, Any]) -> Table:
    """System x (overall + every stratum with enough test users): R@10 and N@10 [interval]."""
    users = _stratum_users(metrics)
    scopes = ["overall"] + [s for s in STRATA if users[s] >= MIN_STRATUM_USERS]
    headers = ["system"]
    for scope in scopes:
        n = metrics.get("dataset", {}).get("test_users") if scope == "overall" else users[scope]
        label = STRATUM_LABELS.get(scope, scope)
        headers += [f"{label} R@10 (n={fmt(n)})", f"{label} N@10"]
    rows = []
    systems = metrics.get("retrieval", {})
    order = sorted(systems, key=lambda k: -(systems[k]["overall"].get("ndcg@10") or 0.0))
    for system in order:
        sec = systems[system]
        row = [system]
        for scope in scopes:
            values = sec["overall"] if scope == "overall" else sec.get("strata", {}).get(scope, {})
            ci = sec.get("ci", {})
            ci = ci.get("overall", {}) if scope == "overall" else \
                (ci.get("strata", {}).get(scope) or {})
            row += [fmt_ci(values.get("recall@10"), ci.get("recall@10")),
                    fmt_ci(values.get("ndcg@10"), ci.get("ndcg@10"))]
        rows.append(row)
    small = [f"{STRATUM_LABELS[s]} ({users[s]} users)" for s in STRATA
             if 0 < users[s] < MIN_STRATUM_USERS]
    caption = "Sorted by NDCG@10; bootstrap intervals in brackets."
    if small:
        caption += (" Too few test users to separate systems, so not shown: "
                    + ", ".join(small) + ".")
    return Table(headers=headers, rows=rows, caption=caption)


def protocols_table(metrics: Mapping[str, Any]) -> Table | None:
    """R@10 and N@10 of every system under both protocols (history items kept / removed), the
    headline first; None when no system carries the other protocol."""
    systems = metrics.get("retrieval", {})
    if not any(isinstance(s.get("other_protocol"), dict) for s in systems.values()):
        return None
    removed = bool(metrics.get("protocol", {}).get("exclude_history"))
    head, other = ("removed", "kept") if removed else ("kept", "removed")
    headers = ["system", f"R@10, history {head} (headline)", f"N@10, history {head}",
               f"R@10, history {other}", f"N@10, history {other}", "short lists"]
    rows = []
    order = sorted(systems, key=lambda k: -(systems[k]["overall"].get("ndcg@10") or 0.0))
    for system in order:
        sec = systems[system]
        alt = sec.get("other_protocol") if isinstance(sec.get("other_protocol"), dict) else {}
        ci, alt_ci = sec.get("ci", {}).get("overall", {}), alt.get("ci", {}).get("overall", {})
        values, alt_values = sec["overall"], alt.get("overall", {})
        rows.append([
            system,
            fmt_ci(values.get("recall@10"), ci.get("recall@10")),
            fmt_ci(values.get("ndcg@10"), ci.get("ndcg@10")),
            fmt_ci(alt_values.get("recall@10"), alt_ci.get("recall@10")),
            fmt_ci(alt_values.get("ndcg@10"), alt_ci.get("ndcg@10")),
            fmt(alt.get("short_lists", sec.get("short_lists"))),
        ])
    caption = (f"The headline protocol (eval.exclude_history = {str(removed).lower()}) is the one "
               "every other table uses. Short lists: users whose list under the protocol with "
               "history items removed holds fewer than the cut-off, because the stored list (a "
               "beam's output) was not deep enough; their empty slots count as misses. — means "
               "the list was filtered when it was made, so the other protocol cannot be shown.")
    return Table(headers=headers, rows=rows, caption=caption)


def headline_sentences(metrics: Mapping[str, Any]) -> list[str]:
    """One sentence per comparison the numbers support (paired intervals that exclude 0 say
    "beats"; the others say the difference is not detectable)."""
    out = []
    strongest = metrics.get("strongest_baseline")
    if strongest:
        best = metrics.get("retrieval", {}).get(strongest, {}).get("overall", {})
        out.append(f"The strongest baseline is {strongest} (NDCG@10 "
                   f"{fmt(best.get('ndcg@10'))}); every system is compared with it first.")
    comparisons = sorted(metrics.get("comparisons", []), key=lambda c: c.get("b") != strongest)
    for c in comparisons:
        if c.get("metric") != "ndcg@10" or c.get("scope") != "overall":
            continue
        lo, hi = c["ci"]
        interval = f"{c['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        if lo > 0:
            out.append(f"{c['a']} beats {c['b']} on NDCG@10 by {interval} "
                       f"(paired bootstrap p = {c['p_bootstrap']:.3f}, {c['users']} users).")
        elif hi < 0:
            out.append(f"{c['b']} beats {c['a']} on NDCG@10 by {-c['diff']:+.4f} "
                       f"[{-hi:+.4f}, {-lo:+.4f}] (paired bootstrap p = "
                       f"{c['p_bootstrap']:.3f}, {c['users']} users).")
        else:
            out.append(f"{c['a']} and {c['b']} cannot be told apart on NDCG@10: {interval} "
                       f"({c['users']} users).")
    ranking = metrics.get("ranking", {})
    if is_run(ranking) and {"ranker_sid", "ranker_itemid"} <= set(ranking):
        sid, item = ranking["ranker_sid"], ranking["ranker_itemid"]
        lt_s = sid.get("strata", {}).get("long_tail", {})
        lt_i = item.get("strata", {}).get("long_tail", {})
        if lt_s.get("auc") is not None and lt_i.get("auc") is not None:
            diff = lt_s["auc"] - lt_i["auc"]
            out.append(
                f"The SID ranker {'beats' if diff > 0 else 'trails'} the ItemID ranker on "
                f"long-tail AUC by {diff:+.3f} ({lt_s['auc']:.3f} vs {lt_i['auc']:.3f}, "
                f"{fmt(lt_s.get('impressions'))} long-tail impressions, no interval) and "
                f"overall by {sid['overall']['auc'] - item['overall']['auc']:+.3f} AUC.")
    return out


def build_document(metrics: Mapping[str, Any], *, out_dir: Path) -> Document:
    """Assemble the report; charts are written into ``out_dir``."""
    protocol = metrics.get("protocol", {})
    dataset = metrics.get("dataset", {})
    title = f"mmqrec evaluation — {dataset.get('name') or 'dataset'}"
    doc = Document(title=title)
    ks = _ks(metrics)
    conf = protocol.get("bootstrap", {}).get("confidence", 0.95)
    doc.add(Para(
        f"Run directory: {metrics.get('run_dir', '?')}. Every system is scored on the same "
        f"leave-one-out test users with full-catalogue rankings; intervals are "
        f"{round(100 * conf)}% bootstrap intervals over users."
    ))

    if metrics.get("retrieval"):
        doc.add(Heading("Answer"), headline_table(metrics))
        sentences = headline_sentences(metrics)
        if sentences:
            doc.add(Bullets(sentences))
        protocols = protocols_table(metrics)
        if protocols is not None:
            doc.add(Heading("Both protocols", level=3), protocols)

    not_run = metrics.get("not_run", {})
    if not_run:
        doc.add(Heading("Not run"), Bullets([f"{k}: {v}" for k, v in not_run.items()]))

    # ------------------------------------------------------------------ dataset
    doc.add(Heading("Dataset"))
    rows = [[k.replace("_", " "), fmt(dataset.get(k))] for k in (
        "name", "users", "items", "interactions", "train_interactions", "test_users",
        "mean_sequence_length", "items_with_text", "items_with_image") if k in dataset]
    doc.add(Table(headers=["quantity", "value"], rows=rows))
    ips, tps = dataset.get("items_per_stratum", {}), dataset.get("test_targets_per_stratum", {})
    doc.add(Table(
        headers=["stratum", "items", "test targets"],
        rows=[[STRATUM_LABELS[s], fmt(ips.get(s)), fmt(tps.get(s))] for s in STRATA],
        caption="Popularity strata (training interactions); users are grouped by the stratum "
                "of their test target.",
    ))
    if dataset.get("skipped"):
        doc.add(Para("Skipped while loading: " + ", ".join(
            f"{k}: {v}" for k, v in dataset["skipped"].items())))

    # ------------------------------------------------------------------ tokenizer
    doc.add(Heading("Tokenizer"))
    tok = metrics.get("tokenizer", {})
    if not is_run(tok):
        doc.add(Para(f"Not run ({tok.get('reason', 'no tokenizer metrics')})."))
    else:
        keys = ["tokenizer", "reconstruction", "entropy", "utilization", "collision_rate",
                "max_collision_group", "sid_length", "codebook_sizes"]
        doc.add(Table(headers=["metric", "value"],
                      rows=[[k, fmt(tok.get(k)) if not isinstance(tok.get(k), list)
                             else ", ".join(map(str, tok[k]))] for k in keys if k in tok]))
        per_position = tok.get("per_position") or []
        if per_position:
            doc.add(Table(
                headers=["position / expert", "codebook size", "utilisation", "entropy (bits)",
                         "perplexity"],
                rows=[[p.get("name", str(i)), fmt(p.get("codebook_size")),
                       fmt(p.get("utilization")), fmt(p.get("entropy")), fmt(p.get("perplexity"),
                                                                                2)]
                      for i, p in enumerate(per_position)],
                caption="Codebook utilisation per expert (share of codes used by some item).",
            ))
            _figure(doc, "Codebook utilisation per expert", lambda: simple_bars(
                path=out_dir / "codebook_utilisation.png",
                labels=[p.get("name", str(i)) for i, p in enumerate(per_position)],
                values=[p.get("utilization") or 0.0 for p in per_position],
                ylabel="utilisation", title="Codebook utilisation per expert", ylim=(0, 1.05),
            ))

    variants = metrics.get("tokenizer_variants") or {}
    if variants and is_run(tok):
        cols = ["reconstruction", "entropy", "utilization", "collision_rate", "max_collision_group",
                "sid_length", "train_seconds"]
        rows = [[f"{tok.get('tokenizer', 'main')} (main run)"] + [fmt(tok.get(c)) for c in cols]]
        rows += [[f"{v.get('tokenizer', name)} (variants/{name})"] + [fmt(v.get(c)) for c in cols]
                 for name, v in variants.items()]
        doc.add(Table(headers=["tokenizer"] + cols, rows=rows,
                      caption="Every tokenizer of this run, side by side (same embeddings)."))

    # ------------------------------------------------------------------ retrieval
    doc.add(Heading("Retrieval"))
    systems = metrics.get("retrieval", {})
    if not systems:
        doc.add(Para("No retrieval system was evaluated."))
    else:
        doc.add(Para(
            "Recall@K equals hit rate (one target per user); NDCG@K = 1/log2(rank+1); MRR over "
            f"the top {max(ks)}; invalid@10 = share of top-10 slots that are empty or not a "
            "catalogue item. Recall@10 and NDCG@10 show the bootstrap interval in brackets."
        ))
        doc.add(Heading("Overall", 3), _retrieval_table(systems, "overall", ks))
        for s in STRATA:
            doc.add(Heading(f"Stratum: {STRATUM_LABELS[s]}", 3), _retrieval_table(systems, s, ks))
        exp_rows = []
        for system, sec in systems.items():
            e = sec.get("exposure", {})
            exp_rows.append([system, fmt(e.get("coverage@10")), fmt(e.get("long_tail_share@10")),
                             fmt(e.get("cold_share@10")), fmt(e.get("gini@10"))])
        doc.add(Heading("Exposure of the top-10 lists", 3), Table(
            headers=["system", "catalogue coverage", "long-tail share", "cold share",
                     "Gini of exposure"], rows=exp_rows))
        groups = [f"overall\n(n={fmt(dataset.get('test_users'))})"] + [
            f"{STRATUM_LABELS[s]}\n(n={fmt(tps.get(s))})" for s in STRATA]
        for metric, label in (("ndcg@10", "NDCG@10"), ("recall@10", "Recall@10")):
            series, errors = {}, {}
            for system, sec in systems.items():
                strata = sec.get("strata", {})
                series[system] = [sec["overall"].get(metric)] + [
                    strata.get(s, {}).get(metric) for s in STRATA]
                ci = sec.get("ci", {})
                errors[system] = [ci.get("overall", {}).get(metric)] + [
                    (ci.get("strata", {}).get(s) or {}).get(metric) for s in STRATA]
            _figure(doc, f"{label} per stratum per system (error bars: bootstrap intervals)",
                    lambda: grouped_bars(
                        path=out_dir / f"{metric.replace('@', '_at_')}_by_stratum.png",
                        groups=groups, series=series, errors=errors, ylabel=label,
                        title=f"{label} per popularity stratum (target item)"))
        # metrics.json keeps every compared metric; the report shows NDCG@10.
        comps = [c for c in metrics.get("comparisons", []) if c["metric"] == "ndcg@10"]
        if comps:
            doc.add(Heading("Paired comparisons", 3), Para(
                "NDCG@10, per-user differences on the same test users: mean difference A − B "
                "with a paired bootstrap interval and p-value, and the exact sign test over users "
                "where the two systems differ (Recall@10 comparisons are in metrics.json)."))
            doc.add(Table(
                headers=["A", "B", "metric", "scope", "A", "B", "A − B [interval]", "A wins",
                         "B wins", "p (bootstrap)", "p (sign)"],
                rows=[[c["a"], c["b"], c["metric"], STRATUM_LABELS.get(c["scope"], c["scope"]),
                       fmt(c["mean_a"]), fmt(c["mean_b"]), fmt_ci(c["diff"], c["ci"]),
                       fmt(c["wins"]), fmt(c["losses"]), fmt(c["p_bootstrap"], 3),
                       fmt(c["p_sign"], 3)] for c in comps],
            ))

    # ------------------------------------------------------------------ ranking
    doc.add(Heading("Ranking (CTR)"))
    ranking = metrics.get("ranking", {})
    if not is_run(ranking):
        doc.add(Para(f"Not run ({ranking.get('reason', 'no ranker metrics')})."))
    else:
        rows = []
        for model, sec in ranking.items():
            for scope in ["overall", *STRATA]:
                v = sec["overall"] if scope == "overall" else sec.get("strata", {}).get(scope, {})
                rows.append([model, STRATUM_LABELS.get(scope, scope), fmt(v.get("auc")),
                             fmt(v.get("gauc")), fmt(v.get("logloss")), fmt(v.get("impressions")),
                             fmt(v.get("gauc_users")), fmt(v.get("gauc_users_excluded"))])
        doc.add(Para("AUC with ties counted one half; GAUC = per-user AUC weighted by impressions, "
                     "one-class users excluded (counted); strata by the scored item."))
        doc.add(Table(headers=["model", "scope", "AUC", "GAUC", "log-loss", "impressions",
                               "GAUC users", "excluded users"], rows=rows))
        groups = ["overall"] + [STRATUM_LABELS[s] for s in STRATA]
        series = {m: [sec["overall"].get("auc")] + [sec.get("strata", {}).get(s, {}).get("auc")
                                                    for s in STRATA]
                  for m, sec in ranking.items()}
        _figure(doc, "Ranker AUC per stratum (ItemID vs SID)", lambda: grouped_bars(
            path=out_dir / "ranking_auc_by_stratum.png", groups=groups, series=series,
            ylabel="AUC", title="Ranker AUC per stratum"))

    # ------------------------------------------------------------------ protocol
    doc.add(Heading("Protocol"))
    doc.add(Bullets([f"{k}: {v if isinstance(v, str) else json.dumps(v, sort_keys=True)}"
                     for k, v in protocol.items()]))
    details = {name: {k: sec[k] for k in ("source", "missing_users", "decoding", "protocol")
                      if k in sec} for name, sec in systems.items()}
    details = {k: v for k, v in details.items() if v}
    baselines = metrics.get("baselines", {})
    if details or baselines:
        doc.add(Heading("System details", 3),
                Code(json.dumps({"systems": details, "baselines": baselines}, indent=2,
                                sort_keys=True)))
    return doc


def write_report(metrics: Mapping[str, Any], *, out_dir: Path) -> dict[str, Path]:
    """Write report.md, report.html and the PNG charts into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = build_document(metrics, out_dir=out_dir)
    md = write_text(out_dir / "report.md", to_markdown(doc, base=out_dir))
    page = write_text(out_dir / "report.html", to_html(doc))
    return {"markdown": md, "html": page}
