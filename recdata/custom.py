"""The ``custom`` dataset: a folder of tables a user fills with their own catalogue and log.

Layout (CSV, TSV or parquet; the first file found wins):

* ``items.{csv,tsv,parquet}`` — ``item_id`` (required, unique); ``title`` and any other text
  columns (optional; every column except ``item_id`` and ``image`` is a text field);
  ``image`` (optional: a path, absolute or relative to the folder).
* ``interactions.{csv,tsv,parquet}`` — ``user_id``, ``item_id`` (required); ``timestamp``
  (optional integer, e.g. unix seconds; without it the row order within a user is the order);
  ``rating`` (optional number).
* ``users.{csv,tsv,parquet}`` — optional: ``user_id`` plus feature columns.

Malformed input is rejected with a one-line error naming the file, the line and the problem:
missing column, wrong type, duplicate interaction rows, duplicate item ids, interactions on
unknown items. Missing image files are not an error: the item keeps its text and the count is
reported.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recdata.dataset import Dataset
from recdata.errors import DataError
from recdata.parse import first_bad, parse_float, parse_int

_SUFFIXES = (".csv", ".tsv", ".parquet")


def _find(folder: Path, stem: str, *, required: bool) -> Path | None:
    for suffix in _SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.exists():
            return path
    if required:
        raise DataError(f"missing {stem}.csv / {stem}.tsv / {stem}.parquet", path=folder)
    return None


def _read_table(path: Path) -> tuple[pl.DataFrame, int]:
    """Read every column as a string; return the frame and the line number of its first row."""
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            return frame.with_columns(pl.all().cast(pl.Utf8)), 1
        sep = "\t" if path.suffix == ".tsv" else ","
        return pl.read_csv(path, separator=sep, infer_schema=False, encoding="utf8-lossy"), 2
    except DataError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot parse table ({first})", path=path) from None


def _require_columns(frame: pl.DataFrame, path: Path, columns: tuple[str, ...]) -> None:
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"missing required column {column!r} (found: {', '.join(frame.columns)})", path=path)


def _check_not_empty(frame: pl.DataFrame, path: Path, column: str, first_line: int) -> None:
    bad = first_bad(frame[column].is_null() | (frame[column].str.strip_chars() == ""))
    if bad is not None:
        raise DataError(f"empty {column!r}", path=path, row=bad + first_line)


def read_items_file(path: Path, *, images_outside_folder: bool = False,
                    allow_outside: str = "set data.images_outside_folder: true"
                    ) -> tuple[pl.DataFrame, tuple[str, ...], int]:
    """An items table (``item_id``, text columns, optional ``image``) as strings.

    Returns the frame (``image`` resolved to an absolute ``image_path``, null when missing; empty
    text cells null), its text field names, and the number of named image files not found.
    Image paths are relative to the table's folder and must stay inside it unless
    ``images_outside_folder``; ``allow_outside`` tells the reader how to allow them (the option's
    name where the table is read). Malformed rows are one-line errors naming the file and line.
    """
    folder = path.parent
    items, items_line = _read_table(path)
    items_path = path
    _require_columns(items, items_path, ("item_id",))
    _check_not_empty(items, items_path, "item_id", items_line)
    dup = first_bad(~items["item_id"].is_first_distinct())
    if dup is not None:
        raise DataError(f"duplicate item_id {items['item_id'][dup]!r}", path=items_path, row=dup + items_line)
    if "image_path" in items.columns:
        # the resolved column's name: taken as text and then overwritten, the paths would be lost
        raise DataError("column 'image_path' is reserved: name the image column 'image'",
                        path=items_path)
    text_fields = tuple(c for c in items.columns if c not in ("item_id", "image"))
    if "title" not in items.columns:
        items = items.with_columns(pl.lit(None, dtype=pl.Utf8).alias("title"))
    missing_images = 0
    if "image" in items.columns:
        root = folder.resolve()

        def resolve(value: str | None) -> str | None:
            if value is None or not value.strip():
                return None
            path = Path(value.strip())
            path = (path if path.is_absolute() else folder / path).resolve()
            return str(path) if path.exists() else None

        def outside(value: str | None) -> bool:
            if value is None or not value.strip():
                return False
            path = Path(value.strip())
            return not (path if path.is_absolute() else folder / path).resolve().is_relative_to(root)

        if not images_outside_folder:
            escaped = first_bad(items["image"].map_elements(outside, return_dtype=pl.Boolean))
            if escaped is not None:
                raise DataError(
                    f"image path {items['image'][escaped]!r} leaves the dataset folder "
                    f"({allow_outside} to allow it)",
                    path=items_path, row=escaped + items_line)
        image_path = items["image"].map_elements(resolve, return_dtype=pl.Utf8)
        named = items["image"].is_not_null() & (items["image"].str.strip_chars() != "")
        missing_images = int((named & image_path.is_null()).sum())
        items = items.drop("image").with_columns(image_path.alias("image_path"))
    else:
        items = items.with_columns(pl.lit(None, dtype=pl.Utf8).alias("image_path"))
    for field in text_fields:
        items = items.with_columns(
            pl.when(pl.col(field).str.strip_chars() == "").then(None).otherwise(pl.col(field)).alias(field)
        )
    return items, text_fields, missing_images


def load_custom(folder: Path, *, images_outside_folder: bool = False) -> Dataset:
    """Load a custom dataset folder; image paths must stay inside it unless
    ``images_outside_folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("custom dataset folder not found (set data.path)", path=folder)
    items_path = _find(folder, "items", required=True)
    inter_path = _find(folder, "interactions", required=True)
    users_path = _find(folder, "users", required=False)
    ds = Dataset(name="custom", items=pl.DataFrame(), interactions=pl.DataFrame())

    items, text_fields, missing_images = read_items_file(
        items_path, images_outside_folder=images_outside_folder)
    ds.count_skip("image_files_missing", missing_images)

    inter, inter_line = _read_table(inter_path)
    _require_columns(inter, inter_path, ("user_id", "item_id"))
    _check_not_empty(inter, inter_path, "user_id", inter_line)
    _check_not_empty(inter, inter_path, "item_id", inter_line)
    has_ts = "timestamp" in inter.columns
    if has_ts:
        _check_not_empty(inter, inter_path, "timestamp", inter_line)
        timestamp = parse_int(inter, inter_path, "timestamp", inter_line)
    else:
        timestamp = pl.Series("timestamp", range(inter.height), dtype=pl.Int64)
        ds.warnings.append(f"{inter_path.name} has no timestamp column: the row order is the order")
    rating = (
        parse_float(inter, inter_path, "rating", inter_line)
        if "rating" in inter.columns
        else pl.Series("rating", [None] * inter.height, dtype=pl.Float64)
    )
    frame = pl.DataFrame(
        {
            "user_id": inter["user_id"].str.strip_chars(),
            "item_id": inter["item_id"].str.strip_chars(),
            "timestamp": timestamp,
            "rating": rating,
        }
    )
    key = ["user_id", "item_id", "timestamp"] if has_ts else ["user_id", "item_id"]
    dup = first_bad(frame.select(~pl.struct(key).is_first_distinct()).to_series())
    if dup is not None:
        what = ", ".join(f"{k}={frame[k][dup]}" for k in key)
        raise DataError(f"duplicate interaction ({what})", path=inter_path, row=dup + inter_line)
    known = set(items["item_id"].to_list())
    unknown = first_bad(~frame["item_id"].is_in(list(known)))
    if unknown is not None:
        raise DataError(
            f"item_id {frame['item_id'][unknown]!r} is not in {items_path.name}", path=inter_path, row=unknown + inter_line
        )
    ds.items = items
    ds.interactions = frame
    ds.text_fields = text_fields or ("title",)
    ds.has_timestamps = has_ts
    extra = [f for f in text_fields if f != "title"]
    ds.default_template = " ".join(["{title}."] + [f"{f.replace('_', ' ').capitalize()}: {{{f}}}." for f in extra])
    if users_path is not None:
        users, users_line = _read_table(users_path)
        _require_columns(users, users_path, ("user_id",))
        dup = first_bad(~users["user_id"].is_first_distinct())
        if dup is not None:
            raise DataError(f"duplicate user_id {users['user_id'][dup]!r}", path=users_path, row=dup + users_line)
        ds.users = users
    return ds
