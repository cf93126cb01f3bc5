"""Sanity check on real data: the nearest neighbours of a few well-known items in each space.

    python -m encoders.neighbours RUN_DIR --titles "Toy Story" "Star Wars" "Fargo" "Lion King"

Cosine similarity over the cached embeddings; masked items are never neighbours. Titles match
case-insensitively: an exact title (ignoring a trailing year or a leading/trailing article) wins,
then a title that starts with the query, then one that contains it (shortest first).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recdata.errors import DataError
from recdata.io import load_tensors, read_parquet
from recdata.layout import layout

_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE = re.compile(r"^(the|a|an)\s+|,\s*(the|a|an)$")


def _norm(title: str) -> str:
    return _ARTICLE.sub("", _YEAR.sub("", title).strip().lower()).strip()


def find_item(*, titles: Sequence[str | None], query: str) -> int:
    """item_idx of the best title match for ``query`` (see the module docstring)."""
    q = _norm(query)
    candidates = [(i, t) for i, t in enumerate(titles) if t]
    for accept in (
        lambda t: _norm(t) == q,
        lambda t: _norm(t).startswith(q),
        lambda t: q in t.lower(),
    ):
        hits = [(len(t), i) for i, t in candidates if accept(t)]
        if hits:
            return min(hits)[1]
    raise DataError(f"no item title matches {query!r}")


def nearest_neighbours(
    *, run_dir: Path, queries: Sequence[str], k: int = 5, spaces: Sequence[str] = ("text", "image")
) -> dict[str, Any]:
    """{query: {"item_idx", "title", space: [(item_idx, title, cosine), ...]}}."""
    items = read_parquet(layout(run_dir).items).sort("item_idx")
    titles = items["title"].to_list()
    labels = items["genres"].to_list() if "genres" in items.columns else [None] * len(titles)
    matrices = {}
    for space in spaces:
        path = layout(run_dir).embeddings(space)
        if not path.exists():
            continue
        tensors = load_tensors(path)
        emb = tensors["embeddings"].numpy().astype(np.float64)
        mask = tensors["mask"].numpy().astype(bool)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        matrices[space] = (emb / np.where(norms > 0, norms, 1.0), mask)
    out: dict[str, Any] = {}
    for query in queries:
        idx = find_item(titles=titles, query=query)
        entry: dict[str, Any] = {"item_idx": idx, "title": titles[idx], "genres": labels[idx]}
        for space, (emb, mask) in matrices.items():
            if not mask[idx]:
                entry[space] = "masked"
                continue
            sims = emb @ emb[idx]
            sims[~mask] = -np.inf
            sims[idx] = -np.inf
            order = [j for j in np.argsort(-sims, kind="stable") if np.isfinite(sims[j])][:k]
            entry[space] = [(int(j), titles[j], labels[j], float(sims[j])) for j in order]
        out[query] = entry
    return out


def genre_agreement(*, run_dir: Path, genre: str, k: int = 10, space: str) -> dict[str, float]:
    """Share of the top-k neighbours of items tagged ``genre`` that carry it too, vs the base rate.

    A number to go with the eyeballed lists: well above the base rate means the space groups
    the genre together.
    """
    items = read_parquet(layout(run_dir).items).sort("item_idx")
    if "genres" not in items.columns:
        raise DataError("items.parquet has no genres column")
    tagged = np.array([bool(g) and genre.lower() in g.lower() for g in items["genres"].to_list()])
    tensors = load_tensors(layout(run_dir).embeddings(space))
    emb = tensors["embeddings"].numpy().astype(np.float64)
    mask = tensors["mask"].numpy().astype(bool)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    queries = np.flatnonzero(tagged & mask)
    if len(queries) == 0:
        raise DataError(f"no item with a {space} embedding has genre {genre!r}")
    sims = emb[queries] @ emb.T
    sims[:, ~mask] = -np.inf
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return {
        "items": int(len(queries)),
        "neighbour_share": float(tagged[top].mean()),
        "base_rate": float(tagged[mask].sum() - 1) / float(mask.sum() - 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encoders.neighbours", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--titles", nargs="+", default=["Toy Story", "Star Wars", "Fargo", "Lion King"])
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--spaces", nargs="+", default=["text", "image"])
    parser.add_argument("--genres", nargs="*", default=[], help="also report genre agreement@k")
    args = parser.parse_args(argv)
    try:
        result = nearest_neighbours(run_dir=args.run_dir, queries=args.titles, k=args.k, spaces=args.spaces)
        agreement = {
            (genre, space): genre_agreement(run_dir=args.run_dir, genre=genre, k=args.k, space=space)
            for genre in args.genres
            for space in args.spaces
            if layout(args.run_dir).embeddings(space).exists()
        }
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for query, entry in result.items():
        genres = f"  [{entry['genres']}]" if entry["genres"] else ""
        print(f"\n{entry['title']}{genres}")
        for space in args.spaces:
            if space not in entry:
                print(f"  {space}: no embeddings")
            elif entry[space] == "masked":
                print(f"  {space}: masked (no usable {space} for this item)")
            else:
                print(f"  {space}:")
                for _, title, label, score in entry[space]:
                    print(f"    {score:.3f}  {title}" + (f"  [{label}]" if label else ""))
    if agreement:
        print(f"\ngenre agreement@{args.k} (share of neighbours with the query's genre vs base rate)")
    for (genre, space), stats in agreement.items():
        print(f"  {genre:12} {space:6} {stats['neighbour_share']:.3f} vs {stats['base_rate']:.3f}"
              f"  ({stats['items']} items)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
