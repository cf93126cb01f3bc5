"""The in-memory shape every loader produces: an item table and an interaction log."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

ITEM_SCHEMA_REQUIRED = {"item_id": pl.Utf8, "title": pl.Utf8, "image_path": pl.Utf8}
INTERACTION_SCHEMA = {
    "user_id": pl.Utf8,
    "item_id": pl.Utf8,
    "timestamp": pl.Int64,
    "rating": pl.Float64,
}


@dataclass
class Dataset:
    """A loaded and cleaned dataset.

    ``items``: item_id (str, unique), title (str or null), the dataset's other text fields
    (str or null), image_path (absolute path or null).
    ``interactions``: user_id, item_id, timestamp (Int64; the position in the user's history
    when the source has no clock), rating (Float64 or null), in source order.
    ``users``: user_id plus optional features (age, gender, occupation), or None.
    """

    name: str
    items: pl.DataFrame
    interactions: pl.DataFrame
    users: pl.DataFrame | None = None
    text_fields: tuple[str, ...] = ("title",)
    default_template: str = "{title}"
    has_timestamps: bool = True
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def count_skip(self, reason: str, n: int) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)

    def stats(self) -> dict:
        """Counts after loading and cleaning (before k-core filtering)."""
        text_cols = [c for c in self.text_fields if c in self.items.columns]
        if text_cols:
            has_text = pl.any_horizontal(
                [pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "") for c in text_cols]
            )
            items_with_text = int(self.items.select(has_text.sum()).item())
        else:
            items_with_text = 0
        return {
            "dataset": self.name,
            "users": int(self.interactions["user_id"].n_unique()),
            "items": int(self.items.height),
            "interactions": int(self.interactions.height),
            "items_with_text": items_with_text,
            "items_with_image": int(self.items["image_path"].is_not_null().sum()),
            "skipped": dict(sorted(self.skipped.items())),
            "warnings": list(self.warnings),
        }
