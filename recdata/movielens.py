"""MovieLens loaders: ml-100k-mm and ml-1m-mm (ratings + posters + IMDb-derived plots).

The raw files are kept as published, quirks included; every quirk is handled by a rule and
counted in ``Dataset.skipped`` or ``Dataset.warnings``:
* ``movies.dat`` is ISO-8859-1, ``movies_extrainfos.dat`` UTF-8 with CRLF line ends;
* ``N/A`` fields are missing values; a year written ``unkonwn`` is a missing year;
* ratings with a null movie id (776 in the ML-1M copy) are dropped;
* items without a poster or a plot keep their other modality.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from recdata.dataset import Dataset
from recdata.errors import DataError

MOVIELENS_TEMPLATE = (
    "{title} ({year}). Genres: {genres}. Directed by {director}. Starring {actors}. {plot}"
)
MOVIELENS_FIELDS = ("title", "year", "genres", "director", "actors", "plot")
_MISSING = {"", "N/A", "unknown", "unkonwn"}


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if value in _MISSING else value


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError("file not found (check --data-root or $MMQREC_DATA)", path=path)
    return path


def read_extrainfos(path: Path, *, dataset: Dataset | None = None) -> pl.DataFrame:
    """Parse ``movies_extrainfos.dat`` (11 ``::``-separated fields, UTF-8, CRLF)."""
    rows = []
    malformed = 0
    text = _require(path).read_bytes().decode("utf-8", errors="replace")
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) < 11:
            malformed += 1
            continue
        if len(parts) > 11:  # a '::' inside the plot: re-join the middle
            parts = parts[:9] + ["::".join(parts[9:-1]), parts[-1]]
        movie_id, _title, year, _rated, _released, genres, director, _writers, actors, plot, _url = parts
        rows.append(
            {
                "ml1m_movie_id": movie_id.strip(),
                "x_year": _clean(year),
                "x_genres": _clean(genres),
                "director": _clean(director),
                "actors": _clean(actors),
                "plot": _clean(plot),
            }
        )
    if dataset is not None:
        dataset.count_skip("extrainfos_malformed_lines", malformed)
    return pl.DataFrame(rows, schema={k: pl.Utf8 for k in ("ml1m_movie_id", "x_year", "x_genres", "director", "actors", "plot")})


def _poster_path(posters: Path, movie_id: str | None) -> str | None:
    if movie_id is None:
        return None
    path = posters / f"{movie_id}.jpg"
    return str(path.resolve()) if path.exists() else None


def _read_atomic(path: Path) -> pl.DataFrame:
    """Read a RecBole atomic file (typed header ``name:type``) as strings."""
    frame = pl.read_csv(
        _require(path), separator="\t", infer_schema=False, quote_char=None, encoding="utf8-lossy"
    )
    return frame.rename({c: c.split(":")[0] for c in frame.columns})


def load_ml100k(root: Path, *, multimodal: bool = True) -> Dataset:
    """ML-100K ratings with titles and genres; with ``multimodal`` also posters and plots."""
    ds = Dataset(
        name="ml-100k-mm",
        items=pl.DataFrame(),
        interactions=pl.DataFrame(),
        text_fields=MOVIELENS_FIELDS,
        default_template=MOVIELENS_TEMPLATE,
    )
    base = root / "movielens" / "ml-100k" if multimodal else root
    inter = _read_atomic(base / "ml-100k.inter")
    items = _read_atomic(base / "ml-100k.item")
    users_path = base / "ml-100k.user"

    year = items["release_year"].map_elements(_clean, return_dtype=pl.Utf8)
    ds.count_skip("item_year_unparseable", int((year.is_null() & items["release_year"].is_not_null()).sum()))
    title = items["movie_title"].map_elements(_clean, return_dtype=pl.Utf8)
    ds.count_skip("item_title_unknown", int(title.is_null().sum()))
    items = pl.DataFrame(
        {
            "item_id": items["item_id"],
            "title": title,
            "year": year,
            "genres": items["class"].str.replace_all(" ", ", ").str.replace_all("Children's", "Children's"),
        }
    )
    if multimodal:
        mapping = pl.read_csv(_require(base / "item_to_ml1m_movie.csv"), infer_schema=False).rename(
            {"ml100k_item_id": "item_id", "ml1m_movie_id": "ml1m_movie_id"}
        )
        ds.count_skip("items_without_ml1m_match", int(mapping["ml1m_movie_id"].is_null().sum()))
        extra = read_extrainfos(root / "movielens" / "movies_extrainfos.dat", dataset=ds)
        items = items.join(mapping, on="item_id", how="left").join(extra, on="ml1m_movie_id", how="left")
        posters = root / "movielens" / "posters"
        items = items.with_columns(
            pl.col("ml1m_movie_id")
            .map_elements(lambda m: _poster_path(posters, m), return_dtype=pl.Utf8)
            .alias("image_path"),
            pl.coalesce("year", "x_year").alias("year"),
        ).drop(["x_year", "x_genres"])
    else:
        items = items.with_columns(
            pl.lit(None, dtype=pl.Utf8).alias(c) for c in ("director", "actors", "plot", "image_path", "ml1m_movie_id")
        )
        ds.warnings.append("text-only MovieLens-100K (no posters or plots found)")
    ds.count_skip("items_without_poster", int(items["image_path"].is_null().sum()))
    ds.count_skip("items_without_plot", int(items["plot"].is_null().sum()))

    interactions = inter.select(
        pl.col("user_id"),
        pl.col("item_id"),
        pl.col("timestamp").cast(pl.Float64).cast(pl.Int64),
        pl.col("rating").cast(pl.Float64),
    )
    ds.items = items
    ds.interactions = _dedupe(interactions, ds)
    if (users_path).exists():
        users = _read_atomic(users_path)
        ds.users = users.select(
            "user_id", pl.col("age").cast(pl.Int64, strict=False), "gender", "occupation"
        )
    return ds


def load_ml1m(root: Path) -> Dataset:
    """All ML-1M ratings with titles, genres, posters and IMDb-derived plots."""
    ds = Dataset(
        name="ml-1m-mm",
        items=pl.DataFrame(),
        interactions=pl.DataFrame(),
        text_fields=MOVIELENS_FIELDS,
        default_template=MOVIELENS_TEMPLATE,
    )
    ml = root / "movielens"
    ratings = pl.read_parquet(_require(ml / "ml-1m" / "ratings.parquet"))
    ds.count_skip("ratings_missing_movie_id", int(ratings["movie_id"].is_null().sum()))
    ratings = ratings.filter(pl.col("movie_id").is_not_null())
    interactions = ratings.select(
        pl.col("user_id").cast(pl.Utf8),
        pl.col("movie_id").cast(pl.Int64).cast(pl.Utf8).alias("item_id"),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("rating").cast(pl.Float64),
    )
    rows = []
    pattern = re.compile(r"^(.*)\s+\((\d{4})\)\s*$")
    for line in _require(ml / "movies.dat").read_bytes().decode("iso-8859-1").splitlines():
        if not line.strip():
            continue
        movie_id, title_year, genres = line.split("::")
        match = pattern.match(title_year)
        title, year = (match.group(1), match.group(2)) if match else (title_year, None)
        rows.append({"item_id": movie_id, "title": _clean(title), "year": year, "genres": genres.replace("|", ", ")})
    items = pl.DataFrame(rows, schema={"item_id": pl.Utf8, "title": pl.Utf8, "year": pl.Utf8, "genres": pl.Utf8})
    extra = read_extrainfos(ml / "movies_extrainfos.dat", dataset=ds).rename({"ml1m_movie_id": "item_id"})
    posters = ml / "posters"
    items = items.join(extra, on="item_id", how="left").with_columns(
        pl.col("item_id").map_elements(lambda m: _poster_path(posters, m), return_dtype=pl.Utf8).alias("image_path"),
        pl.coalesce("year", "x_year").alias("year"),
    ).drop(["x_year", "x_genres"])
    known = set(items["item_id"].to_list())
    unknown = interactions.filter(~pl.col("item_id").is_in(list(known)))
    ds.count_skip("ratings_unknown_movie", unknown.height)
    interactions = interactions.filter(pl.col("item_id").is_in(list(known)))
    used = set(interactions["item_id"].unique().to_list())
    ds.count_skip("catalogue_items_without_ratings", items.height - len(used))
    items = items.filter(pl.col("item_id").is_in(list(used)))
    ds.count_skip("items_without_poster", int(items["image_path"].is_null().sum()))
    ds.count_skip("items_without_plot", int(items["plot"].is_null().sum()))
    ds.items = items
    ds.interactions = _dedupe(interactions, ds)
    return ds


def _dedupe(interactions: pl.DataFrame, ds: Dataset) -> pl.DataFrame:
    """Drop exact duplicate interaction rows (same user, item, time and rating), counted."""
    deduped = interactions.unique(maintain_order=True)
    ds.count_skip("duplicate_interactions", interactions.height - deduped.height)
    return deduped
