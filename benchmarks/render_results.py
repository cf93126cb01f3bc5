"""Rewrite the README's generated results block from ``benchmarks/results/``.

    python benchmarks/render_results.py            # rewrite README.md in place
    python benchmarks/render_results.py --check    # exit 1 when README.md is out of date

The block between ``<!-- results:begin -->`` and ``<!-- results:end -->`` is replaced by the
quality tables (``quality_*.md``, written by ``benchmarks/quality.py``), a table of every
retriever experiment recorded by ``benchmarks/retriever_sweep.py`` (``retriever_sweep_*.jsonl``)
and the decoding speed tables (``decode_*.md``, ``benchmarks/decode.py --results``),
so the figures in the README are exactly the committed results.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# The order tables appear in; other quality files follow alphabetically.
ORDER = ("quality_ml-100k-mm_cpu", "quality_amazon-beauty_cpu", "quality_amazon-beauty_gpu",
         "quality_ml-1m-mm_gpu")


def quality_tables(results: Path) -> list[str]:
    files = sorted(results.glob("quality_*.md"))
    rank = {name: i for i, name in enumerate(ORDER)}
    files.sort(key=lambda p: (rank.get(p.stem, len(ORDER)), p.stem))
    return [p.read_text().strip() + "\n" for p in files]


def sweep_table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    dataset = path.stem.removeprefix("retriever_sweep_")
    lines = [
        f"#### Retriever experiments, {dataset} (validation users; `{path.name}`)",
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


def render(results: Path) -> str:
    parts = quality_tables(results)
    reading = results / "reading.md"
    if reading.exists():
        parts.append(reading.read_text().strip() + "\n")
    parts += [sweep_table(p) for p in sorted(results.glob("retriever_sweep_*.jsonl"))]
    notes = results / "retriever_experiments.md"
    if notes.exists():
        parts.append(notes.read_text().strip() + "\n")
    parts += [p.read_text().strip() + "\n" for p in sorted(results.glob("tokenizer_*.md"))]
    parts += [p.read_text().strip() + "\n" for p in sorted(results.glob("beam_width_*.md"))]
    parts += [f"#### Constrained decoding speed, `{p.stem.removeprefix('decode_')}` "
              f"(`benchmarks/decode.py`; `{p.name}`)\n\n" + p.read_text().strip() + "\n"
              for p in sorted(results.glob("decode_*.md"))]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--check", action="store_true", help="only report whether it is current")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"error: {args.readme} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render(args.results)}{END}{tail}"
    if args.check:
        if new != text:
            print(f"{args.readme} is out of date: run python benchmarks/render_results.py")
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
