"""A tiny document model rendered to Markdown and to a self-contained HTML page.

The report is built once as a list of blocks; both renderers walk the same list, so the two
files always say the same thing. HTML embeds images as base64 data URIs.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str | None = None


@dataclass
class Image:
    path: Path
    """PNG file; Markdown links it relative to the report, HTML embeds it."""
    caption: str


@dataclass
class Code:
    text: str


Block = Union[Heading, Para, Bullets, Table, Image, Code]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document, *, base: Path) -> str:
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                out += [f"*{block.caption}*", ""]
            out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            out.append("|" + "|".join("---" for _ in block.headers) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
        elif isinstance(block, Image):
            rel = Path(block.path).resolve().relative_to(Path(base).resolve())
            out += [f"![{block.caption}]({rel.as_posix()})", ""]
        elif isinstance(block, Code):
            out += ["```", block.text.rstrip("\n"), "```", ""]
    return "\n".join(out).rstrip() + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:1.8em}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
caption{caption-side:top;text-align:left;font-style:italic;padding-bottom:0.3em}
figure{margin:1em 0}figcaption{font-style:italic;color:#555}img{max-width:100%}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}
"""


def to_html(doc: Document) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 6)
            out.append(f"<h{level}>{esc(block.text)}</h{level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts = ["<table>"]
            if block.caption:
                parts.append(f"<caption>{esc(block.caption)}</caption>")
            parts.append("<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in block.headers) + "</tr>")
            for row in block.rows:
                parts.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>")
            parts.append("</table>")
            out.append("".join(parts))
        elif isinstance(block, Image):
            data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block.caption)}</figcaption></figure>"
            )
        elif isinstance(block, Code):
            out.append(f"<pre>{esc(block.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
