"""Tokenizer inputs: the cached item embeddings of a run directory, validated.

The tokenizer sees only the catalogue (no interactions): ``embeddings/text.safetensors`` and the
optional ``embeddings/image.safetensors`` (each ``"embeddings"`` float32 [N, d], ``"mask"`` uint8
[N], 1 = present, rows in item_idx order) plus ``data/items.parquet`` for the item ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

import numpy as np
import torch

from recdata.errors import DataError
from recdata.io import load_tensors, read_json, read_parquet
from recdata.layout import layout

log = logging.getLogger(__name__)

MODALITIES = ("text", "image")
T = TypeVar("T")


@dataclass
class TokenizerInputs:
    """Embeddings of every catalogue item, row = item_idx.

    ``image`` is None for a text-only dataset. Rows whose mask is False hold arbitrary values
    (usually zeros) that the tokenizer never reads.
    """

    text: torch.Tensor  # float32 [N, d_t]
    text_mask: torch.Tensor  # bool [N]
    image: torch.Tensor | None  # float32 [N, d_v]
    image_mask: torch.Tensor | None  # bool [N]
    item_ids: list[str]

    @property
    def n_items(self) -> int:
        return int(self.text.shape[0])

    @property
    def d_text(self) -> int:
        return int(self.text.shape[1])

    @property
    def d_image(self) -> int:
        return 0 if self.image is None else int(self.image.shape[1])

    def to(self, device: str | torch.device) -> "TokenizerInputs":
        return TokenizerInputs(
            text=self.text.to(device),
            text_mask=self.text_mask.to(device),
            image=None if self.image is None else self.image.to(device),
            image_mask=None if self.image_mask is None else self.image_mask.to(device),
            item_ids=self.item_ids,
        )

    def subset(self, index: torch.Tensor) -> "TokenizerInputs":
        """The inputs of the given rows only (row order as in ``index``)."""
        text, image, text_mask, image_mask = self.rows(index)
        return TokenizerInputs(text=text, text_mask=text_mask, image=image,
                               image_mask=image_mask,
                               item_ids=[self.item_ids[int(i)] for i in index.tolist()])

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """(text, image, text_mask, image_mask) for the given rows."""
        return (
            self.text[index],
            None if self.image is None else self.image[index],
            self.text_mask[index],
            None if self.image_mask is None else self.image_mask[index],
        )


def _read_modality(path: Path, n_items: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_tensors(path)
    if "embeddings" not in tensors or "mask" not in tensors:
        raise DataError("expected tensors 'embeddings' and 'mask'", path=path)
    emb = tensors["embeddings"]
    mask = tensors["mask"]
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise DataError(f"'embeddings' must be 2-D [N, d], got shape {tuple(emb.shape)}", path=path)
    if mask.ndim != 1 or mask.shape[0] != emb.shape[0]:
        raise DataError(f"'mask' must be [N] with N = {emb.shape[0]}, got {tuple(mask.shape)}", path=path)
    if n_items is not None and emb.shape[0] != n_items:
        raise DataError(f"{emb.shape[0]} embedding rows but items.parquet has {n_items} items", path=path)
    emb = emb.to(torch.float32)
    mask = mask.to(torch.bool)
    bad = ~torch.isfinite(emb[mask]).all(dim=1)
    if bool(bad.any()):
        row = int(torch.nonzero(mask).flatten()[torch.nonzero(bad).flatten()[0]])
        raise DataError("non-finite embedding for a present item", path=path, row=row)
    # Absent rows may hold anything; zero them so nothing downstream can pick up NaNs.
    emb = torch.where(mask[:, None], emb, torch.zeros((), dtype=emb.dtype))
    return emb.contiguous(), mask


def saved_modalities(run_dir: Path) -> list[str]:
    """The modalities the run's fitted tokenizer reads (``TokenizerConfig.modalities``; all of
    them before it is fitted, or for a tokenizer saved before the setting existed)."""
    path = layout(run_dir).tokenizer_dir / "config.json"
    if not path.exists():
        return list(MODALITIES)
    return list((read_json(path).get("config") or {}).get("modalities") or MODALITIES)


def select_modalities(modalities: Sequence[str], text: T, text_mask: T, image: T | None,
                      image_mask: T | None) -> tuple[T, T, T | None, T | None]:
    """``(text, text_mask, image, image_mask)`` as a tokenizer reading only ``modalities``
    sees them: without "image" the image is dropped (a text-only run); with "image" alone it
    takes the text's place, so every expert reads it."""
    if "text" in modalities and "image" in modalities:
        return text, text_mask, image, image_mask
    if "text" in modalities:
        return text, text_mask, None, None
    if image is None or image_mask is None or not bool(image_mask.any()):
        raise DataError("tokenizer.modalities is ['image'] but the run has no image embeddings")
    return image, image_mask, None, None


def load_inputs(run_dir: Path, modalities: Sequence[str] | None = None) -> TokenizerInputs:
    """Read and validate the embeddings of ``run_dir`` as the tokenizer reading ``modalities``
    sees them (None: the fitted tokenizer's, :func:`saved_modalities`); DataError on anything
    malformed."""
    run_dir = Path(run_dir)
    items_path = layout(run_dir).items
    items = read_parquet(items_path)
    for column in ("item_idx", "item_id"):
        if column not in items.columns:
            raise DataError(f"missing column {column!r}", path=items_path)
    items = items.sort("item_idx")
    idx = items["item_idx"].to_numpy()
    if not np.array_equal(idx, np.arange(len(items))):
        raise DataError("item_idx must be 0..N-1 without gaps", path=items_path)
    item_ids = [str(v) for v in items["item_id"].to_list()]
    n_items = len(item_ids)

    text, text_mask = _read_modality(layout(run_dir).embeddings("text"), n_items)
    image_path = layout(run_dir).embeddings("image")
    image = image_mask = None
    if image_path.exists():
        image, image_mask = _read_modality(image_path, n_items)
        if not bool(image_mask.any()):
            log.warning("%s: no item has an image; running text-only", image_path)
            image = image_mask = None
    if not bool(text_mask.any()):
        raise DataError("no item has a text embedding", path=layout(run_dir).embeddings("text"))
    text, text_mask, image, image_mask = select_modalities(
        saved_modalities(run_dir) if modalities is None else modalities,
        text, text_mask, image, image_mask)
    missing_text = int((~text_mask).sum())
    missing_image = 0 if image_mask is None else int((~image_mask).sum())
    if missing_text or missing_image:
        log.info("items missing text: %d, missing image: %d (they still get IDs)", missing_text, missing_image)
    return TokenizerInputs(text=text, text_mask=text_mask, image=image, image_mask=image_mask, item_ids=item_ids)


def make_inputs(
    *,
    text: np.ndarray | torch.Tensor,
    text_mask: np.ndarray | torch.Tensor | None = None,
    image: np.ndarray | torch.Tensor | None = None,
    image_mask: np.ndarray | torch.Tensor | None = None,
    item_ids: list[str] | None = None,
) -> TokenizerInputs:
    """Build inputs from in-memory arrays (benchmarks, tests, notebooks)."""
    text_t = torch.as_tensor(np.asarray(text), dtype=torch.float32)
    n = text_t.shape[0]
    tm = torch.ones(n, dtype=torch.bool) if text_mask is None else torch.as_tensor(np.asarray(text_mask)).bool()
    img_t = None if image is None else torch.as_tensor(np.asarray(image), dtype=torch.float32)
    im = None
    if img_t is not None:
        im = torch.ones(n, dtype=torch.bool) if image_mask is None else torch.as_tensor(np.asarray(image_mask)).bool()
        img_t = torch.where(im[:, None], img_t, torch.zeros(()))
    text_t = torch.where(tm[:, None], text_t, torch.zeros(()))
    ids = item_ids if item_ids is not None else [str(i) for i in range(n)]
    return TokenizerInputs(text=text_t, text_mask=tm, image=img_t, image_mask=im, item_ids=ids)
