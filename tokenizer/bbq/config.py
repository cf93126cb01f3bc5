"""Configuration of the BBQ (behaviour-bind quantisation) tokenizer.

Kept in its own module with no torch import so that ``tokenizer/config.py`` can nest it
(``TokenizerConfig.bbq``) without an import cycle. Fields shared with the other tokenizers
(``codebook_size``, ``beta``, ``codebook_update``, ``ema_decay``, ``kmeans_*``, ``dead_code_reset``,
``reset_stop_fraction``, ``lr``, ``weight_decay``, ``grad_clip``, ``collision_*``) are read from
the enclosing :class:`tokenizer.config.TokenizerConfig`; only BBQ-specific knobs live here.

The published BBQRec text is not available; every default below is our choice, made on
MovieLens-100K with the measurements printed by ``experiments/bbqrec.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from recdata.errors import DataError
from tokenizer.section import ConfigSection


@dataclass
class BBQConfig(ConfigSection):
    """Every BBQ-specific knob (see ``tokenizer/bbq/model.py`` for the model they shape)."""

    SECTION = "bbq"

    # ----------------------------------------------------------------- architecture
    levels: int = 3
    """Residual levels of the shared behaviour codebook (one SID token each, before the
    collision token)."""
    latent_dim: int = 64
    """Width of the behaviour-aligned and modality-specific latents."""
    hidden: int = 128
    """Hidden width of every encoder MLP (input -> hidden -> latent)."""
    decoder_hidden: int = 256
    """Hidden width of the per-modality decoders reconstructing the standardised embedding."""
    club_hidden: int = 128
    """Hidden width of the CLUB variational network q(s | b) (mean and log-variance heads)."""
    id_vector: bool = True
    """Add a learnable per-item vector to the quantised behaviour latent in the contrastive
    loss (it absorbs item-specific behaviour the shared codes should not memorise)."""
    id_dropout: float = 0.5
    """Probability of dropping an item's ID vector in a training step, so the codes alone must
    also explain behaviour (0 = always add it)."""
    seq_window: int = 10
    """Most recent history items pooled into the sequence representation."""

    # ----------------------------------------------------------------- losses
    temperature: float = 0.1
    """Temperature of the sequence-to-item InfoNCE over cosine similarities."""
    contrastive_weight: float = 1.0
    """Weight of the sequence-to-item contrastive loss (binds the codes to behaviour)."""
    recon_weight: float = 1.0
    """Weight of the per-modality reconstruction from [quantised behaviour; specific] latents."""
    mi_weight: float = 0.1
    """Weight of the CLUB mutual-information upper bound between each modality's behaviour and
    specific latents (the term the encoders minimise)."""

    # ----------------------------------------------------------------- optimisation
    steps: int = 800
    """Optimisation steps (one batch of history -> next-item pairs plus random items each)."""
    warmup_steps: int = 150
    """Initial steps trained on the continuous behaviour latent; the codebooks are then
    initialised by k-means on the warmed-up latents and quantisation switches on."""
    pair_batch: int = 256
    """History -> next-item pairs (from TRAINING sequences only) per step."""
    item_batch: int = 128
    """Extra catalogue items drawn uniformly per step, so items absent from training histories
    (cold items) still train the reconstruction and codebooks and act as negatives."""
    club_lr: float = 1e-3
    """Adam learning rate of the CLUB estimator (trained by likelihood on detached latents)."""
    reset_every: int = 100
    """Steps between dead-code resets (and utilisation checks) once quantisation is on."""

    def validate(self) -> "BBQConfig":
        """Raise a one-line DataError for an unusable configuration; return self."""
        for name in ("levels", "latent_dim", "hidden", "decoder_hidden", "club_hidden", "seq_window",
                     "steps", "pair_batch", "item_batch", "reset_every"):
            if getattr(self, name) < 1:
                raise DataError(f"tokenizer.bbq.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps < self.steps:
            raise DataError(f"tokenizer.bbq.warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise DataError(f"tokenizer.bbq.id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.temperature <= 0 or self.club_lr <= 0:
            raise DataError("tokenizer.bbq.temperature and club_lr must be > 0")
        for name in ("contrastive_weight", "recon_weight", "mi_weight"):
            if getattr(self, name) < 0:
                raise DataError(f"tokenizer.bbq.{name} must be >= 0")
        return self
