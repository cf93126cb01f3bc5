"""The interface every tokenizer implements, and the input standardisation they share.

All public methods take *raw* embeddings exactly as stored in ``run_dir/embeddings`` (the
tokenizer standardises them itself with statistics fitted on the catalogue) plus boolean presence
masks; ``image``/``image_mask`` are None for text-only runs. Rows whose mask is False are never
read: they are replaced by the training mean (baselines) or a learned placeholder (MMQ).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from tokenizer.config import TokenizerConfig
from tokenizer.inputs import TokenizerInputs
from tokenizer.quantizer import Codebook

# (text, image, text_mask, image_mask)
Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]


class Standardiser(nn.Module):
    """Per-dimension z-scoring fitted on the rows where the modality is present.

    Unit-norm sentence embeddings vary in only a few directions; without this the codebooks of
    a quantiser collapse onto them.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        rows = x[mask].to(self.mean.dtype)
        if rows.shape[0] == 0:
            return
        self.mean.copy_(rows.mean(0))
        std = rows.std(0, unbiased=False) if rows.shape[0] > 1 else torch.ones_like(self.std)
        # Constant dimensions carry no information; dividing by ~0 would blow them up.
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Standardised rows; absent rows become exact zeros (the training mean)."""
        z = (x - self.mean) / self.std
        return torch.where(mask[:, None], z, torch.zeros((), dtype=z.dtype, device=z.device))


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per element over the rows where ``mask`` is True (0 if none)."""
    w = mask.to(pred.dtype)[:, None]
    denom = (w.sum() * pred.shape[1]).clamp_min(1.0)
    return ((pred - target).pow(2) * w).sum() / denom


class SemanticTokenizer(nn.Module):
    """Base class: maps item embeddings to a fixed-length tuple of codes (one per position).

    Subclasses define ``position_names``, ``codebooks`` (one :class:`Codebook` per position, or
    fixed centroids for non-trainable tokenizers) and the methods marked below.
    """

    trainable: bool = True

    def __init__(self, cfg: TokenizerConfig, *, d_text: int, d_image: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.d_text = int(d_text)
        self.d_image = int(d_image)
        self.text_std = Standardiser(self.d_text)
        self.image_std = Standardiser(self.d_image) if self.d_image > 0 else None
        # False during warm-up epochs: the decoder reads the continuous latent.
        self.quantise = True

    # ------------------------------------------------------------------ shared helpers
    @property
    def has_image(self) -> bool:
        return self.d_image > 0

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.cfg.codebook_size] * len(self.position_names)

    @property
    def n_positions(self) -> int:
        return len(self.position_names)

    def learning_rate(self) -> float:
        return self.cfg.lr

    def fit_standardisation(self, inputs: TokenizerInputs) -> None:
        self.text_std.fit(inputs.text, inputs.text_mask)
        if self.image_std is not None and inputs.image is not None:
            self.image_std.fit(inputs.image, inputs.image_mask)

    def standardise(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(x_text, x_image, text_mask, image_mask) standardised; masks are never None."""
        text, image, text_mask, image_mask = batch
        text_mask = text_mask.to(torch.bool)
        x_t = self.text_std(text.to(self.text_std.mean.dtype), text_mask)
        if self.image_std is None:
            return x_t, None, text_mask, torch.zeros_like(text_mask)
        if image is None or image_mask is None:
            image_mask = torch.zeros_like(text_mask)
            image = torch.zeros(text.shape[0], self.d_image, device=text.device)
        image_mask = image_mask.to(torch.bool)
        x_v = self.image_std(image.to(self.image_std.mean.dtype), image_mask)
        return x_t, x_v, text_mask, image_mask

    @staticmethod
    def chunks(inputs: TokenizerInputs, size: int = 4096) -> Iterator[Batch]:
        n = inputs.n_items
        for start in range(0, n, size):
            idx = torch.arange(start, min(n, start + size), device=inputs.text.device)
            yield inputs.rows(idx)

    @torch.no_grad()
    def encode_inputs(self, inputs: TokenizerInputs) -> torch.Tensor:
        """Hard codes [N, L_raw] for a whole catalogue, in eval mode, chunked."""
        was_training = self.training
        self.eval()
        out = torch.cat([self.encode(*b) for b in self.chunks(inputs)]) if inputs.n_items else \
            torch.zeros(0, self.n_positions, dtype=torch.long)
        self.train(was_training)
        return out

    @torch.no_grad()
    def scores_inputs(self, inputs: TokenizerInputs) -> list[torch.Tensor]:
        """Per position [N, K_p] similarity of every item to every code (higher = closer)."""
        was_training = self.training
        self.eval()
        parts = [self.scores(*b) for b in self.chunks(inputs)]
        self.train(was_training)
        return [torch.cat([p[i] for p in parts]) for i in range(self.n_positions)]

    def gate_stats(self, inputs: TokenizerInputs) -> dict:
        """How a gated tokenizer spreads its items over experts (empty for ungated ones)."""
        return {}

    # ------------------------------------------------------------------ subclass API
    @property
    def position_names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, text, image=None, text_mask=None, image_mask=None) -> torch.Tensor:  # pragma: no cover
        """Hard codes [B, L_raw] (int64)."""
        raise NotImplementedError

    def scores(self, text, image=None, text_mask=None, image_mask=None) -> list[torch.Tensor]:  # pragma: no cover
        """Per position [B, K_p] similarity to every codeword (argmax = hard code)."""
        raise NotImplementedError

    def soft_codes(self, text, image=None, text_mask=None, image_mask=None, *, tau: float = 1.0) -> list[torch.Tensor]:  # pragma: no cover
        """Per position [B, K_p] straight-through one-hot codes (forward = exact hard codes)."""
        raise NotImplementedError

    def reconstruction_losses(self, text, image=None, text_mask=None, image_mask=None) -> dict[str, torch.Tensor]:  # pragma: no cover
        """Loss terms (always "recon" and "aux"; "total" = the stage-1 objective)."""
        raise NotImplementedError

    def codebook_modules(self) -> list[Codebook]:  # pragma: no cover
        """One Codebook per position, in position order (empty for non-trainable tokenizers)."""
        raise NotImplementedError

    def position_latents(self, inputs: TokenizerInputs) -> list[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        """Per position (latent [N, d] fed to that codebook, valid-row mask [N])."""
        raise NotImplementedError

    def init_codebooks(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:  # pragma: no cover
        raise NotImplementedError

    def fit_nonparametric(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:  # pragma: no cover
        """Fitting for tokenizers without gradient training."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared mask defaults
    def _masks(self, text: torch.Tensor, image: torch.Tensor | None, text_mask, image_mask) -> Batch:
        if text_mask is None:
            text_mask = torch.ones(text.shape[0], dtype=torch.bool, device=text.device)
        if image is not None and image_mask is None:
            image_mask = torch.ones(text.shape[0], dtype=torch.bool, device=text.device)
        return text, image, text_mask, image_mask
