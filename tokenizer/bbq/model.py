"""BBQ: behaviour-bind quantisation (the tokenizer half of BBQRec, method.md section 7).

Read top to bottom: inputs -> per-modality encoders -> fused behaviour latent -> shared residual
codebook -> (a) decoders, (b) item representation for the sequence-to-item contrastive loss.

* Per modality m (text, and image when the run has images) two encoders read the standardised
  embedding ``x_m``: a behaviour-aligned encoder ``b_m = B_m(x_m)`` and a modality-specific
  encoder ``s_m = S_m(x_m)``; all are MLPs to ``latent_dim``.
* Disentanglement: a CLUB mutual-information upper bound ``I_CLUB(b_m; s_m)`` per modality
  (:mod:`tokenizer.bbq.club`) is minimised by the encoders, so the specific latent keeps what the
  behaviour latent does not need.
* Behaviour-dominant latent ``h`` = mean of the present modalities' ``b_m`` (a learned vector for
  an item with no modality at all). It is quantised by ONE residual codebook stack shared by all
  modalities (``levels`` levels, Euclidean assignment because residuals do not compose under
  cosine), giving the SID tokens ``level0 .. level{L-1}``; the collision token comes last. One
  shared quantiser instead of one codebook per modality or expert is the point of the method:
  the abstract blames "fragmented quantisation" for semantic spaces misaligned with behaviour.
* Reconstruction: decoder ``D_m([z_st ; s_m]) -> x_m`` with ``z_st = h + sg(z_q - h)`` (straight
  through), so codes plus specific latents keep the modality's content.
* Behaviour binding: item representation ``r_i = z_st(i) + e_i`` with a learnable item-ID vector
  ``e_i`` (dropped per item with probability ``id_dropout`` in training, so the codes alone must
  also carry behaviour); a user's last ``seq_window`` training items are pooled (learned recency
  weights + a linear map) into ``u``, and an InfoNCE loss over cosine similarities scores the
  true next item against every other item of the step. Histories come from TRAINING sequences
  (``s[:-2]``) only; see :mod:`tokenizer.bbq.train`.

Our decisions where the BBQRec text is unavailable: the fusion by mean, the residual (not
parallel) codebook, the warm-up on continuous latents before k-means initialisation, the ID-vector
dropout, the pooling sequence encoder and every loss weight (``tokenizer/bbq/config.py``).

The stage-2 API of :class:`tokenizer.base.SemanticTokenizer` is implemented (``soft_codes``,
``reconstruction_losses``), so soft-indexing fine-tuning can also be applied to BBQ codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.base import Batch, SemanticTokenizer, masked_mse
from tokenizer.bbq.club import CLUB
from tokenizer.bbq.config import BBQConfig
from tokenizer.config import TokenizerConfig
from tokenizer.inputs import TokenizerInputs
from tokenizer.mmq import MLP
from tokenizer.quantizer import Codebook, init_residual_codebooks, residual_quantise, residual_soft_codes

__all__ = ["BBQConfig", "BBQTokenizer"]


def bbq_config_of(cfg: TokenizerConfig) -> BBQConfig:
    """The BBQ section of a tokenizer config (defaults while the config has none)."""
    return BBQConfig.coerce(getattr(cfg, "bbq", None)).validate()


class BBQTokenizer(SemanticTokenizer):
    """Behaviour-bind quantisation tokenizer (see module docstring).

    Training needs user histories, so it is fitted by :func:`tokenizer.bbq.train.fit_bbq` (the
    ``bbq`` tokenize stage is :func:`tokenizer.bbq.stage.run`), not by the reconstruction-only
    loop of :mod:`tokenizer.train`.
    """

    needs_histories = True

    def __init__(self, cfg: TokenizerConfig, *, d_text: int, d_image: int, bbq: BBQConfig | None = None) -> None:
        super().__init__(cfg, d_text=d_text, d_image=d_image)
        self.bbq = bbq.validate() if bbq is not None else bbq_config_of(cfg)
        b = self.bbq
        d = b.latent_dim
        self.modalities = ["text"] + (["image"] if d_image > 0 else [])
        dims = {"text": d_text, "image": d_image}
        self.behaviour_encoders = nn.ModuleDict({m: MLP(dims[m], b.hidden, d) for m in self.modalities})
        self.specific_encoders = nn.ModuleDict({m: MLP(dims[m], b.hidden, d) for m in self.modalities})
        self.decoders = nn.ModuleDict({m: MLP(2 * d, b.decoder_hidden, dims[m]) for m in self.modalities})
        self.clubs = nn.ModuleDict({m: CLUB(d, d, b.club_hidden) for m in self.modalities})
        self.empty_latent = nn.Parameter(torch.zeros(d))
        self.codebooks = nn.ModuleList(
            Codebook(cfg.codebook_size, d, metric="l2", update=cfg.codebook_update,
                     decay=cfg.ema_decay, beta=cfg.beta)
            for _ in range(b.levels)
        )
        # Sized by bind_items() once the catalogue is known (and on loading a state dict).
        self.item_vectors = nn.Parameter(torch.zeros(0, d))
        self.recency_logits = nn.Parameter(torch.zeros(b.seq_window))
        self.sequence_proj = nn.Linear(d, d)
        # Off during warm-up: the behaviour latent is used unquantised until k-means init.
        self.quantise_active = True

    # ------------------------------------------------------------------ bookkeeping
    @property
    def position_names(self) -> list[str]:
        return [f"level{i}" for i in range(self.bbq.levels)]

    def codebook_modules(self) -> list[Codebook]:
        return list(self.codebooks)

    def estimator_parameters(self) -> list[nn.Parameter]:
        """The CLUB estimators' weights (their own optimiser; the main loss must not step them)."""
        return list(self.clubs.parameters())

    def main_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.estimator_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in skip]

    def bind_items(self, n_items: int) -> None:
        """Create the item-ID vectors (zeros, so they start neutral) for ``n_items`` items."""
        d = self.bbq.latent_dim
        device = self.empty_latent.device
        self.item_vectors = nn.Parameter(torch.zeros(n_items, d, device=device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # The ID table's size is the catalogue's, unknown at construction: adopt the stored one.
        key = prefix + "item_vectors"
        if key in state_dict and state_dict[key].shape != self.item_vectors.shape:
            self.bind_items(int(state_dict[key].shape[0]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ encoders
    def _modal_inputs(self, batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        x_t, x_v, t_mask, v_mask = self.standardise(batch)
        out = {"text": (x_t, t_mask)}
        if "image" in self.modalities:
            out["image"] = (x_v, v_mask)
        return out

    def _encode(self, batch: Batch) -> tuple[torch.Tensor, dict, dict, dict]:
        """(fused behaviour latent h [B, d], {m: b_m}, {m: s_m}, {m: (x_m, mask_m)})."""
        xs = self._modal_inputs(batch)
        b = {m: self.behaviour_encoders[m](x) for m, (x, _) in xs.items()}
        s = {m: self.specific_encoders[m](x) for m, (x, _) in xs.items()}
        weights = torch.stack([xs[m][1] for m in self.modalities], 1).to(self.empty_latent.dtype)
        stacked = torch.stack([b[m] for m in self.modalities], 1)
        present = weights.sum(1, keepdim=True)
        h = (weights[:, :, None] * stacked).sum(1) / present.clamp_min(1.0)
        h = torch.where(present > 0, h, self.empty_latent.expand_as(h))
        return h, b, s, xs

    def _residuals(self, h: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Residual quantisation: (residual per level, codes per level, z_q, codebook loss)."""
        return residual_quantise(self.codebooks, h)

    def _quantised(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(straight-through latent z_st, codebook loss); identity during warm-up."""
        if not self.quantise_active:
            return h, torch.zeros((), device=h.device, dtype=h.dtype)
        _, _, zq, l_cb = self._residuals(h)
        return h + (zq - h).detach(), l_cb

    def _reconstruction(self, z_st: torch.Tensor, s: dict, xs: dict) -> torch.Tensor:
        """Mean over modalities of the masked MSE of D_m([z_st; s_m]) against x_m."""
        terms = [masked_mse(self.decoders[m](torch.cat([z_st, s[m]], 1)), x, mask) for m, (x, mask) in xs.items()]
        return torch.stack(terms).mean()

    def _mi(self, b: dict, s: dict, xs: dict, *, detach: bool) -> torch.Tensor:
        """Sum over modalities of the CLUB estimate (``detach=False``) or of the estimator's
        log-likelihood on detached latents (``detach=True``), over rows with the modality."""
        total = torch.zeros((), device=self.empty_latent.device)
        for m, (_, mask) in xs.items():
            # Row-standardised latents: the bound cannot be gamed by rescaling them (unbounded
            # latents let the encoders run the estimate to large negative values, whose
            # gradients then swamp every other loss).
            bm = F.layer_norm(b[m][mask], (b[m].shape[1],))
            sm = F.layer_norm(s[m][mask], (s[m].shape[1],))
            if bm.shape[0] < 2:
                continue
            if detach:
                total = total + self.clubs[m].log_likelihood(bm.detach(), sm.detach())
            else:
                # Below zero the estimator is merely mis-fitted; there is nothing to minimise.
                total = total + self.clubs[m](bm, sm).clamp_min(0.0)
        return total

    # ------------------------------------------------------------------ training step pieces
    def item_forward(self, batch: Batch, item_idx: torch.Tensor, id_keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Everything one training step needs for a set of (distinct) items.

        Returns ``rep`` [B, d] (item representation for the contrastive loss), ``recon``,
        ``mi`` (CLUB estimate, for the encoders), ``club_ll`` (estimator log-likelihood on
        detached latents, for the estimator) and ``codebook``.
        """
        h, b, s, xs = self._encode(batch)
        z_st, l_cb = self._quantised(h)
        rep = z_st
        if self.bbq.id_vector and self.item_vectors.shape[0] > 0:
            vec = self.item_vectors[item_idx]
            if id_keep is not None:
                vec = vec * id_keep[:, None].to(vec.dtype)
            rep = rep + vec
        return {
            "rep": rep,
            "recon": self._reconstruction(z_st, s, xs),
            "mi": self._mi(b, s, xs, detach=False),
            "club_ll": self._mi(b, s, xs, detach=True),
            "codebook": l_cb,
        }

    def sequence_representation(self, history: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Pool item representations of right-aligned histories [B, W, d] (valid [B, W] bool;
        the last column is the most recent item) into user vectors [B, d]."""
        w = history.shape[1]
        logits = self.recency_logits[-w:].expand(history.shape[0], w)
        logits = logits.masked_fill(~valid, float("-inf"))
        # A history with no valid item (cannot happen for pairs, kept safe) pools to zeros.
        weights = torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)
        return self.sequence_proj((weights[:, :, None] * history).sum(1))

    def contrastive_loss(self, rep: torch.Tensor, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sequence-to-item InfoNCE. ``history`` [B, W] and ``target`` [B] index rows of ``rep``
        (-1 = padding); every row of ``rep`` is a candidate, the target the positive."""
        valid = history >= 0
        hist = rep[history.clamp_min(0)]
        user = F.normalize(self.sequence_representation(hist, valid), dim=-1)
        logits = user @ F.normalize(rep, dim=-1).T / self.bbq.temperature
        return F.cross_entropy(logits, target)

    # ------------------------------------------------------------------ SemanticTokenizer API
    def encode(self, text, image=None, text_mask=None, image_mask=None) -> torch.Tensor:
        h, _, _, _ = self._encode(self._masks(text, image, text_mask, image_mask))
        return torch.stack(self._residuals(h)[1], dim=1)

    def scores(self, text, image=None, text_mask=None, image_mask=None) -> list[torch.Tensor]:
        h, _, _, _ = self._encode(self._masks(text, image, text_mask, image_mask))
        residuals = self._residuals(h)[0]
        return [cb.scores(r) for cb, r in zip(self.codebooks, residuals)]

    def soft_codes(self, text, image=None, text_mask=None, image_mask=None, *, tau: float = 1.0) -> list[torch.Tensor]:
        r, _, _, _ = self._encode(self._masks(text, image, text_mask, image_mask))
        return residual_soft_codes(self.codebooks, r, tau)

    def reconstruction_losses(self, text, image=None, text_mask=None, image_mask=None) -> dict[str, torch.Tensor]:
        """Content-side terms only (no histories here): ``recon``, ``mi`` (CLUB bound),
        ``codebook`` and ``total`` (their weighted sum); ``aux`` is 0 (BBQ has no auxiliary
        decoders: each modality's decoder is its main reconstruction)."""
        h, b, s, xs = self._encode(self._masks(text, image, text_mask, image_mask))
        z_st, l_cb = self._quantised(h)
        recon = self._reconstruction(z_st, s, xs)
        mi = self._mi(b, s, xs, detach=False)
        total = self.bbq.recon_weight * recon + self.bbq.mi_weight * mi + self.cfg.codebook_weight * l_cb
        return {"total": total, "recon": recon, "aux": torch.zeros_like(recon), "mi": mi, "codebook": l_cb}

    @torch.no_grad()
    def position_latents(self, inputs: TokenizerInputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        was_training = self.training
        self.eval()
        parts = [self._residuals(self._encode(batch)[0])[0] for batch in self.chunks(inputs)]
        self.train(was_training)
        valid = torch.ones(inputs.n_items, dtype=torch.bool, device=inputs.text.device)
        return [(torch.cat([p[i] for p in parts]), valid) for i in range(self.n_positions)]

    def init_codebooks(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:
        # EMA counts start at the expected hits per code of one pair batch.
        count = max(1.0, self.bbq.pair_batch / self.codebooks[0].size)
        init_residual_codebooks(self, inputs, generator, count=count)

    def fit_nonparametric(self, inputs: TokenizerInputs, generator: torch.Generator) -> None:
        raise NotImplementedError("BBQ is trained with user histories: use tokenizer.bbq.train.fit_bbq")
