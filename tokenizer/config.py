"""Configuration of the tokenizer stage (stage 1 of MMQ and its baselines).

:class:`TokenizerConfig` holds the fields several tokenizers read (codebook size, codebook
learning, optimisation, collisions, monitoring) and one nested section per tokenizer family
for the rest: ``mmq`` (:class:`~tokenizer.mmq_config.MMQConfig`), ``rq`` for RQ-VAE and
RQ-k-means (:class:`~tokenizer.rq_config.RQConfig`) and ``bbq``
(:class:`~tokenizer.bbq.config.BBQConfig`). Only the section of the chosen ``name`` is read and
validated, so a variant that switches ``name`` may keep the main run's other sections. YAML::

    tokenizer:
      name: mmq
      codebook_size: 256
      epochs: 30
      mmq: {n_shared: 2, n_text: 4, n_vision: 0}
      rq: {levels: 3}

The flat keys of earlier versions (``n_shared``, ``rqvae_levels``, ...; see :data:`LEGACY_KEYS`)
are still read, from YAML and from ``tokenizer/config.json`` of existing run directories: they
move into their section with a warning naming the new spelling.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from recdata.errors import DataError
from recdata.overrides import move_flat_keys
from tokenizer.bbq.config import BBQConfig
from tokenizer.mmq_config import MMQConfig
from tokenizer.rq_config import RQConfig

log = logging.getLogger(__name__)

TOKENIZER_SECTIONS: dict[str, str] = {"mmq": "mmq", "rqvae": "rq", "rqkmeans": "rq", "bbq": "bbq"}
"""Tokenizer name -> the nested section holding its own knobs (the specs of
:data:`tokenizer.registry.TOKENIZERS` name the same section classes)."""

TOKENIZER_NAMES = tuple(TOKENIZER_SECTIONS)

SECTION_CLASSES: dict[str, type] = {"mmq": MMQConfig, "rq": RQConfig, "bbq": BBQConfig}
"""Nested section field of :class:`TokenizerConfig` -> its dataclass."""

_LEGACY_MMQ = ("latent_dim", "expert_hidden", "decoder_hidden", "gate_hidden", "n_shared", "n_text",
               "n_vision", "specific_only", "assignment", "recon_weight", "aux_weight", "ortho_weight",
               "ortho_target", "gate_balance_weight", "aux_loss", "ortho_loss")
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    **{key: ("mmq", key) for key in _LEGACY_MMQ},
    "rqvae_levels": ("rq", "levels"),
    "rqvae_input": ("rq", "input"),
    "rqvae_hidden": ("rq", "hidden"),
    "rqvae_latent_dim": ("rq", "latent_dim"),
    "rqvae_lr": ("rq", "lr"),
    "rqkmeans_balanced": ("rq", "balanced"),
}
"""Flat key of earlier versions -> (section, key in it)."""


@dataclass
class TokenizerConfig:
    """Every knob of the tokenizer stage: the shared fields, and one section per tokenizer family.

    Defaults follow the MMQ paper where it states a value (2 + 2 + 2 experts, loss weights
    12 / 10, cosine assignment) and TIGER for the RQ-VAE baseline (3 levels x 256,
    beta = 0.25, k-means initialisation); the rest are our choices, documented per field.
    A field read by some tokenizers only says which.
    """

    name: str = "mmq"
    """Which tokenizer: "mmq" (multimodal mixture of quantisation experts), "rqvae" (TIGER's
    residual-quantised VAE), "rqkmeans" (residual k-means, no gradient training) or "bbq"
    (BBQRec's behaviour-bind quantisation, which also reads training histories). Its own knobs
    are in the section :data:`TOKENIZER_SECTIONS` names: ``mmq``, ``rq`` or ``bbq``."""

    codebook_size: int = 256
    """Entries per codebook (one codebook per MMQ expert, or per RQ level)."""

    # ----------------------------------------------------------------- codebook learning
    codebook_update: str = "ema"
    """How codewords learn: "ema" (exponential moving average of the assigned latents) or
    "loss" (VQ-VAE codebook loss with gradient); mmq and bbq. RQ-VAE always uses "loss" as in
    TIGER."""
    ema_decay: float = 0.95
    """Decay of the EMA codebook statistics (codebook_update="ema"; mmq, bbq)."""
    beta: float = 0.25
    """Commitment weight: beta * ||z - sg(c)||^2 pulls encoder outputs towards their codeword
    (mmq, rqvae, bbq)."""
    codebook_weight: float = 1.0
    """Weight of the summed codebook + commitment terms in the total loss (mmq, rqvae, bbq)."""
    kmeans_init: bool = True
    """Initialise every codebook with k-means over the first latents (else random latents;
    mmq, rqvae, bbq)."""
    kmeans_iters: int = 25
    """Lloyd iterations of every k-means run (initialisation and the rqkmeans tokenizer)."""
    warmup_epochs: int = 5
    """Epochs (counted in ``epochs``) of plain autoencoding before the codebooks are
    k-means-initialised on the learned latents; latents of an untrained encoder move too much
    in the first updates for their clusters to survive (mmq, rqvae; bbq: ``bbq.warmup_steps``)."""
    dead_code_reset: bool = True
    """After an epoch, move codewords that no item chose onto latents of items drawn from
    crowded codes (keeps utilisation high); skipped in the last ``reset_stop_fraction`` of the
    epochs, then done once more after training (counted in metrics as final_codes_reset); bbq
    resets every ``bbq.reset_every`` steps instead."""
    reset_stop_fraction: float = 0.2
    """Fraction of the final epochs without dead-code resets, so the last resets settle."""

    # ----------------------------------------------------------------- optimisation
    epochs: int = 40
    """Training epochs over the catalogue (mmq, rqvae)."""
    batch_size: int = 256
    """Items per optimisation step (mmq, rqvae; bbq: ``bbq.pair_batch`` and ``bbq.item_batch``)."""
    lr: float = 3e-3
    """AdamW learning rate of mmq and bbq (RQ-VAE: ``rq.lr``)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""

    # ----------------------------------------------------------------- collisions
    collision_strategy: str = "append"
    """How items sharing all raw tokens become unique: "append" (TIGER: the last token numbers
    the items of a group 0, 1, 2, ...) or "reassign" (move colliding items to the next-nearest
    code of the position where that costs least, then append for whatever remains)."""
    collision_min_size: int = 1
    """Minimum vocabulary of the collision position; raise it to keep the retriever's vocabulary
    fixed across re-assignments (the size grows beyond it when a group is larger)."""

    fit_items: str = "all"
    """Which items the tokenizer is fitted on: "all" (every catalogue item's content, as a
    catalogue is usually known up front) or "warm" (only items seen in training interactions).
    With "warm", items never seen in training — the cold-start protocol's held-out items —
    get their IDs from a tokenizer that never saw them, exactly as ``mmqrec add-items`` gives
    IDs to new items after training. Read by the content tokenizers (mmq, rqvae, rqkmeans); bbq
    fits on every item, with the histories of the training split."""

    modalities: list[str] = field(default_factory=lambda: ["text", "image"])
    """Which cached embeddings the tokenizer reads: ["text", "image"] (every one the run has),
    ["text"] or ["image"]. With one modality every expert reads it (MMQ's specific experts of
    the other modality included), so the ID keeps its length; for ablations. The retriever's
    content prior and the baselines still read every modality the run has."""

    # ----------------------------------------------------------------- monitoring
    collapse_threshold: float = 0.05
    """A codebook whose utilisation (share of codes used) falls below this has collapsed
    (mmq, rqvae, as are the next two)."""
    stop_on_collapse: bool = False
    """On collapse: False logs a warning each epoch; True also stops training early."""
    eval_every: int = 1
    """Epochs between full-catalogue utilisation checks (live utilisation, resets, collapse)."""

    # ----------------------------------------------------------------- per-tokenizer sections
    mmq: MMQConfig = field(default_factory=MMQConfig)
    """MMQ's own knobs (tokenizer/mmq_config.py); read only when name = "mmq"."""
    rq: RQConfig = field(default_factory=RQConfig)
    """RQ-VAE's and RQ-k-means' own knobs (tokenizer/rq_config.py); read only when name =
    "rqvae" or "rqkmeans"."""
    bbq: BBQConfig = field(default_factory=BBQConfig)
    """BBQ's own knobs (tokenizer/bbq/config.py); read only when name = "bbq"."""

    # ----------------------------------------------------------------- helpers
    def section_config(self) -> Any:
        """The section of the chosen tokenizer (``self.mmq``, ``self.rq`` or ``self.bbq``)."""
        return getattr(self, TOKENIZER_SECTIONS[self.name])

    def validate(self) -> "TokenizerConfig":
        """Raise a one-line DataError for an unusable configuration; return self. Sections given
        as mappings become dataclasses; only the chosen tokenizer's section is validated."""
        if self.name not in TOKENIZER_NAMES:
            raise DataError(f"tokenizer.name must be one of {TOKENIZER_NAMES}, got {self.name!r}")
        if self.codebook_size < 2:
            raise DataError(f"tokenizer.codebook_size must be >= 2, got {self.codebook_size}")
        if self.codebook_update not in ("ema", "loss"):
            raise DataError(
                f"tokenizer.codebook_update must be 'ema' or 'loss', got {self.codebook_update!r}"
            )
        if (not isinstance(self.modalities, list) or not self.modalities
                or not set(self.modalities) <= {"text", "image"}
                or len(set(self.modalities)) != len(self.modalities)):
            raise DataError("tokenizer.modalities must be a non-empty list of 'text' and "
                            f"'image', got {self.modalities!r}")
        if self.fit_items not in ("all", "warm"):
            raise DataError(f"tokenizer.fit_items must be 'all' or 'warm', got {self.fit_items!r}")
        if self.collision_strategy not in ("append", "reassign"):
            raise DataError(
                "tokenizer.collision_strategy must be 'append' or 'reassign', "
                f"got {self.collision_strategy!r}"
            )
        if self.warmup_epochs < 0:
            raise DataError(f"tokenizer.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for name in ("epochs", "batch_size", "kmeans_iters", "collision_min_size", "eval_every"):
            if getattr(self, name) < 1:
                raise DataError(f"tokenizer.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.ema_decay < 1.0:
            raise DataError(f"tokenizer.ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0.0 <= self.reset_stop_fraction <= 1.0:
            raise DataError("tokenizer.reset_stop_fraction must be in [0, 1]")
        if self.lr <= 0:
            raise DataError(f"tokenizer.lr must be > 0, got {self.lr}")
        for section, cls in SECTION_CLASSES.items():
            setattr(self, section, cls.coerce(getattr(self, section)))
        self.section_config().validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def upgrade_legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with the flat keys of earlier versions (:data:`LEGACY_KEYS`) moved into their
        sections, logging one warning that names the new spellings; a setting given both ways
        is a one-line DataError. Returns ``data`` itself when it holds no old key."""
        out, moved = move_flat_keys(data, LEGACY_KEYS, component="tokenizer")
        if moved:
            log.warning("tokenizer config: old flat key(s) of an earlier version read in their "
                        "section (old -> new spelling): %s", ", ".join(moved))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerConfig":
        """A validated config from a mapping (YAML section, ``tokenizer/config.json``); old flat
        keys are accepted (:meth:`upgrade_legacy_keys`), unknown keys at any level refused."""
        if not isinstance(data, dict):
            raise DataError(f"the tokenizer config must be a mapping, got {type(data).__name__}")
        values = dict(cls.upgrade_legacy_keys(data))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DataError(f"unknown tokenizer config keys: {', '.join(map(str, unknown))}")
        for section, section_cls in SECTION_CLASSES.items():
            if section in values:
                values[section] = section_cls.coerce(values[section])
        return cls(**values).validate()
