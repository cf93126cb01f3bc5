"""Image encoder: a frozen timm backbone whose global-pooled features embed each item's image.

A missing, truncated or non-image file is never fatal: the item is masked (zeros, mask 0) and
the reason is counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from recdata.errors import DataError

from encoders.weights import (
    PACKAGED_IMAGE_WEIGHTS,
    map_state_dict,
    packaged_fingerprint,
    packaged_path,
    path_fingerprint,
    read_state_dict,
)

logger = logging.getLogger(__name__)

RANDOM_INIT = "none"


def load_image(path: str | None) -> tuple[Any, str | None]:
    """Open an image as RGB → (PIL image, None), or (None, reason) when it cannot be used.

    Reasons: no_image_path, missing_file, not_an_image, truncated, unreadable.
    """
    from PIL import Image, UnidentifiedImageError

    if path is None or not str(path).strip():
        return None, "no_image_path"
    file = Path(path)
    if not file.is_file():
        return None, "missing_file"
    try:
        with Image.open(file) as image:
            image.load()
            return image.convert("RGB"), None
    except UnidentifiedImageError:
        return None, "not_an_image"
    except OSError as exc:
        # PIL reports a cut-off file as OSError("image file is truncated ...") or a short read.
        text = str(exc).lower()
        return None, "truncated" if "truncat" in text or "broken data stream" in text else "unreadable"
    except Exception:  # decompression bombs, malformed headers, codec errors: skip, never crash
        return None, "unreadable"


@dataclass
class _Batch:
    positions: list[int]
    pixels: Any  # float tensor [n_valid, 3, H, W] or None
    reasons: list[str | None]


class _ImageFiles:
    """Map-style dataset: position → (position, pixel tensor or None, reason)."""

    def __init__(self, paths: Sequence[str | None], transform: Any) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        image, reason = load_image(self.paths[i])
        if image is None:
            return i, None, reason
        try:
            return i, self.transform(image), None
        except Exception:
            return i, None, "unreadable"


def _collate(samples: list[tuple[int, Any, str | None]]) -> _Batch:
    import torch

    pixels = [p for _, p, _ in samples if p is not None]
    return _Batch(
        positions=[i for i, _, _ in samples],
        pixels=torch.stack(pixels) if pixels else None,
        reasons=[r for _, _, r in samples],
    )


def image_memory_format(device: str) -> Any:
    """Tensor layout the backbone runs in on ``device``: channels-last on CPU, default elsewhere."""
    import torch

    return torch.channels_last if str(device).startswith("cpu") else torch.contiguous_format


def memory_format_name(device: str) -> str:
    """Name of that layout, for cache keys: the layout changes float results in the last bits."""
    return "channels_last" if str(device).startswith("cpu") else "contiguous"


def image_weights_fingerprint(*, model_name: str, weights: str | None) -> str:
    """Identity of the weights a VisionEncoder would load, computed without loading them."""
    if weights is None:
        if model_name in PACKAGED_IMAGE_WEIGHTS:
            return packaged_fingerprint(PACKAGED_IMAGE_WEIGHTS, model_name)
        return f"timm-pretrained:{model_name}"
    if weights.lower() == RANDOM_INIT:
        return "random-init"
    return path_fingerprint(Path(weights))


class VisionEncoder:
    """timm backbone (num_classes=0) with timm's own eval preprocessing for that model."""

    def __init__(
        self,
        *,
        model_name: str,
        weights: str | None = None,
        device: str = "cpu",
        half: bool = False,
    ) -> None:
        import timm
        import torch
        from timm.data import create_transform, resolve_data_config

        self.model_name = model_name
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.model = self._build(timm, model_name, weights)
        self.model.eval().to(device=device, dtype=self.dtype)
        # Convolutions on CPU run about 1.8x faster on NHWC tensors (oneDNN's native layout).
        self.memory_format = image_memory_format(device)
        self.model.to(memory_format=self.memory_format)
        self.dim = int(self.model.num_features)
        self.data_config = dict(resolve_data_config({}, model=self.model))
        self.transform = create_transform(**self.data_config, is_training=False)

    @staticmethod
    def _build(timm: Any, model_name: str, weights: str | None) -> Any:
        if not timm.is_model(model_name):
            raise DataError(f"unknown timm image model {model_name!r}")
        if weights is None and model_name not in PACKAGED_IMAGE_WEIGHTS:
            # Not shipped in a package: timm's pretrained weights, from the local cache only.
            try:
                return timm.create_model(model_name, pretrained=True, num_classes=0)
            except Exception as exc:
                raise DataError(
                    f"no packaged weights for image model {model_name!r} and timm could not load "
                    f"its pretrained weights offline ({type(exc).__name__}); set image_weights to "
                    "a weights file, or to 'none' for random initialisation"
                ) from None
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
        if weights is not None and weights.lower() == RANDOM_INIT:
            logger.warning("image model %s uses random weights (image_weights='none')", model_name)
            return model
        path = packaged_path(PACKAGED_IMAGE_WEIGHTS, model_name) if weights is None else Path(weights)
        state = map_state_dict(read_state_dict(path), model.state_dict())
        model.load_state_dict(state, strict=True)
        return model

    def encode(
        self,
        paths: Sequence[str | None],
        *,
        batch_size: int = 64,
        num_workers: int = 0,
        progress: Any = None,
    ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Embed images → (float32 [n, dim], uint8 mask [n], reason per item or None)."""
        import torch
        from torch.utils.data import DataLoader

        n = len(paths)
        embeddings = np.zeros((n, self.dim), dtype=np.float32)
        mask = np.zeros(n, dtype=np.uint8)
        reasons: list[str | None] = [None] * n
        loader = DataLoader(
            _ImageFiles(paths, self.transform),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_collate,
        )
        with torch.inference_mode():
            for batch in loader:
                valid = [p for p, r in zip(batch.positions, batch.reasons) if r is None]
                for p, r in zip(batch.positions, batch.reasons):
                    reasons[p] = r
                if batch.pixels is not None:
                    pixels = batch.pixels.to(device=self.device, dtype=self.dtype).contiguous(
                        memory_format=self.memory_format
                    )
                    features = self.model(pixels).float().cpu().numpy()
                    embeddings[valid] = features
                    mask[valid] = 1
                if progress is not None:
                    progress.update(len(batch.positions))
        # A NaN/inf feature (e.g. float16 overflow) would poison every later stage: mask it.
        bad = ~np.isfinite(embeddings).all(axis=1) & (mask == 1)
        for p in np.flatnonzero(bad):
            embeddings[p] = 0.0
            mask[p] = 0
            reasons[p] = "non_finite"
        return embeddings, mask, reasons
