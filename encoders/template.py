"""Render an item's text from a str.format template, dropping the parts whose fields are null.

The rule, small enough to predict by eye:

1. A value is *missing* when it is null, NaN, or blank after stripping whitespace.
2. The template is cut into *sentences*: each sentence ends right after a literal ". " (a full
   stop and a space written in the template itself; punctuation inside field values never cuts).
3. Inside a sentence, a bracketed group "( … )" or "[ … ]" written in the template that holds at
   least one field is *optional*: if a field inside it is missing, the group and the whitespace
   before it vanish. "{title} ({year})." with no year renders as "Heat."
4. A sentence with a missing field outside its optional groups is dropped whole, together with
   its trailing ". ". "Directed by {director}. " disappears when the director is unknown.
5. If no field value survives, the text is "" — the item's text modality is masked, not invented
   from the template's literal words.
6. Runs of whitespace collapse to one space and the result is stripped.

Example with the MovieLens template and a film that has no director and no plot::

    "{title} ({year}). Genres: {genres}. Directed by {director}. Starring {actors}. {plot}"
    → "Heat (1995). Genres: Action|Crime. Starring Al Pacino, Robert De Niro."
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from recdata.errors import DataError

_OPEN_TO_CLOSE = {"(": ")", "[": "]"}


@dataclass(frozen=True)
class _Field:
    name: str
    conversion: str | None
    spec: str


@dataclass(frozen=True)
class _Group:
    """An optional bracketed part of a sentence."""

    nodes: tuple[Any, ...]


_Node = Any  # str (one literal character), _Field or _Group


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


class Template:
    """A compiled item-text template (see the module docstring for the null rule)."""

    def __init__(self, template: str) -> None:
        self.source = template
        tokens = self._tokenize(template)
        self.fields: tuple[str, ...] = tuple(
            dict.fromkeys(t.name for t in tokens if isinstance(t, _Field))
        )
        if not self.fields:
            raise DataError(f"text template {template!r} references no field such as {{title}}")
        self._sentences = [self._group(sentence) for sentence in self._split_sentences(tokens)]

    @staticmethod
    def _tokenize(template: str) -> list[_Node]:
        tokens: list[_Node] = []
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise DataError(f"malformed text template {template!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            tokens.extend(literal)
            if name is None:
                continue
            if not name.isidentifier():
                raise DataError(
                    f"text template field {{{name}}} must be a plain column name such as {{title}}"
                )
            if spec and "{" in spec:
                raise DataError(f"text template field {{{name}}} has a nested format spec")
            tokens.append(_Field(name, conversion, spec or ""))
        return tokens

    @staticmethod
    def _split_sentences(tokens: list[_Node]) -> list[list[_Node]]:
        sentences: list[list[_Node]] = [[]]
        for i, token in enumerate(tokens):
            sentences[-1].append(token)
            if token == " " and i > 0 and tokens[i - 1] == ".":
                sentences.append([])
        return [s for s in sentences if s]

    @staticmethod
    def _group(tokens: list[_Node]) -> tuple[_Node, ...]:
        # A stack of partially built levels; level 0 is the sentence itself. An opening bracket
        # that never closes is folded back into its parent as plain characters.
        stack: list[tuple[str | None, list[_Node]]] = [(None, [])]
        for token in tokens:
            if isinstance(token, str) and token in _OPEN_TO_CLOSE:
                stack.append((token, [token]))
            elif isinstance(token, str) and len(stack) > 1 and token == _OPEN_TO_CLOSE[stack[-1][0]]:
                _, nodes = stack.pop()
                nodes.append(token)
                if any(isinstance(n, (_Field, _Group)) for n in nodes):
                    stack[-1][1].append(_Group(tuple(nodes)))
                else:
                    stack[-1][1].extend(nodes)
            else:
                stack[-1][1].append(token)
        while len(stack) > 1:
            _, nodes = stack.pop()
            stack[-1][1].extend(nodes)
        return tuple(stack[0][1])

    @staticmethod
    def _render_nodes(nodes: Sequence[_Node], row: Mapping[str, Any]) -> tuple[str, bool, int]:
        """Render a node list → (text, complete, number of field values used)."""
        formatter = string.Formatter()
        parts: list[str] = []
        used = 0
        for node in nodes:
            if isinstance(node, str):
                parts.append(node)
            elif isinstance(node, _Field):
                value = row.get(node.name)
                if _is_missing(value):
                    return "", False, 0
                value = value.strip() if isinstance(value, str) else value
                value = formatter.convert_field(value, node.conversion)
                parts.append(formatter.format_field(value, node.spec))
                used += 1
            else:
                text, complete, n = Template._render_nodes(node.nodes, row)
                if complete:
                    parts.append(text)
                    used += n
                elif parts:
                    parts[-1] = parts[-1].rstrip()
        return "".join(parts), True, used

    def render(self, row: Mapping[str, Any]) -> str:
        """The item's text, or "" when none of its template fields has a value."""
        out: list[str] = []
        used = 0
        for sentence in self._sentences:
            text, complete, n = self._render_nodes(sentence, row)
            if complete:
                out.append(text)
                used += n
        if used == 0:
            return ""
        return " ".join("".join(out).split())


def render_texts(*, template: str, items: Any) -> list[str]:
    """Render every row of an items table (polars DataFrame) in row order."""
    compiled = Template(template)
    missing = [f for f in compiled.fields if f not in items.columns]
    if missing:
        raise DataError(
            f"text template field(s) {', '.join(missing)} not in items.parquet "
            f"(columns: {', '.join(items.columns)})"
        )
    columns = {name: items[name].to_list() for name in compiled.fields}
    texts = []
    for i in range(items.height):
        try:
            texts.append(compiled.render({name: values[i] for name, values in columns.items()}))
        except (ValueError, TypeError) as exc:
            raise DataError(f"text template {template!r} cannot format this row: {exc}", row=i) from None
    return texts
