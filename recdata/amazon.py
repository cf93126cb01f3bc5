"""Amazon Beauty (the TIGER benchmark's 5-core sequences; text only, no timestamps)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recdata.dataset import Dataset
from recdata.errors import DataError
from recdata.parse import first_bad, read_text_table

AMAZON_TEMPLATE = "{title}. Brand: {brand}. Categories: {categories}"
AMAZON_FIELDS = ("title", "brand", "categories")


def load_amazon_beauty(root: Path) -> Dataset:
    base = root / "amazon-beauty"
    seq_path, items_path = base / "sequences.txt", base / "items.tsv"
    for path in (seq_path, items_path):
        if not path.exists():
            raise DataError("file not found (check --data-root or $MMQREC_DATA)", path=path)
    ds = Dataset(
        name="amazon-beauty",
        items=pl.DataFrame(),
        interactions=pl.DataFrame(),
        text_fields=AMAZON_FIELDS,
        default_template=AMAZON_TEMPLATE,
        has_timestamps=False,
    )
    users, item_ids, positions, lines = [], [], [], []
    blank = 0
    for row, line in enumerate(seq_path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            blank += 1
            continue
        if len(parts) < 2:
            raise DataError("a user line needs a user id and at least one item", path=seq_path, row=row)
        for pos, item in enumerate(parts[1:]):
            users.append(parts[0])
            item_ids.append(item)
            positions.append(pos)
            lines.append(row)
    ds.count_skip("blank_sequence_lines", blank)
    interactions = pl.DataFrame(
        {"user_id": users, "item_id": item_ids, "timestamp": positions, "rating": [None] * len(users)},
        schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64, "rating": pl.Float64},
    )
    items = read_text_table(items_path, separator="\t", quote_char=None)
    missing = {"item_id", "title", "categories", "brand"} - set(items.columns)
    if missing:
        raise DataError(f"missing column(s) {sorted(missing)}", path=items_path)
    brand = pl.when(pl.col("brand").is_null() | pl.col("brand").str.strip_chars().is_in(["", "Unknown"]))
    items = items.select(
        "item_id",
        pl.col("title").str.strip_chars(),
        brand.then(None).otherwise(pl.col("brand")).alias("brand"),
        pl.col("categories").str.replace_all(" > ", ", "),
        pl.lit(None, dtype=pl.Utf8).alias("image_path"),
        "asin",
    )
    ds.count_skip("items_without_brand", int(items["brand"].is_null().sum()))
    ds.count_skip("items_without_title", int(items["title"].is_null().sum()))
    known = set(items["item_id"].to_list())
    unknown = interactions.filter(~pl.col("item_id").is_in(list(known)))
    if unknown.height:
        bad = first_bad(~interactions["item_id"].is_in(items["item_id"].to_list()))
        raise DataError(f"item {interactions['item_id'][bad]!r} is not in items.tsv "
                        f"({unknown.height} interaction(s) name unknown items)", path=seq_path,
                        row=lines[bad])
    ds.items = items
    ds.interactions = interactions
    ds.warnings.append("no timestamps: the position in each user's sequence is the order")
    return ds
