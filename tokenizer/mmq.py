"""MMQ: a mixture of quantisation experts over text and image embeddings (stage 1).

Read top to bottom: inputs -> experts -> gates -> parallel codebooks -> fused latent -> decoders.

* Shared experts read ``[x_t; x_v]``; text experts read ``x_t``; vision experts read ``x_v``
  (``x`` = standardised embedding). Each expert is an MLP to a latent of width ``latent_dim`` and
  owns one codebook, so it emits one token. Token order: shared, text, vision.
* Gates: ``g_t = softmax(MLP_t(x_t))`` over the text experts, ``g_v`` likewise; shared experts
  weigh 1. Fused latent ``z = sum z_s + sum g_t z_t + sum g_v z_v``; the quantised latent ``z_q``
  is the same weighted sum of the chosen codewords, and the decoder reads
  ``z + sg(z_q - z)`` (straight-through estimator).
* Quantisation is parallel (not residual): ``c_i = argmax_j cos(z_i, C_i[j])``; with the
  cosine rule the expert latents are unit vectors and so are the codewords.
* Loss: ``recon_weight * L_recon + aux_weight * L_aux + ortho_weight * L_ortho +
  codebook_weight * L_codebook``. ``L_aux``: a text decoder reconstructs ``x_t`` from the text
  experts' quantised latent and a vision decoder ``x_v`` from the vision experts'. ``L_ortho``:
  per expert group, ``||V V^T - I||_F^2`` with V the L2-normalised flattened expert weights
  (``ortho_target="weights"``, the paper's), or the experts' latent cross-correlation over the
  batch (``"outputs"``, ours: see :func:`latent_correlation_loss`).

Missing modality (our decision): the absent input is replaced by a learned placeholder vector
(so every expert, and hence every position of the SID, still yields a code; items lacking the
image all share the vision tokens the placeholder maps to), the missing modality's specific
experts are gated off in the fused latent (their gate mass is zero), and the absent part of the
input is left out of every reconstruction loss. A text-only run has no vision experts at all:
its ``n_vision`` experts read the text instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.base import Batch, SemanticTokenizer, masked_mse
from tokenizer.config import TokenizerConfig
from tokenizer.inputs import TokenizerInputs
from tokenizer.quantizer import Codebook, kmeans


class MLP(nn.Sequential):
    """Linear -> SiLU -> Linear."""

    def __init__(self, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out))


def orthogonality_loss(experts: list[nn.Module]) -> torch.Tensor:
    """``||V V^T - I||_F^2`` where row i of V is expert i's flattened, L2-normalised weights.

    Only weight matrices count (biases are offsets, not directions). Zero for fewer than two
    experts or mutually orthogonal weight vectors; positive as soon as two overlap.
    """
    if len(experts) < 2:
        ref = next(experts[0].parameters()) if experts else torch.zeros(())
        return torch.zeros((), device=ref.device, dtype=ref.dtype)
    rows = []
    for expert in experts:
        mats = [p.flatten() for name, p in expert.named_parameters() if p.ndim >= 2]
        rows.append(F.normalize(torch.cat(mats), dim=0))
    v = torch.stack(rows)
    gram = v @ v.T
    eye = torch.eye(len(experts), device=v.device, dtype=v.dtype)
    return (gram - eye).pow(2).sum()


def latent_correlation_loss(latents: list[torch.Tensor]) -> torch.Tensor:
    """Mean over expert pairs of ``||C_ij||_F^2 / d``, ``C_ij`` the batch cross-correlation of
    expert i's and expert j's latent dimensions: 0 when no dimension of one expert is linearly
    related to any of another's, 1 when two experts output the same latent."""
    if len(latents) < 2:
        return latents[0].new_zeros(()) if latents else torch.zeros(())
    z = torch.stack(latents)  # [E, B, d]
    z = (z - z.mean(1, keepdim=True)) / (z.std(1, keepdim=True) + 1e-5)
    e, b, d = z.shape
    corr = torch.einsum("ibx,jby->ijxy", z, z) / b  # [E, E, d, d]
    pair = corr.pow(2).sum((-1, -2)) / d
    off = ~torch.eye(e, dtype=torch.bool, device=z.device)
    return pair[off].mean()


def gate_balance_loss(gates: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``n * sum_i importance_i^2 - 1`` with importance_i the mean gate of expert i over the
    rows where the modality is present: 0 when the experts carry equal total weight, up to
    n - 1 when one expert takes it all. Without it one softmax gate wins early, the losing
    expert gets almost no reconstruction gradient and its codes stop carrying information."""
    n = gates.shape[1]
    rows = gates[mask]
    if n < 2 or rows.shape[0] == 0:
        return gates.new_zeros(())
    importance = rows.mean(0)
    return n * importance.pow(2).sum() - 1.0


class MMQTokenizer(SemanticTokenizer):
    """Multimodal mixture-of-quantisation-experts tokenizer (see module docstring)."""

    def __init__(self, cfg: TokenizerConfig, *, d_text: int, d_image: int) -> None:
        super().__init__(cfg, d_text=d_text, d_image=d_image)
        m = cfg.mmq
        n_shared = 0 if m.specific_only else m.n_shared
        # A catalogue without images gets the vision experts as extra text experts: the SID
        # keeps its length, and the codes keep enough capacity to tell near-duplicates apart
        # (2 shared + 2 text collided 28.6 % of amazon-beauty's items, 2 + 4 only 7.4 %).
        n_text = m.n_text + (m.n_vision if d_image == 0 else 0)
        n_vision = m.n_vision if d_image > 0 else 0
        if n_shared + n_text + n_vision == 0:
            from recdata.errors import DataError

            raise DataError("MMQ needs at least one expert (tokenizer.mmq.n_shared + n_text + n_vision = 0)")
        d, h = m.latent_dim, m.expert_hidden
        self.shared_experts = nn.ModuleList(MLP(d_text + d_image, h, d) for _ in range(n_shared))
        self.text_experts = nn.ModuleList(MLP(d_text, h, d) for _ in range(n_text))
        self.vision_experts = nn.ModuleList(MLP(d_image, h, d) for _ in range(n_vision))
        # A gate over a single expert would be a constant 1; skip the MLP then.
        self.text_gate = MLP(d_text, m.gate_hidden, n_text) if n_text > 1 else None
        self.vision_gate = MLP(d_image, m.gate_hidden, n_vision) if n_vision > 1 else None
        # Placeholders start at the training mean (zero after standardisation).
        self.text_placeholder = nn.Parameter(torch.zeros(d_text))
        self.image_placeholder = nn.Parameter(torch.zeros(d_image)) if d_image > 0 else None
        self.codebooks = nn.ModuleList(
            Codebook(cfg.codebook_size, d, metric=m.assignment, update=cfg.codebook_update,
                     decay=cfg.ema_decay, beta=cfg.beta)
            for _ in range(n_shared + n_text + n_vision)
        )
        self.decoder = MLP(d, m.decoder_hidden, d_text + d_image)
        self.text_aux = MLP(d, m.decoder_hidden, d_text) if m.aux_loss and n_text else None
        self.vision_aux = MLP(d, m.decoder_hidden, d_image) if m.aux_loss and n_vision else None
        self.n_shared, self.n_text, self.n_vision = n_shared, n_text, n_vision

    @property
    def position_names(self) -> list[str]:
        return ([f"shared{i}" for i in range(self.n_shared)]
                + [f"text{i}" for i in range(self.n_text)]
                + [f"vision{i}" for i in range(self.n_vision)])

    def codebook_modules(self) -> list[Codebook]:
        return list(self.codebooks)

    # ------------------------------------------------------------------ experts and gates
    def _expert_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        x_t, x_v, t_mask, v_mask = self.standardise(batch)
        x_t = torch.where(t_mask[:, None], x_t, self.text_placeholder.expand_as(x_t))
        if x_v is not None:
            x_v = torch.where(v_mask[:, None], x_v, self.image_placeholder.expand_as(x_v))
        return x_t, x_v, t_mask, v_mask

    def _latents(self, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
        """Per-expert latents (position order), per-expert fusion weights [B, E], and extras."""
        x_t, x_v, t_mask, v_mask = self._expert_inputs(batch)
        b = x_t.shape[0]
        x_s = x_t if x_v is None else torch.cat([x_t, x_v], dim=1)
        prep = self.codebooks[0].prepare
        latents = [prep(e(x_s)) for e in self.shared_experts]
        latents += [prep(e(x_t)) for e in self.text_experts]
        if x_v is not None:
            latents += [prep(e(x_v)) for e in self.vision_experts]
        weights = [torch.ones(b, self.n_shared, device=x_t.device, dtype=x_t.dtype)]
        g_t = torch.softmax(self.text_gate(x_t), -1) if self.text_gate is not None else \
            torch.ones(b, self.n_text, device=x_t.device, dtype=x_t.dtype)
        weights.append(g_t * t_mask[:, None].to(g_t.dtype))
        if self.n_vision:
            g_v = torch.softmax(self.vision_gate(x_v), -1) if self.vision_gate is not None else \
                torch.ones(b, self.n_vision, device=x_t.device, dtype=x_t.dtype)
            weights.append(g_v * v_mask[:, None].to(g_v.dtype))
        extras = {"x_t": x_t, "x_v": x_v, "t_mask": t_mask, "v_mask": v_mask}
        return latents, torch.cat(weights, dim=1), extras

    # ------------------------------------------------------------------ public API
    def encode(self, text, image=None, text_mask=None, image_mask=None) -> torch.Tensor:
        latents, _, _ = self._latents(self._masks(text, image, text_mask, image_mask))
        return torch.stack([cb.assign(z) for cb, z in zip(self.codebooks, latents)], dim=1)

    def scores(self, text, image=None, text_mask=None, image_mask=None) -> list[torch.Tensor]:
        latents, _, _ = self._latents(self._masks(text, image, text_mask, image_mask))
        return [cb.scores(z) for cb, z in zip(self.codebooks, latents)]

    def soft_codes(self, text, image=None, text_mask=None, image_mask=None, *, tau: float = 1.0) -> list[torch.Tensor]:
        latents, _, _ = self._latents(self._masks(text, image, text_mask, image_mask))
        return [cb.soft(z, tau) for cb, z in zip(self.codebooks, latents)]

    def reconstruction_losses(self, text, image=None, text_mask=None, image_mask=None) -> dict[str, torch.Tensor]:
        cfg, m = self.cfg, self.cfg.mmq
        latents, w, ex = self._latents(self._masks(text, image, text_mask, image_mask))
        quantised, cb_losses = [], []
        for cb, z in zip(self.codebooks, latents):
            if self.quantise:
                q, _, loss = cb(z)
            else:  # warm-up: plain autoencoder, codebooks untouched
                q, loss = z, z.new_zeros(())
            quantised.append(q)
            cb_losses.append(loss)
        z = torch.stack(latents, 1)  # [B, E, d]
        zq = torch.stack(quantised, 1)

        def fuse(lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
            ww = w[:, lo:hi, None]
            return (ww * z[:, lo:hi]).sum(1), (ww * zq[:, lo:hi]).sum(1)

        zf, zqf = fuse(0, z.shape[1])
        recon = self.decoder(zf + (zqf - zf).detach())
        x_t, x_v, t_mask, v_mask = ex["x_t"], ex["x_v"], ex["t_mask"], ex["v_mask"]
        l_recon = masked_mse(recon[:, : self.d_text], x_t, t_mask)
        if x_v is not None:
            # One MSE over the concatenation: weigh each present element equally.
            n_t = t_mask.sum() * self.d_text
            n_v = v_mask.sum() * self.d_image
            l_v = masked_mse(recon[:, self.d_text:], x_v, v_mask)
            l_recon = (l_recon * n_t + l_v * n_v) / (n_t + n_v).clamp_min(1)

        zero = torch.zeros((), device=zf.device, dtype=zf.dtype)
        l_aux = zero
        lo = self.n_shared
        if self.text_aux is not None:
            zt, zqt = fuse(lo, lo + self.n_text)
            l_aux = l_aux + masked_mse(self.text_aux(zt + (zqt - zt).detach()), x_t, t_mask)
        lo += self.n_text
        if self.vision_aux is not None:
            zv, zqv = fuse(lo, lo + self.n_vision)
            l_aux = l_aux + masked_mse(self.vision_aux(zv + (zqv - zv).detach()), x_v, v_mask)

        l_ortho = zero
        if m.ortho_loss and m.ortho_target == "outputs":
            l_ortho = latent_correlation_loss(latents)
        elif m.ortho_loss:
            for group in (self.shared_experts, self.text_experts, self.vision_experts):
                l_ortho = l_ortho + orthogonality_loss(list(group))
        l_cb = torch.stack(cb_losses).sum()
        l_balance = zero
        if m.gate_balance_weight > 0:
            lo = self.n_shared
            l_balance = gate_balance_loss(w[:, lo: lo + self.n_text], t_mask)
            if self.n_vision:
                l_balance = l_balance + gate_balance_loss(w[:, lo + self.n_text:], v_mask)
        total = (m.recon_weight * l_recon + m.aux_weight * l_aux
                 + m.ortho_weight * l_ortho + cfg.codebook_weight * l_cb
                 + m.gate_balance_weight * l_balance)
        return {"total": total, "recon": l_recon, "aux": l_aux, "ortho": l_ortho, "codebook": l_cb,
                "gate_balance": l_balance}

    # ------------------------------------------------------------------ codebook learning
    @torch.no_grad()
    def gate_stats(self, inputs: TokenizerInputs) -> dict:
        """Per modality with two or more gated experts: each expert's mean gate over the items
        that have the modality (``importance``, 1/n each when balanced), the share of items
        putting more than 0.9 on a single expert (``hard_share``), and the mean gate entropy
        in nats (ln n when uniform)."""
        was_training = self.training
        self.eval()
        weights = torch.cat([self._latents(b)[1] for b in self.chunks(inputs)])
        self.train(was_training)
        out = {}
        lo = self.n_shared
        for name, n, mask in (("text", self.n_text, inputs.text_mask),
                              ("vision", self.n_vision, inputs.image_mask)):
            if n > 1:
                rows = weights[:, lo: lo + n]
                rows = rows[mask] if mask is not None else rows
                out[name] = {
                    "importance": [round(float(v), 4) for v in rows.mean(0)],
                    "hard_share": float((rows.max(1).values > 0.9).float().mean()),
                    "entropy": float(-(rows * rows.clamp_min(1e-12).log()).sum(1).mean()),
                }
            lo += n
        return out

    @torch.no_grad()
    def position_latents(self, inputs: TokenizerInputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        was_training = self.training
        self.eval()
        parts = [self._latents(b)[0] for b in self.chunks(inputs)]
        self.train(was_training)
        n = inputs.n_items
        everyone = torch.ones(n, dtype=torch.bool, device=inputs.text.device)
        v_mask = inputs.image_mask if inputs.image_mask is not None else everyone
        valid = [everyone] * self.n_shared + [inputs.text_mask] * self.n_text + [v_mask] * self.n_vision
        return [(torch.cat([p[i] for p in parts]), valid[i]) for i in range(self.n_positions)]

    @torch.no_grad()
    def init_codebooks(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:
        for cb, (z, valid) in zip(self.codebooks, self.position_latents(inputs)):
            rows = z[valid]
            if self.cfg.kmeans_init:
                centers, _ = kmeans(rows, cb.size, iters=self.cfg.kmeans_iters, generator=generator,
                                    spherical=cb.spherical)
            else:
                pick = torch.randint(0, rows.shape[0], (cb.size,), generator=generator).to(rows.device)
                centers = rows[pick]
            cb.set_codewords(torch.arange(cb.size, device=rows.device), centers,
                             count=max(1.0, self.cfg.batch_size / cb.size))
