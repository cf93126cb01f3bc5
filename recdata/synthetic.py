"""A small synthetic catalogue with learnable structure, for tests and demos.

Items belong to clusters; each cluster has its own vocabulary and image colour, so text and image
embeddings carry the cluster. Users prefer one or two clusters and move through a cluster in a
consistent order, so a sequential model can learn the next item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recdata.config import DataConfig
from recdata.dataset import Dataset

_WORDS = [
    ["space", "alien", "galaxy", "robot", "laser"],
    ["love", "wedding", "romance", "kiss", "heart"],
    ["murder", "detective", "crime", "police", "heist"],
    ["cartoon", "family", "animated", "magic", "talking"],
    ["war", "soldier", "battle", "army", "history"],
    ["ghost", "haunted", "horror", "scream", "night"],
]
_COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 200), (220, 200, 40), (150, 40, 170), (20, 20, 20)]


def make_synthetic_dataset(
    *,
    n_users: int = 50,
    n_items: int = 60,
    seed: int = 0,
    with_images: bool = True,
    image_dir: str | Path | None = None,
) -> Dataset:
    rng = np.random.default_rng(seed)
    n_clusters = len(_WORDS)
    cluster = np.arange(n_items) % n_clusters
    titles, plots, genres, image_paths = [], [], [], []
    if with_images:
        from PIL import Image

        image_dir = Path(image_dir) if image_dir is not None else None
        if image_dir is None:
            raise ValueError("with_images=True needs an image_dir")
        image_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_items):
        c = cluster[i]
        words = rng.choice(_WORDS[c], size=3, replace=True)
        titles.append(f"The {words[0]} {words[1]} {i}")
        plots.append(f"A story about {' and '.join(words)}.")
        genres.append(_WORDS[c][0])
        if with_images:
            base = np.array(_COLOURS[c], dtype=np.float64)
            pixels = np.clip(base + rng.normal(0, 20, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            path = Path(image_dir) / f"{i}.png"
            Image.fromarray(pixels).save(path)
            image_paths.append(str(path.resolve()))
        else:
            image_paths.append(None)
    items = pl.DataFrame(
        {
            "item_id": [str(i) for i in range(n_items)],
            "title": titles,
            "genres": genres,
            "plot": plots,
            "image_path": image_paths,
        },
        schema={"item_id": pl.Utf8, "title": pl.Utf8, "genres": pl.Utf8, "plot": pl.Utf8, "image_path": pl.Utf8},
    )
    by_cluster = [np.flatnonzero(cluster == c) for c in range(n_clusters)]
    rows_user, rows_item, rows_ts, rows_rating = [], [], [], []
    for u in range(n_users):
        liked = rng.choice(n_clusters, size=2, replace=False)
        length = int(rng.integers(8, 21))
        c = liked[0]
        pos = int(rng.integers(len(by_cluster[c])))
        t = int(rng.integers(0, 1000))
        for _ in range(length):
            if rng.random() < 0.2:
                c = liked[1] if c == liked[0] else liked[0]
                pos = int(rng.integers(len(by_cluster[c])))
            item = by_cluster[c][pos % len(by_cluster[c])]
            pos += 1
            t += int(rng.integers(1, 100))
            rows_user.append(str(u))
            rows_item.append(str(item))
            rows_ts.append(t)
            # Users mostly like their first cluster and mostly dislike their second, so that a
            # CTR model has something to learn from (user, item) and a constant one does not.
            p_like = 0.9 if c == liked[0] else 0.2
            rows_rating.append(float(rng.choice([4, 5]) if rng.random() < p_like else rng.choice([1, 2, 3])))
    interactions = pl.DataFrame(
        {"user_id": rows_user, "item_id": rows_item, "timestamp": rows_ts, "rating": rows_rating},
        schema={"user_id": pl.Utf8, "item_id": pl.Utf8, "timestamp": pl.Int64, "rating": pl.Float64},
    )
    users = pl.DataFrame(
        {
            "user_id": [str(u) for u in range(n_users)],
            "age": rng.integers(18, 70, size=n_users).astype(np.int64),
            "gender": rng.choice(["M", "F"], size=n_users).tolist(),
            "occupation": rng.choice(["student", "engineer", "artist", "other"], size=n_users).tolist(),
        }
    )
    return Dataset(
        name="synthetic",
        items=items,
        interactions=interactions,
        users=users,
        text_fields=("title", "genres", "plot"),
        default_template="{title}. Genres: {genres}. {plot}",
        has_timestamps=True,
    )


def write_synthetic_run_data(
    run_dir: str | Path,
    *,
    n_users: int = 50,
    n_items: int = 60,
    seed: int = 0,
    with_images: bool = True,
    image_dir: str | Path | None = None,
) -> dict:
    """Write a complete ``run_dir/data`` for a synthetic dataset (no k-core filtering)."""
    from recdata.prepare import prepare

    run_dir = Path(run_dir)
    if with_images and image_dir is None:
        image_dir = run_dir / "synthetic_images"
    dataset = make_synthetic_dataset(
        n_users=n_users, n_items=n_items, seed=seed, with_images=with_images, image_dir=image_dir
    )
    return prepare(dataset=dataset, cfg=DataConfig(dataset="synthetic", kcore=0), run_dir=run_dir, seed=seed)
