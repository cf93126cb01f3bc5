"""Typed columns from text tables, with one-line errors that name the file, line and value.

Every loader (the built-in datasets and ``custom``) reads its tables as strings and converts
them here, so a malformed row anywhere is reported the same way: ``FILE, line N: problem``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recdata.errors import DataError


def first_bad(mask: pl.Series) -> int | None:
    """Index of the first True of ``mask`` (None when there is none)."""
    idx = mask.arg_true()
    return int(idx[0]) if len(idx) else None


def read_text_table(path: Path, *, separator: str, quote_char: str | None = '"') -> pl.DataFrame:
    """Every column as a string; a file polars cannot split becomes a one-line DataError."""
    try:
        return pl.read_csv(path, separator=separator, infer_schema=False, quote_char=quote_char,
                           encoding="utf8-lossy")
    except Exception as exc:  # polars raises several exception types for ragged or binary files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot parse table ({first})", path=path) from None


def parse_int(frame: pl.DataFrame, path: Path, column: str, first_line: int) -> pl.Series:
    """``column`` as Int64; a non-integer cell is an error (empty cells stay null)."""
    parsed = frame[column].str.strip_chars().cast(pl.Int64, strict=False)
    bad = first_bad(parsed.is_null() & frame[column].is_not_null())
    if bad is not None:
        raise DataError(
            f"column {column!r} must be an integer, got {frame[column][bad]!r}", path=path,
            row=bad + first_line,
        )
    return parsed


def parse_float(frame: pl.DataFrame, path: Path, column: str, first_line: int) -> pl.Series:
    """``column`` as Float64; a non-number, ``nan`` or an infinity is an error."""
    text = frame[column].str.strip_chars()
    parsed = text.cast(pl.Float64, strict=False)
    bad = first_bad(parsed.is_null() & frame[column].is_not_null() & (text != ""))
    if bad is not None:
        raise DataError(
            f"column {column!r} must be a number, got {frame[column][bad]!r}", path=path,
            row=bad + first_line,
        )
    # "nan" and "inf" parse as floats but are no value: they would poison every mean and label.
    bad = first_bad(parsed.is_not_null() & ~parsed.is_finite())
    if bad is not None:
        raise DataError(
            f"column {column!r} must be a finite number, got {frame[column][bad]!r}", path=path,
            row=bad + first_line,
        )
    return parsed
