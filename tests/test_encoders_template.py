"""Item-text templates: null fields drop their sentence (or bracketed group), never print None."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.template import Template, render_texts
from recdata.errors import DataError

MOVIELENS = "{title} ({year}). Genres: {genres}. Directed by {director}. Starring {actors}. {plot}"


def test_full_row_renders_every_field() -> None:
    row = dict(title="Heat", year="1995", genres="Action|Crime", director="Michael Mann",
               actors="Al Pacino, Robert De Niro", plot="A heist goes wrong.")
    assert Template(MOVIELENS).render(row) == (
        "Heat (1995). Genres: Action|Crime. Directed by Michael Mann. "
        "Starring Al Pacino, Robert De Niro. A heist goes wrong."
    )


def test_null_fields_drop_their_sentence_not_the_item() -> None:
    row = dict(title="Heat", year="1995", genres="Action|Crime", director=None,
               actors="Al Pacino, Robert De Niro", plot="   ")
    assert Template(MOVIELENS).render(row) == (
        "Heat (1995). Genres: Action|Crime. Starring Al Pacino, Robert De Niro."
    )


def test_missing_year_drops_only_the_bracketed_group() -> None:
    row = dict(title="Heat", year=None, genres=float("nan"), director="Michael Mann", actors=None, plot=None)
    assert Template(MOVIELENS).render(row) == "Heat. Directed by Michael Mann."


def test_missing_title_drops_the_first_sentence_with_its_year() -> None:
    row = dict(title=None, year="1995", genres=None, director=None, actors=None, plot="Only a plot.")
    assert Template(MOVIELENS).render(row) == "Only a plot."


def test_all_fields_missing_gives_empty_text_despite_literal_words() -> None:
    assert Template(MOVIELENS).render({}) == ""
    # A sentence without fields must not keep an item "present" on its own.
    assert Template("Product. {title}").render({"title": None}) == ""
    assert Template("Product. {title}").render({"title": "Lipstick"}) == "Product. Lipstick"


def test_amazon_style_template_and_whitespace() -> None:
    template = "{title}. Brand: {brand}. Categories: {categories}."
    row = dict(title="  Rose\n oil  ", brand="", categories="Beauty > Skin Care")
    assert Template(template).render(row) == "Rose oil. Categories: Beauty > Skin Care."


def test_escaped_braces_literal_brackets_and_format_specs() -> None:
    t = Template("{title} (film) {{x}} [{brand} ({year})] {plot:.5}")
    assert t.render(dict(title="T", brand="B", year=None, plot="abcdefgh")) == "T (film) {x} [B] abcde"
    assert t.fields == ("title", "brand", "year", "plot")


@pytest.mark.parametrize("bad", ["{title", "{0} x", "{} x", "{title.upper}", "no fields at all"])
def test_malformed_templates_are_data_errors(bad: str) -> None:
    with pytest.raises(DataError):
        Template(bad)


def test_render_texts_checks_columns_and_keeps_row_order() -> None:
    items = pl.DataFrame({"title": ["A", None, "C"], "year": ["1990", "1991", None]})
    assert render_texts(template="{title} ({year})", items=items) == ["A (1990)", "", "C"]
    with pytest.raises(DataError, match="director"):
        render_texts(template="{title}. By {director}.", items=items)


_value = st.one_of(st.none(), st.just(""), st.just(" "), st.text("abcxyz", min_size=1, max_size=6))


@settings(max_examples=200, deadline=None)
@given(title=_value, year=_value, genres=_value, director=_value, actors=_value, plot=_value)
def test_property_a_value_appears_exactly_when_its_sentence_survives(**row: str | None) -> None:
    text = Template(MOVIELENS).render(row)

    def present(name: str) -> bool:
        v = row[name]
        return v is not None and not (isinstance(v, float) and math.isnan(v)) and bool(v.strip())

    assert "None" not in text
    expected_parts = []
    if present("title"):
        expected_parts.append(row["title"].strip() + (f" ({row['year'].strip()})" if present("year") else "") + ".")
    for name, prefix in (("genres", "Genres: "), ("director", "Directed by "), ("actors", "Starring ")):
        if present(name):
            expected_parts.append(f"{prefix}{row[name].strip()}.")
    if present("plot"):
        expected_parts.append(row["plot"].strip())
    assert text == " ".join(expected_parts)
