"""Configuration of the tokenizer stage (stage 1 of MMQ and its baselines).

One dataclass covers the three tokenizers in :data:`tokenizer.registry.TOKENIZERS`; fields that
only one of them reads say so. YAML configs map 1:1 onto these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from recdata.errors import DataError
from tokenizer.bbq.config import BBQConfig

TOKENIZER_NAMES = ("mmq", "rqvae", "rqkmeans", "bbq")


@dataclass
class TokenizerConfig:
    """Every knob of the tokenizer stage.

    Defaults follow the MMQ paper where it states a value (2 + 2 + 2 experts, loss weights
    12 / 10 / 0.005, cosine assignment) and TIGER for the RQ-VAE baseline (3 levels x 256,
    beta = 0.25, k-means initialisation); the rest are our choices, documented per field.
    """

    name: str = "mmq"
    """Which tokenizer: "mmq" (multimodal mixture of quantisation experts), "rqvae" (TIGER's
    residual-quantised VAE), "rqkmeans" (residual k-means, no gradient training) or "bbq"
    (BBQRec's behaviour-bind quantisation, which also reads training histories; its own knobs
    are in ``bbq``)."""

    codebook_size: int = 256
    """Entries per codebook (one codebook per MMQ expert, or per RQ level)."""

    # ----------------------------------------------------------------- MMQ architecture
    latent_dim: int = 64
    """MMQ: width of each expert's latent (and of the fused latent fed to the decoder)."""
    expert_hidden: int = 256
    """MMQ: hidden width of each expert MLP (input -> hidden -> latent)."""
    decoder_hidden: int = 512
    """MMQ: hidden width of the main and auxiliary decoder MLPs."""
    gate_hidden: int = 64
    """MMQ: hidden width of the per-modality gate MLPs (softmax over that modality's experts)."""
    n_shared: int = 2
    """MMQ: modality-shared experts, each reading the concatenated [text; image] input."""
    n_text: int = 2
    """MMQ: text-specific experts."""
    n_vision: int = 2
    """MMQ: vision-specific experts; ignored (no vision experts) when the run has no images."""
    specific_only: bool = False
    """MMQ ablation: drop the shared experts (the SID then has n_text + n_vision raw tokens)."""
    assignment: str = "cosine"
    """MMQ: code assignment rule, "cosine" (paper; latents and codewords on the unit sphere) or
    "l2" (ablation: nearest codeword in Euclidean distance on unnormalised latents)."""

    # ----------------------------------------------------------------- MMQ losses
    recon_weight: float = 12.0
    """Weight of the main reconstruction loss (paper: 12)."""
    aux_weight: float = 10.0
    """Weight of the per-modality auxiliary reconstruction loss (paper: 10)."""
    ortho_weight: float = 0.1
    """Weight of the orthogonality regulariser (paper: 0.005 with ``ortho_target="weights"``)."""
    ortho_target: str = "outputs"
    """What the orthogonality regulariser acts on: "outputs" (ours, the default) — the squared
    cross-correlation, over a batch, between every two experts' latents, so that no expert's
    code can be predicted from another's and near-duplicate items differ somewhere (amazon-beauty
    collisions 5.8 % -> 0.7 %, ml-100k retrieval unchanged over two seeds; weight 1.0 cost
    ~13 % validation NDCG@10 on ml-100k); "weights" — the paper's ``||V V^T - I||^2`` over each
    group's flattened expert weights, which random high-dimensional weights already satisfy,
    so at 0.005 it adds ~1e-7 to the loss and changes nothing measurable."""
    gate_balance_weight: float = 0.0
    """MMQ (ours; paper silent): weight of the gate load-balancing term (see
    tokenizer.mmq.gate_balance_loss); 0 disables. Off by default: on amazon-beauty at 1.0 it
    evened the experts' total weight but made per-item gates sharper, lowering the text
    experts' token entropy (7.9 / 5.9 -> 6.5 / 6.7 bits) and raising collisions (0.29 -> 0.31)."""
    aux_loss: bool = True
    """MMQ ablation switch: False removes the auxiliary decoders and their loss."""
    ortho_loss: bool = True
    """MMQ ablation switch: False removes the orthogonality regulariser."""

    # ----------------------------------------------------------------- codebook learning
    codebook_update: str = "ema"
    """How codewords learn: "ema" (exponential moving average of the assigned latents) or
    "loss" (VQ-VAE codebook loss with gradient). RQ-VAE always uses "loss" as in TIGER."""
    ema_decay: float = 0.95
    """Decay of the EMA codebook statistics (codebook_update="ema")."""
    beta: float = 0.25
    """Commitment weight: beta * ||z - sg(c)||^2 pulls encoder outputs towards their codeword."""
    codebook_weight: float = 1.0
    """Weight of the summed codebook + commitment terms in the total loss."""
    kmeans_init: bool = True
    """Initialise every codebook with k-means over the first latents (else random latents)."""
    kmeans_iters: int = 25
    """Lloyd iterations of every k-means run (initialisation and the rqkmeans tokenizer)."""
    warmup_epochs: int = 5
    """Epochs (counted in ``epochs``) of plain autoencoding before the codebooks are
    k-means-initialised on the learned latents; latents of an untrained encoder move too much
    in the first updates for their clusters to survive."""
    dead_code_reset: bool = True
    """After an epoch, move codewords that no item chose onto latents of items drawn from
    crowded codes (keeps utilisation high); skipped in the last ``reset_stop_fraction`` of the
    epochs, then done once more after training (counted in metrics as final_codes_reset)."""
    reset_stop_fraction: float = 0.2
    """Fraction of the final epochs without dead-code resets, so the last resets settle."""

    # ----------------------------------------------------------------- optimisation
    epochs: int = 40
    """Training epochs over the catalogue (mmq, rqvae)."""
    batch_size: int = 256
    """Items per optimisation step."""
    lr: float = 3e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 disables)."""

    # ----------------------------------------------------------------- baselines
    rqvae_levels: int = 3
    """RQ-VAE / RQ-k-means: residual levels (TIGER: 3)."""
    rqvae_input: str = "concat"
    """RQ-VAE / RQ-k-means input: "concat" ([text; image], image zero-filled where missing, i.e.
    the training mean after standardisation) or "text" (text embedding only)."""
    rqvae_hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    """RQ-VAE encoder hidden widths (TIGER: 512, 256, 128; the decoder mirrors them)."""
    rqvae_latent_dim: int = 32
    """RQ-VAE latent width (TIGER: 32)."""
    rqvae_lr: float = 1e-3
    """RQ-VAE learning rate (``lr`` is MMQ's): at 3e-3 its codebooks collapse right after
    k-means initialisation and it ends with more collisions on amazon-beauty."""
    rqkmeans_balanced: bool = True
    """RQ-k-means: cap cluster sizes at ceil(N / K) while fitting (balanced k-means, as in
    OneRec's RQ-Kmeans); plain k-means on 1,664-d inputs leaves most items in one cluster."""

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
    IDs to new items after training."""

    # ----------------------------------------------------------------- monitoring
    collapse_threshold: float = 0.05
    """A codebook whose utilisation (share of codes used) falls below this has collapsed."""
    stop_on_collapse: bool = False
    """On collapse: False logs a warning each epoch; True also stops training early."""
    eval_every: int = 1
    """Epochs between full-catalogue utilisation checks (live utilisation, resets, collapse)."""

    # ----------------------------------------------------------------- BBQ
    bbq: BBQConfig = field(default_factory=BBQConfig)
    """BBQ-specific knobs (tokenizer/bbq/config.py); read only when name = "bbq"."""

    # ----------------------------------------------------------------- helpers
    def validate(self) -> "TokenizerConfig":
        """Raise a one-line DataError for an unusable configuration; return self."""
        if self.name not in TOKENIZER_NAMES:
            raise DataError(f"tokenizer.name must be one of {TOKENIZER_NAMES}, got {self.name!r}")
        if self.codebook_size < 2:
            raise DataError(f"tokenizer.codebook_size must be >= 2, got {self.codebook_size}")
        if self.assignment not in ("cosine", "l2"):
            raise DataError(f"tokenizer.assignment must be 'cosine' or 'l2', got {self.assignment!r}")
        if self.codebook_update not in ("ema", "loss"):
            raise DataError(
                f"tokenizer.codebook_update must be 'ema' or 'loss', got {self.codebook_update!r}"
            )
        if self.rqvae_input not in ("concat", "text"):
            raise DataError(f"tokenizer.rqvae_input must be 'concat' or 'text', got {self.rqvae_input!r}")
        if self.ortho_target not in ("weights", "outputs"):
            raise DataError(
                f"tokenizer.ortho_target must be 'weights' or 'outputs', got {self.ortho_target!r}")
        if self.fit_items not in ("all", "warm"):
            raise DataError(f"tokenizer.fit_items must be 'all' or 'warm', got {self.fit_items!r}")
        if self.collision_strategy not in ("append", "reassign"):
            raise DataError(
                "tokenizer.collision_strategy must be 'append' or 'reassign', "
                f"got {self.collision_strategy!r}"
            )
        for name in ("n_shared", "n_text", "n_vision", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise DataError(f"tokenizer.{name} must be >= 0")
        for name in ("latent_dim", "expert_hidden", "decoder_hidden", "gate_hidden", "epochs",
                     "batch_size", "rqvae_levels", "rqvae_latent_dim", "kmeans_iters",
                     "collision_min_size", "eval_every"):
            if getattr(self, name) < 1:
                raise DataError(f"tokenizer.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.ema_decay < 1.0:
            raise DataError(f"tokenizer.ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0.0 <= self.reset_stop_fraction <= 1.0:
            raise DataError("tokenizer.reset_stop_fraction must be in [0, 1]")
        if self.lr <= 0 or self.rqvae_lr <= 0:
            raise DataError(f"tokenizer.lr and rqvae_lr must be > 0, got {self.lr}, {self.rqvae_lr}")
        self.bbq = BBQConfig.coerce(self.bbq)
        if self.name == "bbq":
            self.bbq.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"unknown tokenizer config keys: {', '.join(unknown)}")
        return cls(**data).validate()
