"""Residual k-means: no gradient training, ``rq.levels`` rounds of k-means on residuals.

Level 0 clusters the standardised input (``cfg.rq.input``: text, or ``[text; image]`` with a
missing modality at the training mean), level l clusters what the previous levels left over.
The centroids are fixed after fitting; ``soft_codes`` still returns straight-through one-hots
(``softmax(-distance^2 / tau)``) so stage 2 can treat every tokenizer alike, but nothing in this
tokenizer has a gradient to follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tokenizer.base import Batch, SemanticTokenizer
from tokenizer.config import TokenizerConfig
from tokenizer.inputs import TokenizerInputs
from tokenizer.quantizer import kmeans, similarity


class RQKMeansTokenizer(SemanticTokenizer):
    trainable = False

    def __init__(self, cfg: TokenizerConfig, *, d_text: int, d_image: int) -> None:
        super().__init__(cfg, d_text=d_text, d_image=d_image)
        self.use_image = cfg.rq.input == "concat" and d_image > 0
        self.d_in = d_text + (d_image if self.use_image else 0)
        self.register_buffer("centroids", torch.zeros(cfg.rq.levels, cfg.codebook_size, self.d_in))

    @property
    def position_names(self) -> list[str]:
        return [f"level{i}" for i in range(self.cfg.rq.levels)]

    def codebook_modules(self) -> list:
        return []

    def _input(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x_t, x_v, t_mask, v_mask = self.standardise(batch)
        m_t = t_mask[:, None].expand_as(x_t)
        if not self.use_image:
            return x_t, m_t
        return torch.cat([x_t, x_v], 1), torch.cat([m_t, v_mask[:, None].expand_as(x_v)], 1)

    def _walk(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """(scores per level, codes per level, reconstruction)."""
        r, recon = x, torch.zeros_like(x)
        scores, codes = [], []
        for level in range(self.centroids.shape[0]):
            s = similarity(r, self.centroids[level], spherical=False)
            c = s.argmax(1)
            q = self.centroids[level][c]
            scores.append(s)
            codes.append(c)
            recon = recon + q
            r = r - q
        return scores, codes, recon

    def encode(self, text, image=None, text_mask=None, image_mask=None) -> torch.Tensor:
        x, _ = self._input(self._masks(text, image, text_mask, image_mask))
        return torch.stack(self._walk(x)[1], 1)

    def scores(self, text, image=None, text_mask=None, image_mask=None) -> list[torch.Tensor]:
        x, _ = self._input(self._masks(text, image, text_mask, image_mask))
        return self._walk(x)[0]

    def soft_codes(self, text, image=None, text_mask=None, image_mask=None, *, tau: float = 1.0) -> list[torch.Tensor]:
        x, _ = self._input(self._masks(text, image, text_mask, image_mask))
        out = []
        r = x
        for level in range(self.centroids.shape[0]):
            s = similarity(r, self.centroids[level], spherical=False)
            p = torch.softmax(s / tau, -1)
            ind = F.one_hot(s.argmax(1), s.shape[1]).to(p.dtype) + (p - p.detach())
            out.append(ind)
            r = r - ind @ self.centroids[level]
        return out

    def reconstruction_losses(self, text, image=None, text_mask=None, image_mask=None) -> dict[str, torch.Tensor]:
        x, m = self._input(self._masks(text, image, text_mask, image_mask))
        recon = self._walk(x)[2]
        w = m.to(x.dtype)
        l_recon = ((recon - x).pow(2) * w).sum() / w.sum().clamp_min(1)
        zero = torch.zeros((), device=x.device, dtype=x.dtype)
        return {"total": l_recon, "recon": l_recon, "aux": zero}

    @torch.no_grad()
    def fit_nonparametric(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:
        x = torch.cat([self._input(b)[0] for b in self.chunks(inputs)])
        for level in range(self.centroids.shape[0]):
            centers, _ = kmeans(x, self.cfg.codebook_size, iters=self.cfg.kmeans_iters,
                                generator=generator, balanced=self.cfg.rq.balanced)
            self.centroids[level] = centers
            # Residuals against the nearest centre: what encode() will use for every item.
            x = x - centers[similarity(x, centers, spherical=False).argmax(1)]

    def position_latents(self, inputs: TokenizerInputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return []

    def init_codebooks(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:
        return None
