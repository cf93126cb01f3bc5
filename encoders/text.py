"""Text encoder: a frozen sentence-transformers model, L2-normalised embeddings, offline only."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from recdata.errors import DataError

from encoders.weights import PACKAGED_TEXT_MODELS, packaged_fingerprint, packaged_path, path_fingerprint

logger = logging.getLogger(__name__)


def enable_offline_mode() -> None:
    """Forbid Hugging Face downloads so a missing model file fails at once instead of hanging."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # huggingface_hub reads the variable once at import; update it if it was imported already.
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def resolve_text_model(model: str) -> str:
    """Packaged name → its folder; an existing path → itself; anything else → a hub model name."""
    if model in PACKAGED_TEXT_MODELS:
        return str(packaged_path(PACKAGED_TEXT_MODELS, model))
    return str(Path(model).resolve()) if Path(model).exists() else model


def text_model_fingerprint(model: str) -> str:
    """Identity of the text model's weights, computed without loading them."""
    if model in PACKAGED_TEXT_MODELS:
        return packaged_fingerprint(PACKAGED_TEXT_MODELS, model)
    if Path(model).exists():
        return path_fingerprint(Path(model))
    return f"hub:{model}"


@contextlib.contextmanager
def _no_loading_bar() -> Iterator[None]:
    """transformers draws a "Loading weights" bar for a load that takes milliseconds; in a
    command's output or log it is noise. Its setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class TextEncoder:
    """sentence-transformers model → float32 unit-length embeddings."""

    def __init__(
        self,
        *,
        model: str,
        device: str = "cpu",
        half: bool = False,
        max_tokens: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = model
        source = resolve_text_model(model)
        try:
            with _no_loading_bar():
                self.model = SentenceTransformer(source, device=device)
        except Exception as exc:
            raise DataError(
                f"cannot load text model {model!r} offline ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); give a local model folder or "
                "a model already in the Hugging Face cache"
            ) from None
        self.model.eval()
        if half:
            self.model.half()
        if max_tokens is not None:
            self.model.max_seq_length = int(max_tokens)
        self.device = device
        self.dim = int(self.model.get_embedding_dimension())

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 64, progress: Any = None
    ) -> np.ndarray:
        """Embed non-empty texts → float32 [n, dim], each row of unit L2 norm."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Batches of texts of similar length waste little compute on padding: encode in order of
        # length over the whole list (sentence-transformers only sorts within one call), in calls
        # of several batches so that the progress bar still moves. On 2 CPU cores this is ~1.3x
        # faster than calls in catalogue order.
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        step = batch_size * 8
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            chunk = [texts[i] for i in rows]
            with torch.inference_mode():
                emb = self.model.encode(
                    chunk,
                    batch_size=batch_size,
                    convert_to_tensor=True,
                    show_progress_bar=False,
                    normalize_embeddings=False,
                )
            # Normalise in float32 so that half-precision runs still give unit vectors.
            emb = torch.nn.functional.normalize(emb.float(), dim=-1)
            out[rows] = emb.cpu().numpy()
            if progress is not None:
                progress.update(len(chunk))
        return out
