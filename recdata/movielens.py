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
from recdata.parse import first_bad, parse_float, read_text_table

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


def _title_keys(title: str) -> set[str]:
    """Normalised spellings of a title: articles moved or dropped, alternative titles in
    brackets, the part before a colon and the part after an episode dash."""

    def norm(text: str) -> str:
        text = text.lower().strip()
        text = re.sub(r",\s*(the|a|an|la|le|les|il|das|der|die|el|l')$", "", text)
        text = re.sub(r"^(the|a|an)\s+", "", text)
        return re.sub(r"[^a-z0-9]+", " ", text).strip()

    keys = {norm(title), norm(re.sub(r"\s*\(.*?\)\s*", " ", title))}
    keys.update(norm(alt) for alt in re.findall(r"\((.*?)\)", title))
    if ":" in title:
        keys.add(norm(title.split(":")[0]))
        tail = title.split(":", 1)[1]
        if " - " in tail:
            keys.add(norm(tail.split(" - ", 1)[1]))
    return {k for k in keys if k}


def _read_ml1m_movies(path: Path) -> list[tuple[str, str, str | None, str]]:
    """(movie_id, title, year, genres) from the ISO-8859-1 ``movies.dat``."""
    rows = []
    pattern = re.compile(r"^(.*)\s+\((\d{4})\)\s*$")
    for line in _require(path).read_bytes().decode("iso-8859-1").splitlines():
        if not line.strip():
            continue
        movie_id, title_year, genres = line.split("::")
        match = pattern.match(title_year)
        title, year = (match.group(1), match.group(2)) if match else (title_year, None)
        rows.append((movie_id, title, year, genres))
    return rows


def match_by_title_year(
    titles: list[tuple[str, str | None, str | None]], movies: list[tuple[str, str, str | None, str]]
) -> dict[str, str]:
    """Map (item_id, title, year) to an ML-1M movie id when exactly one film of that year has a
    matching normalised title. Ambiguous or year-less items stay unmatched."""
    index: dict[tuple[str, str], set[str]] = {}
    for movie_id, title, year, _genres in movies:
        if year is None:
            continue
        for key in _title_keys(title):
            index.setdefault((key, year), set()).add(movie_id)
    out = {}
    for item_id, title, year in titles:
        if not title or not year:
            continue
        found: set[str] = set()
        for key in _title_keys(title):
            found |= index.get((key, year), set())
        if len(found) == 1:
            out[item_id] = found.pop()
    return out


def _poster_path(posters: Path, movie_id: str | None) -> str | None:
    if movie_id is None:
        return None
    path = posters / f"{movie_id}.jpg"
    return str(path.resolve()) if path.exists() else None


def _read_atomic(path: Path) -> pl.DataFrame:
    """Read a RecBole atomic file (typed header ``name:type``) as strings."""
    frame = read_text_table(_require(path), separator="\t", quote_char=None)
    return frame.rename({c: c.split(":")[0] for c in frame.columns})


def _ml100k_interactions(inter: pl.DataFrame, path: Path, item_ids: pl.Series) -> pl.DataFrame:
    """Typed ML-100K ratings; a malformed row is a one-line error naming its line."""
    for column in ("user_id", "item_id", "rating", "timestamp"):
        if column not in inter.columns:
            raise DataError(f"missing column {column!r} (found: {', '.join(inter.columns)})", path=path)
    for column in ("user_id", "item_id"):
        bad = first_bad(inter[column].is_null() | (inter[column].str.strip_chars() == ""))
        if bad is not None:
            raise DataError(f"empty {column!r}", path=path, row=bad + 2)
    timestamp = parse_float(inter, path, "timestamp", 2)
    rating = parse_float(inter, path, "rating", 2)
    for column, values in (("timestamp", timestamp), ("rating", rating)):
        bad = first_bad(values.is_null())
        if bad is not None:
            raise DataError(f"empty {column!r}", path=path, row=bad + 2)
    unknown = first_bad(~inter["item_id"].is_in(item_ids.to_list()))
    if unknown is not None:
        raise DataError(f"item_id {inter['item_id'][unknown]!r} is not in ml-100k.item", path=path,
                        row=unknown + 2)
    return pl.DataFrame({
        "user_id": inter["user_id"], "item_id": inter["item_id"],
        "timestamp": timestamp.cast(pl.Int64), "rating": rating,
    })


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

    # One row has its year inside the title ("... (1995)") and "V" as the year: repair from the
    # title; any other non-year value is a missing year.
    title_year = items["movie_title"].str.extract(r"\((\d{4})\)\s*$", 1)
    raw_year = items["release_year"].map_elements(_clean, return_dtype=pl.Utf8)
    valid_year = raw_year.str.contains(r"^\d{4}$").fill_null(False)
    repaired = ~valid_year & title_year.is_not_null()
    ds.count_skip("item_year_repaired_from_title", int(repaired.sum()))
    year = pl.select(
        pl.when(valid_year).then(raw_year).when(repaired).then(title_year).otherwise(None)
    ).to_series()
    ds.count_skip("item_year_unparseable", int((year.is_null() & items["release_year"].is_not_null()).sum()))
    title = items["movie_title"].str.replace(r"\s*\(\d{4}\)\s*$", "").map_elements(_clean, return_dtype=pl.Utf8)
    ds.count_skip("item_title_unknown", int(title.is_null().sum()))
    items = pl.DataFrame(
        {
            "item_id": items["item_id"],
            "title": title,
            "year": year,
            "genres": items["class"].map_elements(_clean, return_dtype=pl.Utf8).str.replace_all(" ", ", "),
        }
    )
    if multimodal:
        mapping = pl.read_csv(_require(base / "item_to_ml1m_movie.csv"), infer_schema=False).rename(
            {"ml100k_item_id": "item_id", "ml1m_movie_id": "ml1m_movie_id"}
        )
        # The published join leaves 59 films unmatched (Star Wars among them); recover those whose
        # normalised title and year identify exactly one ML-1M film.
        unmatched = mapping.filter(pl.col("ml1m_movie_id").is_null()).join(items, on="item_id", how="left")
        recovered = match_by_title_year(
            list(zip(unmatched["item_id"].to_list(), unmatched["title"].to_list(), unmatched["year"].to_list())),
            _read_ml1m_movies(root / "movielens" / "movies.dat"),
        )
        if recovered:
            mapping = mapping.with_columns(
                pl.coalesce(pl.col("ml1m_movie_id"), pl.col("item_id").replace_strict(recovered, default=None))
                .alias("ml1m_movie_id")
            )
        ds.count_skip("items_matched_to_ml1m_by_title_year", len(recovered))
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

    interactions = _ml100k_interactions(inter, base / "ml-100k.inter", items["item_id"])
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
    try:
        interactions = ratings.select(
            pl.col("user_id").cast(pl.Utf8),
            pl.col("movie_id").cast(pl.Int64).cast(pl.Utf8).alias("item_id"),
            pl.col("timestamp").cast(pl.Int64),
            pl.col("rating").cast(pl.Float64),
        )
    except pl.exceptions.PolarsError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"unexpected column types ({first})", path=ml / "ml-1m" / "ratings.parquet") from None
    bad = int((interactions["rating"].is_null() | ~interactions["rating"].is_finite()
               | interactions["timestamp"].is_null()).sum())
    if bad:
        raise DataError(f"{bad} rating(s) with a missing or non-finite rating or timestamp",
                        path=ml / "ml-1m" / "ratings.parquet")
    rows = [
        {"item_id": movie_id, "title": _clean(title), "year": year, "genres": genres.replace("|", ", ")}
        for movie_id, title, year, genres in _read_ml1m_movies(ml / "movies.dat")
    ]
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
