"""RQ-VAE as in TIGER: MLP encoder -> residual quantisation over ``rq.levels`` codebooks ->
MLP decoder, trained with ``L_recon + sum_l (||sg(r_l) - c_l||^2 + beta ||r_l - sg(c_l)||^2)``.

Input (``cfg.rq.input``): the standardised text embedding, or ``[text; image]`` where a
missing modality is the training mean (zero after standardisation) and is left out of the
reconstruction loss. Assignment is Euclidean (residuals do not compose under cosine).
"""

from __future__ import annotations

import torch
from torch import nn

from tokenizer.base import Batch, SemanticTokenizer
from tokenizer.config import TokenizerConfig
from tokenizer.inputs import TokenizerInputs
from tokenizer.quantizer import Codebook, init_residual_codebooks, residual_quantise, residual_soft_codes


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAETokenizer(SemanticTokenizer):
    """TIGER's residual-quantised autoencoder."""

    def __init__(self, cfg: TokenizerConfig, *, d_text: int, d_image: int) -> None:
        super().__init__(cfg, d_text=d_text, d_image=d_image)
        self.use_image = cfg.rq.input == "concat" and d_image > 0
        self.d_in = d_text + (d_image if self.use_image else 0)
        widths = [self.d_in, *cfg.rq.hidden, cfg.rq.latent_dim]
        self.encoder = _mlp(widths)
        self.decoder = _mlp(widths[::-1])
        # TIGER learns codewords by gradient (update="loss"); the cfg switch is for MMQ.
        self.codebooks = nn.ModuleList(
            Codebook(cfg.codebook_size, cfg.rq.latent_dim, metric="l2", update="loss", beta=cfg.beta)
            for _ in range(cfg.rq.levels)
        )

    def learning_rate(self) -> float:
        return self.cfg.rq.lr

    @property
    def position_names(self) -> list[str]:
        return [f"level{i}" for i in range(self.cfg.rq.levels)]

    def codebook_modules(self) -> list[Codebook]:
        return list(self.codebooks)

    def _input(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised encoder input and the per-element presence mask [B, d_in]."""
        x_t, x_v, t_mask, v_mask = self.standardise(batch)
        m_t = t_mask[:, None].expand_as(x_t)
        if not self.use_image:
            return x_t, m_t
        return torch.cat([x_t, x_v], 1), torch.cat([m_t, v_mask[:, None].expand_as(x_v)], 1)

    def _residuals(self, z: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Residual quantisation: (residual per level, codes per level, z_q, codebook loss)."""
        return residual_quantise(self.codebooks, z)

    def encode(self, text, image=None, text_mask=None, image_mask=None) -> torch.Tensor:
        x, _ = self._input(self._masks(text, image, text_mask, image_mask))
        return torch.stack(self._residuals(self.encoder(x))[1], dim=1)

    def scores(self, text, image=None, text_mask=None, image_mask=None) -> list[torch.Tensor]:
        x, _ = self._input(self._masks(text, image, text_mask, image_mask))
        residuals, _, _, _ = self._residuals(self.encoder(x))
        return [cb.scores(r) for cb, r in zip(self.codebooks, residuals)]

    def soft_codes(self, text, image=None, text_mask=None, image_mask=None, *, tau: float = 1.0) -> list[torch.Tensor]:
        x, _ = self._input(self._masks(text, image, text_mask, image_mask))
        return residual_soft_codes(self.codebooks, self.encoder(x), tau)

    def reconstruction_losses(self, text, image=None, text_mask=None, image_mask=None) -> dict[str, torch.Tensor]:
        x, m = self._input(self._masks(text, image, text_mask, image_mask))
        z = self.encoder(x)
        if self.quantise:
            _, _, zq, l_cb = self._residuals(z)
        else:  # warm-up: plain autoencoder, codebooks untouched
            zq, l_cb = z, z.new_zeros(())
        recon = self.decoder(z + (zq - z).detach())
        w = m.to(x.dtype)
        l_recon = ((recon - x).pow(2) * w).sum() / w.sum().clamp_min(1)
        zero = torch.zeros((), device=x.device, dtype=x.dtype)
        total = l_recon + self.cfg.codebook_weight * l_cb
        return {"total": total, "recon": l_recon, "aux": zero, "codebook": l_cb}

    @torch.no_grad()
    def position_latents(self, inputs: TokenizerInputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        was_training = self.training
        self.eval()
        parts = [self._residuals(self.encoder(self._input(b)[0]))[0] for b in self.chunks(inputs)]
        self.train(was_training)
        valid = torch.ones(inputs.n_items, dtype=torch.bool, device=inputs.text.device)
        return [(torch.cat([p[i] for p in parts]), valid) for i in range(self.n_positions)]

    def init_codebooks(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:
        init_residual_codebooks(self, inputs, generator)

