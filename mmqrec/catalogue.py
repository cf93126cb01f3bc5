"""New items without retraining (``mmqrec add-items RUN_DIR new_items.csv``).

A semantic ID comes from an item's content, so a trained run can take new items at once: their
text (and image) go through the run's frozen encoders, the trained tokenizer gives them codes,
and the collision token numbers them against the existing table. An item whose codes already
name as many items as the collision position can hold moves to its next-nearest code at the
last content position (the retriever's vocabulary never grows). The retriever and the SID
ranker can then return them; an ItemID ranker cannot score them and leaves them in the
retriever's order.

The retriever's priors read their content too (``content.safetensors``, the vectors the content
prior compares), and the channel for untrained items offers them to users whose recent items
resemble them (:mod:`generative_rec.untrained`).

Artefact (written by this command only): ``additions/v<N>/items.parquet``,
``semantic_ids.parquet`` and ``content.safetensors`` hold every item added so far, and
``additions/current.json`` names the current version; it is replaced atomically after the
version folder is complete, so a crash leaves the previous catalogue in force and every earlier
version stays on disk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recdata.custom import read_items_file
from recdata.errors import DataError
from recdata.io import load_tensors, read_json, read_parquet, save_tensors, write_json, write_parquet
from recdata.layout import layout

log = logging.getLogger(__name__)

ADDITIONS_DIR = "additions"
CURRENT_FILE = "current.json"


@dataclass
class Additions:
    """Items added to a run after training (empty when there are none)."""

    version: int
    items: pl.DataFrame  # item_idx, item_id, title, image_path, ...
    codes: np.ndarray  # [M, L] full semantic IDs
    content: np.ndarray | None = None  # [M, D] content vectors (None: added by an older version)

    @classmethod
    def empty(cls, sid_length: int) -> "Additions":
        return cls(0, pl.DataFrame(schema={"item_idx": pl.Int64, "item_id": pl.String,
                                           "title": pl.String, "image_path": pl.String}),
                   np.zeros((0, sid_length), dtype=np.int64))


def current_version(run_dir: Path) -> int:
    path = Path(run_dir) / ADDITIONS_DIR / CURRENT_FILE
    return int(read_json(path)["version"]) if path.exists() else 0


def load_additions(run_dir: Path, sid_length: int) -> Additions:
    version = current_version(run_dir)
    if version == 0:
        return Additions.empty(sid_length)
    folder = Path(run_dir) / ADDITIONS_DIR / f"v{version}"
    items = read_parquet(folder / "items.parquet").sort("item_idx")
    sids = read_parquet(folder / "semantic_ids.parquet").sort("item_idx")
    cols = sorted((c for c in sids.columns if c[:1] == "t" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    codes = np.stack([sids[c].to_numpy() for c in cols], axis=1).astype(np.int64)
    if codes.shape[1] != sid_length or len(codes) != items.height:
        raise DataError("added items do not match the run's ID table", path=folder)
    content = None
    if (folder / "content.safetensors").exists():
        content = load_tensors(folder / "content.safetensors")["vectors"].numpy()
        if len(content) != items.height:
            raise DataError("added items' content vectors do not match their table", path=folder)
    return Additions(version, items, codes, content)


def _encode(run_dir: Path, items: pl.DataFrame, device: str) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray | None, np.ndarray | None]:
    """Text (and image) embeddings of the new items with the run's frozen encoders."""
    from encoders.template import Template, render_texts
    from encoders.text import TextEncoder

    meta = read_json(layout(run_dir).embeddings_meta)
    text_meta = meta.get("text") or {}
    if not text_meta.get("enabled"):
        raise DataError("the run has no text embeddings to extend", path=layout(run_dir).embeddings_dir)
    absent = [f for f in Template(text_meta["template"]).fields if f not in items.columns]
    if absent:  # a new items file may leave out some of the template's fields
        items = items.with_columns(pl.lit(None, dtype=pl.String).alias(f) for f in absent)
    texts = render_texts(template=text_meta["template"], items=items)
    encoder = TextEncoder(model=text_meta["model"], device=device, max_tokens=text_meta.get("max_text_tokens"))
    present = [i for i, t in enumerate(texts) if t]
    text = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    if present:
        text[present] = encoder.encode([texts[i] for i in present])
    text_mask = np.zeros(len(texts), dtype=bool)
    text_mask[present] = True
    image = image_mask = None
    image_meta = meta.get("image") or {}
    if image_meta.get("enabled") and not image_meta.get("absent"):
        import yaml

        from encoders.vision import VisionEncoder

        config = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
        weights = (config.get("encoders") or {}).get("image_weights")
        vision = VisionEncoder(model_name=image_meta["model"], weights=weights, device=device, half=False)
        image, mask, _ = vision.encode(items["image_path"].to_list(), batch_size=32, num_workers=0)
        image, image_mask = np.asarray(image, dtype=np.float32), np.asarray(mask, dtype=bool)
    return text, text_mask, image, image_mask


def assign_ids(*, raw: np.ndarray, alternatives: np.ndarray, existing: np.ndarray,
               collision_size: int) -> tuple[np.ndarray, int]:
    """Full IDs for new items: raw codes plus a collision token numbering them after the
    existing items with the same raw codes; when the collision position is full, the next
    alternative code at the last raw position (``alternatives[i]``, best first) is taken.

    Returns the IDs [M, L_raw + 1] and how many items moved to an alternative code.
    """
    counts: dict[tuple[int, ...], int] = {}
    for row in existing[:, :-1].tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    out = np.zeros((len(raw), raw.shape[1] + 1), dtype=np.int64)
    moved = 0
    for i, codes in enumerate(raw.tolist()):
        candidates = [codes] + [codes[:-1] + [int(a)] for a in alternatives[i] if int(a) != codes[-1]]
        for j, option in enumerate(candidates):
            taken = counts.get(tuple(option), 0)
            if taken < collision_size:
                out[i, :-1], out[i, -1] = option, taken
                counts[tuple(option)] = taken + 1
                moved += int(j > 0)
                break
        else:
            raise DataError(f"no free semantic ID for new item {i}: every alternative code is full")
    return out, moved


def add_items(*, run_dir: Path, items_file: Path, device: str = "cpu",
              images_outside_folder: bool = False) -> dict[str, Any]:
    """Give the items of ``items_file`` semantic IDs and add them to ``run_dir``'s catalogue."""
    import torch

    from generative_rec.content import unit_vectors
    from tokenizer.inputs import saved_modalities, select_modalities
    from tokenizer.registry import load_tokenizer
    from tokenizer.sid import SemanticIds

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if not items_file.exists():
        raise DataError("file not found", path=items_file)
    base_items = read_parquet(layout(run_dir).items)
    sids = SemanticIds.from_run_dir(run_dir)
    previous = load_additions(run_dir, sids.length)
    new, _, missing_images = read_items_file(items_file, images_outside_folder=images_outside_folder,
                                             allow_outside="pass --images-outside-folder")
    known = set(base_items["item_id"].cast(pl.String).to_list()) | set(previous.items["item_id"].to_list())
    clash = [i for i, item in enumerate(new["item_id"].to_list()) if item in known]
    if clash:
        raise DataError(f"item_id {new['item_id'][clash[0]]!r} is already in the catalogue",
                        path=items_file, row=clash[0] + 2)
    if new.height == 0:
        raise DataError("no items in the file", path=items_file)

    text, text_mask, image, image_mask = _encode(run_dir, new, device)
    content = unit_vectors([(text, text_mask)] + ([] if image is None else [(image, image_mask)]))
    tokenizer = load_tokenizer(run_dir)
    text, text_mask, image, image_mask = select_modalities(
        saved_modalities(run_dir), text, text_mask, image, image_mask)
    args = (torch.from_numpy(text), None if image is None else torch.from_numpy(image),
            torch.from_numpy(text_mask), None if image_mask is None else torch.from_numpy(image_mask))
    with torch.no_grad():
        raw = tokenizer.encode(*args).cpu().numpy().astype(np.int64)
        last_scores = tokenizer.scores(*args)[-1].cpu().numpy()
    alternatives = np.argsort(-last_scores, axis=1, kind="stable")[:, :16]
    existing = np.concatenate([sids.codes, previous.codes]) if len(previous.codes) else sids.codes
    codes, moved = assign_ids(raw=raw, alternatives=alternatives, existing=existing,
                              collision_size=int(sids.codebook_sizes[-1]))

    start = len(sids.codes) + len(previous.codes)
    idx = np.arange(start, start + new.height, dtype=np.int64)
    keep = [c for c in new.columns if c in ("item_id", "title", "image_path")] + \
        [c for c in new.columns if c not in ("item_id", "title", "image_path")]
    rows = new.select(keep).with_columns(pl.Series("item_idx", idx)).select(["item_idx", *keep])
    items = pl.concat([previous.items, rows], how="diagonal_relaxed") if previous.items.height else rows
    all_codes = np.concatenate([previous.codes, codes]) if len(previous.codes) else codes
    if previous.items.height and previous.content is None:
        log.warning("items added by an earlier version have no content vectors: the priors "
                    "cannot compare them (add them again to a fresh run to fix)")
    all_content = (np.concatenate([previous.content, content])
                   if previous.content is not None and len(previous.content) else content)
    version = previous.version + 1
    folder = run_dir / ADDITIONS_DIR / f"v{version}"
    write_parquet(folder / "items.parquet", items)
    table = {"item_idx": items["item_idx"].to_numpy(), "item_id": items["item_id"].to_list()}
    table.update({f"t{p}": all_codes[:, p] for p in range(all_codes.shape[1])})
    write_parquet(folder / "semantic_ids.parquet", pl.DataFrame(table))
    if previous.content is not None or not previous.items.height:
        save_tensors(folder / "content.safetensors", {"vectors": all_content})
    summary = {
        "version": version, "added": int(new.height), "items_added_so_far": int(items.height),
        "catalogue_items": int(start + new.height), "moved_to_next_code": moved,
        "image_files_missing": missing_images, "items_without_text": int((~text_mask).sum()),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(run_dir / ADDITIONS_DIR / CURRENT_FILE, {"version": version, **summary})
    log.info("added %d items (version %d): %s", new.height, version, summary)
    return summary
