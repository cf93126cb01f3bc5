"""Configuration of the CTR ranker and of the two-stage (retrieve → re-rank) recommendation.

Every field maps 1:1 onto the ``ranker:`` section of a run's YAML config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ITEM_REPRS = ("itemid", "sid", "both")


@dataclass
class RankerConfig:
    """CTR ranker: model, item representation, training and two-stage serving settings."""

    # --- model -----------------------------------------------------------------------------
    model: str = "din"
    """Registry name in ``ranking.models.MODELS`` (``"din"``: target attention over history)."""

    item_repr: str = "sid"
    """Item representation: ``"itemid"`` (one embedding per item), ``"sid"`` (sum of one
    embedding per SID position, no item-ID table) or ``"both"`` (their sum). The default of
    ``ranking.train.train_model``; the stage trains one model per entry of ``variants``."""

    sid_ngrams: bool = False
    """Add embeddings of the SID prefixes of length 2 .. L-1 (the full SID is left out because
    it is unique per item and would act as an item ID)."""

    embedding_dim: int = 32
    """Width of every embedding (item, SID token, user features); the item vector has this width
    whatever the representation, so switching ``item_repr`` changes only the inputs."""

    hidden_sizes: list[int] = field(default_factory=lambda: [128, 64])
    """Widths of the prediction MLP."""

    attention_hidden: int = 36
    """Width of the target-attention MLP (DIN's activation unit)."""

    dropout: float = 0.1

    history_len: int = 50
    """Most recent interactions (strictly before the scored one) fed to the attention."""

    history_feedback: bool = True
    """Add a learned embedding of each history item's own label (liked / not liked) to its vector.
    Only labels of earlier interactions are used, so nothing leaks from the scored row."""

    use_user_id: bool = False
    """Learn one embedding per user. Off by default: on ML-100K it overfits (validation AUC
    0.729 with it, 0.747 without); the liked / not-liked history already carries a user's bias."""

    use_user_features: bool = True
    """Use age bucket, gender and occupation when ``users.parquet`` has them."""

    # --- training --------------------------------------------------------------------------
    variants: list[str] = field(default_factory=lambda: ["itemid", "sid"])
    """Item representations the stage trains, one model each (``ranker/model_<variant>``)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    embedding_l2: float = 1e-6
    """L2 penalty on the embedding rows used in a batch (keeps rare-item embeddings small)."""

    batch_size: int = 1024
    epochs: int = 8
    patience: int = 2
    """Stop after this many epochs without a better validation AUC; the best epoch is kept."""

    negatives_per_positive: int = 4
    """Implicit datasets only (rating is null): uniformly sampled unseen items per interaction."""

    holdout_sequential_targets: bool = True
    """Leave each user's last two interactions (the leave-one-out validation and test targets of
    the retriever's split) out of the CTR *training* rows, so the two-stage leave-one-out
    evaluation never scores an item the ranker was trained on for that user. CTR validation and
    test rows are untouched (about two rows per user are dropped from training)."""

    # --- optional stage 2: soft indexing through the CTR loss (ranking/soft_index.py) ---------
    soft_indexing: bool = False
    """After training, fine-tune the ``soft_from`` ranker and the run's tokenizer jointly through
    the click loss, re-assign hard IDs and report the result as variant ``<soft_from>_soft``."""

    soft_from: str = "sid"
    """Variant the soft-indexing run starts from ("sid" or "both"; must be in ``variants``)."""

    soft_epochs: int = 2
    soft_tau: float = 1.0
    """Temperature of the soft code assignment softmax(cos / τ) (not published; ours)."""

    soft_lr: float = 3e-4
    """Ranker learning rate while fine-tuning (it starts from a trained model)."""

    soft_tokenizer_lr: float = 1e-4
    soft_recon_weight: float = 0.5
    soft_aux_weight: float = 0.5
    """Weights of the tokenizer's reconstruction terms in the joint loss (paper: 0.5, 0.5)."""

    soft_recon_items: int = 512
    """Random catalogue items per step on which the reconstruction terms are computed (an
    unbiased estimate of the catalogue mean at a fraction of the cost; 0 = every item)."""

    cpu_threads: int = 1
    """torch CPU threads while the stage runs (0 = leave torch's setting; the previous setting
    is restored afterwards). 1 by default: with two threads the CPU kernels accumulate the
    embedding gradients in an order that varies from run to run (weights differing by ~1e-7
    between two identical runs), while one thread gives the same model every time; small
    batches gain little from more threads anyway."""

    # --- two-stage recommendation ------------------------------------------------------------
    candidates_n: int = 50
    """Retriever candidates re-scored by the ranker."""

    exclude_seen: bool = False
    """Drop items already in the user's history from the two-stage evaluation lists; in a run it
    follows ``eval.exclude_history`` (one protocol for every system). Serving chooses per call
    (``Recommender.recommend(..., exclude_seen=True)`` by default)."""

    k: int = 10
    """Default list length of ``recommend``."""

    serve_variant: str = "sid"
    """Variant used by ``recommend`` and written to ``two_stage_ranked.parquet`` (falls back to
    the first trained variant when this one was not trained)."""

    fusion_alphas: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)])
    """Ranker weights tried for the fused score ``a·z(ranker logit) + (1−a)·z(retriever score)``
    (z = standardised within the user's candidate list) on the *validation* users' candidates;
    the one with the best NDCG@10 serves ``recommend`` and ``two_stage_ranked.parquet``. Pure
    re-ranking (a = 1) is always reported too. ``[]`` or ``[1.0]`` = pure re-ranking only."""

    eval_ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    """Cut-offs of the two-stage ranking metrics."""

    def __post_init__(self) -> None:
        from recdata.errors import DataError

        if self.item_repr not in ITEM_REPRS:
            raise DataError(f"ranker.item_repr must be one of {ITEM_REPRS}, got {self.item_repr!r}")
        bad = [v for v in self.variants if v not in ITEM_REPRS]
        if bad or not self.variants:
            raise DataError(f"ranker.variants must be a non-empty subset of {ITEM_REPRS}, got {self.variants!r}")
        if len(set(self.variants)) != len(self.variants):
            raise DataError(f"ranker.variants has duplicates: {self.variants!r}")
        for name in ("embedding_dim", "history_len", "batch_size", "epochs", "candidates_n", "k"):
            if int(getattr(self, name)) < 1:
                raise DataError(f"ranker.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.patience < 0 or self.negatives_per_positive < 1:
            raise DataError("ranker.patience must be >= 0 and ranker.negatives_per_positive >= 1")
        if self.soft_indexing and (self.soft_from not in ("sid", "both") or self.soft_from not in self.variants):
            raise DataError(
                f"ranker.soft_from must be 'sid' or 'both' and one of ranker.variants {self.variants!r}, "
                f"got {self.soft_from!r}"
            )
        if self.soft_tau <= 0 or self.soft_epochs < 1:
            raise DataError("ranker.soft_tau must be > 0 and ranker.soft_epochs >= 1")
        if any(not 0.0 <= a <= 1.0 for a in self.fusion_alphas):
            raise DataError(f"ranker.fusion_alphas must lie in [0, 1], got {self.fusion_alphas!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise DataError(f"ranker.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RankerConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})
