"""Rewrite the generated blocks of the README and docs/ from ``benchmarks/results/``.

    python benchmarks/render_results.py            # rewrite the blocks in place
    python benchmarks/render_results.py --check    # exit 1 when a block is out of date

Each block sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in its file:

* ``README.md``, ``headline``: one table of the headline benchmarks (``HEADLINE``), every system
  their result files hold, with each benchmark's date and code version;
* ``docs/results.md``, ``results``: every quality table (``quality_*.md``, written by
  ``benchmarks/quality.py``; the modality ablation's summary ``modality_*.md`` from
  ``benchmarks/modality.py`` in place of its per-seed tables), each followed by its reading
  notes (``reading_<table>.md``), and
  the decoding speed tables (``decode_*.md``, ``benchmarks/decode.py --results``);
* ``docs/experiments.md``, ``experiments``: every retriever experiment recorded by
  ``experiments/retriever_sweep.py`` (``retriever_sweep_*.jsonl``), the log of what was tried
  and the verdicts (``retriever_experiments.md``), and the tokenizer and beam-width tables.

So every figure in those blocks is exactly a committed result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from render_serving import serving_block  # the README's serving figures (serve_*.json)

ROOT = Path(__file__).resolve().parents[1]
# The order quality tables appear in; other quality files follow alphabetically.
ORDER = ("quality_ml-100k-mm_cpu", "quality_amazon-beauty_cpu", "quality_amazon-beauty_gpu",
         "quality_ml-1m-mm_cpu", "quality_ml-1m-mm_gpu")
# The benchmarks of the README's headline table, as (result file stem, column label).
HEADLINE = (("quality_amazon-beauty_cpu", "amazon-beauty"), ("quality_ml-100k-mm_cpu", "ml-100k-mm"),
            ("quality_ml-1m-mm_cpu", "ml-1m-mm"))


def _read(path: Path) -> str:
    return path.read_text().strip() + "\n"


def _with_overrides(md: str, overrides: list[str]) -> str:
    """A table run with ``--set`` says so in its heading and command: without them two tables
    of one dataset and budget read alike and the command would not reproduce the table."""
    if not overrides or "--set" in md:
        return md
    heading, rest = md.split("\n", 1)
    sets = " ".join(f"--set '{s}'" if any(c in s for c in "{}[] ") else f"--set {s}"
                    for s in overrides)
    heading += ", with " + ", ".join(f"`{s}`" for s in overrides)
    head, cmd_rest = rest.split("`python benchmarks/quality.py ", 1)
    cmd, tail = cmd_rest.split("`", 1)
    return f"{heading}\n{head}`python benchmarks/quality.py {cmd} {sets}`{tail}"


def quality_tables(results: Path) -> list[str]:
    # A seed of the modality ablation is one part of its summary (modality_*.md), shown instead.
    files = [p for p in sorted(results.glob("quality_*.md")) if "-modality_seed-" not in p.stem]
    files += sorted(results.glob("modality_*.md"))
    rank = {name: i for i, name in enumerate(ORDER)}
    files.sort(key=lambda p: (rank.get(p.stem, len(ORDER)), p.stem))
    parts = []
    for p in files:
        data = p.with_suffix(".json")
        overrides = (json.loads(data.read_text()).get("overrides") or []) if data.exists() else []
        parts.append(_with_overrides(_read(p), overrides))
        reading = results / f"reading_{p.stem}.md"
        if reading.exists():
            parts.append(_read(reading))
    return parts


def _cell(row: dict | None, key: str, ci: bool = False) -> str:
    if row is None or row.get(key) is None:
        return "–"
    bounds = row.get(f"{key}_ci") if ci else None
    return f"{row[key]:.4f}" + (f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else "")


def headline_table(results: Path) -> str:
    """Systems come from the result files themselves (best NDCG@10 of the first benchmark
    first), so a system added to a benchmark appears here without touching this script."""
    benches = [(label, json.loads((results / f"{stem}.json").read_text()))
               for stem, label in HEADLINE if (results / f"{stem}.json").exists()]
    systems: list[str] = []
    for _, result in benches:
        ranked = sorted(result["systems"], key=lambda r: -(r.get("ndcg@10") or 0.0))
        systems += [r["system"] for r in ranked if r["system"] not in systems]
    lines = [
        "Test users of each benchmark (leave-one-out, full-catalogue ranking, history items not "
        "excluded; 95 % bootstrap intervals); "
        + "; ".join(f"{label} `{r['budget']}` budget measured {r['date']} (code "
                    f"{r['code_version']}, {r['test_users']:,} users, {r['items']:,} items)"
                    for label, r in benches) + ".",
        "",
        "| system | " + " | ".join(f"{label} R@10 | {label} N@10" for label, _ in benches) + " |",
        "|---|" + "---:|" * (2 * len(benches)),
    ]
    for name in systems:
        cells = [name]
        for _, result in benches:
            row = next((r for r in result["systems"] if r["system"] == name), None)
            cells += [_cell(row, "recall@10", ci=True), _cell(row, "ndcg@10", ci=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sweep_table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    dataset = path.stem.removeprefix("retriever_sweep_")
    lines = [
        f"## Retriever experiments, {dataset} (validation users; `{path.name}`)",
        "",
        "| setting | overrides of the base run's retriever config | valid R@10 | valid N@10 | valid R@20 | "
        "distinct@10 | steps | train s | most-popular R@10 / N@10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        v, p = r["valid"], r["pop_valid"]
        over = ", ".join(f"{k}={json.dumps(val)}" for k, val in r["overrides"].items()) or "–"
        if r.get("note"):
            over += f" ({r['note']})"
        lines.append(
            f"| {r['setting']} | {over} | {v['recall@10']:.4f} | {v['ndcg@10']:.4f} | "
            f"{v['recall@20']:.4f} | {r['valid_distinct@10']} | {r['steps']} | "
            f"{r['train_seconds']:g} | {p['recall@10']:.4f} / {p['ndcg@10']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def results_block(results: Path) -> str:
    parts = quality_tables(results)
    parts += [f"### Constrained decoding speed, `{p.stem.removeprefix('decode_')}` "
              f"(`benchmarks/decode.py`; `{p.name}`)\n\n" + _read(p)
              for p in sorted(results.glob("decode_*.md"))]
    return "\n".join(parts)


def experiments_block(results: Path) -> str:
    parts = [sweep_table(p) for p in sorted(results.glob("retriever_sweep_*.jsonl"))]
    notes = results / "retriever_experiments.md"
    if notes.exists():
        parts.append(_read(notes))
    parts += [_read(p) for p in sorted(results.glob("tokenizer_*.md"))]
    parts += [_read(p) for p in sorted(results.glob("beam_width_*.md"))]
    return "\n".join(parts)


# (file relative to the root, block name, what renders the block from the results folder)
BLOCKS = (("README.md", "headline", headline_table),
          ("README.md", "serving", serving_block),
          ("docs/results.md", "results", results_block),
          ("docs/experiments.md", "experiments", experiments_block))


def rewrite(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="project folder holding README.md, docs/ and benchmarks/results/")
    parser.add_argument("--check", action="store_true", help="only report whether they are current")
    args = parser.parse_args(argv)
    results = args.root / "benchmarks" / "results"
    stale = []
    for rel, name, render in BLOCKS:
        path = args.root / rel
        text = path.read_text()
        try:
            new = rewrite(text, name, render(results))
        except ValueError as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            return 2
        if new != text:
            stale.append(rel)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}: run python benchmarks/render_results.py")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
