"""Configuration of the generative retriever (TIGER-style T5 over semantic-ID tokens).

Every field maps 1:1 onto the ``retriever:`` section of a run's YAML config. Two presets exist:

* ``"default"`` — the TIGER sizes (4 + 4 layers, 6 heads x 64, d_model 128, d_ff 1024,
  dropout 0.1), meant for a GPU.
* ``"quick"`` — a CPU profile (d_model 64, 2 + 2 layers, 4 heads x 16, d_ff 256, no dropout,
  the last 10 items as history, 2000 steps of 256 examples, validation on every user) that
  trains on ml-100k-mm in about three and a half minutes on two CPU cores.

Both read one encoder position per history item and train one softmax per SID position
(``history_encoding``, ``output_softmax``); the TIGER layout is ``history_encoding="token"``.

``RetrieverConfig.from_profile("quick", lr=...)`` returns a preset with overrides applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from recdata.errors import DataError

# Nearest items kept per item for the content prior's extra candidates (content_candidates <= it).
CONTENT_NEIGHBOURS = 32

AMP_MODES = ("auto", "off", "bf16", "fp16")
HISTORY_ENCODINGS = ("item", "token")
SCORES = ("joint", "children")
OUTPUT_SOFTMAX = ("position", "vocab", "children")
ITEM_QUERIES = ("decoder", "last")
DECODER_STARTS = ("token", "last")


def _floats_as_floats(obj: Any) -> None:
    """Store an integer given for a float field as a float: YAML's ``0`` and ``0.0`` are one
    setting and must give one fingerprint (a checkpoint is resumed only on an equal one)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.type in ("float", "float | None") and isinstance(value, int) \
                and not isinstance(value, bool):
            setattr(obj, f.name, float(value))


@dataclass
class Stage2Config:
    """Behaviour-aware fine-tuning of the tokenizer through soft indexing (method.md section 4).

    After the retriever has been trained on the stage-1 IDs, the tokenizer and the retriever are
    trained jointly for ``steps`` steps on ``retrieval CE + recon_weight * L_recon +
    aux_weight * L_aux``; the retriever sees every code token of the history (and, with
    ``soft_targets``, of the target) as ``soft_onehot @ embedding`` (forward exactly discrete,
    gradient through the softmax). Then
    hard IDs are re-assigned, collisions re-resolved, the new tokenizer artefacts written to
    ``stage2/`` (``tokenizer/`` is left as the tokenize stage wrote it) and the retriever trains
    ``continue_steps`` more steps on the final IDs. The stage-2 IDs become the run's only when
    validation NDCG@10 beats the stage-1 retriever's; ``stage2/stage2.json`` records the verdict.
    """

    enabled: bool = False
    """Run stage 2 at all (off: the retriever is trained once on the stage-1 IDs)."""
    tau: float = 0.1
    """Temperature of ``softmax(cos(z, C) / tau)`` in soft indexing."""
    tokenizer_lr: float = 1e-4
    """AdamW learning rate of the tokenizer's parameters during joint fine-tuning."""
    retriever_lr: float = 2e-4
    """Learning rate of the retriever during joint fine-tuning (constant)."""
    steps: int = 300
    """Joint fine-tuning steps (one retrieval batch each)."""
    soft_targets: bool = False
    """Also feed the target item's tokens softly (decoder inputs and cross-entropy targets).
    Off by default: the cross-entropy then rewards making targets predictable, which has a
    degenerate optimum (every item on one code); on ml-100k it collapsed an RQ-VAE tokenizer
    to 3 % codebook utilisation in 100 steps. With it off, only the history tokens carry the
    retrieval gradient to the tokenizer, and merging items would only hurt the loss."""
    recon_weight: float = 0.5
    """Weight of the tokenizer's reconstruction loss (paper: 0.5)."""
    aux_weight: float = 0.5
    """Weight of the tokenizer's auxiliary (per-modality / codebook) losses (paper: 0.5)."""
    max_collision_increase: float = 0.2
    """Re-assigned IDs whose collision rate exceeds stage 1's by more than this are rejected at
    once, without the continued training and its validation decode: the joint phase can collapse
    a codebook onto the codes the retriever already predicts (RQ-VAE on amazon-beauty: collision
    rate .04 -> .83 and utilisation .37 after 300 joint steps; validation NDCG@10 .0099 against
    stage 1's .0303)."""
    continue_steps: int = 1000
    """Retriever steps on the final IDs after re-assignment (its own warmup + linear decay)."""
    continue_lr: float | None = None
    """Peak learning rate of the continued training; None = a third of the retriever's ``lr``
    (re-warming to the full rate undid the stage-1 training in the ml-100k quick runs)."""


@dataclass
class PriorsConfig:
    """Priors that re-order the retriever's final candidates after the search (decoding only),
    with weights fitted on the validation users inside the ``train-retriever`` stage.

    Two signals the trained model under-uses on sparse catalogues: how often a candidate
    directly followed the user's most recent item in the training sequences (the transition
    prior, ``w_t * log(1 + count)``) and how close its frozen embeddings are to the recent
    history items' (the content prior, ``w_c * sum_h decay**h * max(0, cos)``, the mean cosine
    over the run's modalities). Each may first offer a few extra candidates the search missed
    (the last item's top successors, its nearest items by content). Every weight is chosen by
    coordinate ascent over the grids below on the validation users' NDCG@10; a grid holding 0
    lets the fit switch a prior off, and a one-value grid fixes it. The chosen weights are saved
    as ``retriever/priors.json`` and used by the stage's test lists and by serving alike.
    """

    fit: bool = True
    """Fit the priors on the validation users (off: the model's own lists, no priors)."""
    transition_weights: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0, 16.0])
    """Candidate weights of ``log(1 + count(last item -> candidate))``."""
    transition_candidates: list[int] = field(default_factory=lambda: [0, 5, 10])
    """Candidate numbers of the last item's most frequent training successors added to the
    lists when the search missed them (a bounded lookup per user)."""
    content_weights: list[float] = field(default_factory=lambda: [0.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0])
    """Candidate weights of the content similarity to the recent history."""
    content_candidates: list[int] = field(default_factory=lambda: [0, 5, 10])
    """Candidate numbers of the last item's nearest items by content added to the lists when
    missing (at most 32, the neighbour table's width)."""
    content_history: list[int] = field(default_factory=lambda: [1, 3, 5])
    """Candidate numbers of recent history items whose similarity counts (1 = the last item)."""
    content_decay: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9])
    """Candidate ratios of an older history item's weight to the next more recent one's."""
    rounds: int = 2
    """Passes of coordinate ascent over the six settings."""

    def validate(self) -> None:
        grids = {"transition_weights": self.transition_weights,
                 "transition_candidates": self.transition_candidates,
                 "content_weights": self.content_weights,
                 "content_candidates": self.content_candidates,
                 "content_history": self.content_history, "content_decay": self.content_decay}
        for name, grid in grids.items():
            if not isinstance(grid, list) or not grid:
                raise DataError(f"retriever config: priors.{name} must be a non-empty list")
        checks = [
            (min(self.transition_weights) >= 0 and min(self.content_weights) >= 0,
             "priors weights must be >= 0"),
            (min(self.transition_candidates) >= 0, "priors.transition_candidates must be >= 0"),
            (0 <= min(self.content_candidates) and max(self.content_candidates) <= CONTENT_NEIGHBOURS,
             f"priors.content_candidates must lie in 0..{CONTENT_NEIGHBOURS}"),
            (min(self.content_history) >= 1, "priors.content_history must be >= 1"),
            (all(0.0 < d <= 1.0 for d in self.content_decay), "priors.content_decay must lie in (0, 1]"),
            (self.rounds >= 1, "priors.rounds must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"retriever config: {message}")


LEGACY_PRIOR_KEYS = ("transition_prior_weight", "transition_candidates", "content_prior_weight",
                     "content_candidates", "content_history", "content_decay")
"""Flat keys of earlier versions that set the priors' weights by hand; they are now fitted on
validation users (:class:`PriorsConfig`), so the keys are dropped with one warning."""
REMOVED_KEYS = ("transition_embedding", "transition_dropout", "transition_score_weight",
                "content_embedding")
"""Keys of options that experiments rejected and the code no longer has (a learned item-to-item
term, retriever experiments 48-50; the items' content vectors in the embeddings, experiment 58):
a config that leaves them off loads with one warning, one that turns one on is refused."""


@dataclass
class RetrieverConfig:
    """Generative retriever: model size, data, optimisation, decoding and stage 2."""

    # -- model (T5 encoder-decoder, trained from scratch) --
    d_model: int = 128
    """Width of the token embeddings and of every layer's residual stream (TIGER: 128)."""
    num_layers: int = 4
    """Encoder layers."""
    num_decoder_layers: int = 4
    """Decoder layers."""
    num_heads: int = 6
    """Attention heads per layer (TIGER: 6)."""
    d_kv: int = 64
    """Width of one attention head (heads x d_kv need not equal d_model in T5)."""
    d_ff: int = 1024
    """Hidden width of each feed-forward block (TIGER: 1024)."""
    dropout: float = 0.1
    """Dropout on attention, feed-forward and embeddings during training (TIGER: 0.1)."""
    feed_forward_proj: str = "relu"
    """T5 feed-forward activation: "relu" (T5 v1.0) or "gated-gelu" (T5 v1.1)."""

    # -- data --
    history_encoding: str = "item"
    """How the encoder reads the history: "item" — one position per history item, the scaled
    sum of its SID token embeddings (L times shorter input, several times cheaper per step);
    "token" — one position per SID token, as TIGER does."""
    item_id_embedding: bool = False
    """With ``history_encoding="item"``, add a learned per-item vector (zero at start) to each
    history item's SID embedding, as an ItemID model has. The decoder still generates SIDs; an
    item added after training reads as its SID alone."""
    recency_embedding: bool = False
    """With ``history_encoding="item"``, add a learned vector per distance from the end of the
    history (0 = the most recent item; zero at start) to each history item's embedding, so
    the decoder can single out the last items, whose successors are the most predictable."""
    item_loss_weight: float = 0.0
    """Weight of the item head's loss (0 = no item head). The item head scores every catalogue
    item by the dot product of the decoder's start-token output (the state that predicts the
    first code) with the item's history embedding (its SID rows, plus its learned vector under
    ``item_id_embedding``): a softmax over the catalogue, trained beside the SID softmax and
    used only to re-order the beam's candidates (``item_score_weight``), so decoding cost does
    not grow with the catalogue. Needs ``history_encoding="item"`` and the ``position`` or
    ``children`` softmax."""
    item_query: str = "decoder"
    """The item head's query: "decoder" — the decoder's start-token output; "last" — that plus
    the encoder's output at the most recent history item, a direct path from the last item to
    the scores of its likely successors (as SASRec reads its last position)."""
    decoder_start: str = "token"
    """The decoder's first input: "token" — the start token's embedding; "last" — that plus the
    encoder's output at the most recent history item, so the SID search reads the last item as
    directly as the item head does under ``item_query: last`` (the first code decides which
    items the beam keeps). Needs ``history_encoding="item"`` and the ``position`` or
    ``children`` softmax."""
    head_distill_weight: float = 0.0
    """Weight of a loss that pulls the SID softmax of the first ``head_distill_levels`` codes
    toward the item head's catalogue distribution summed over the items under each code (the
    head as teacher, its gradient stopped; 0 = off). The beam keeps only the prefixes the SID
    softmax ranks high, so items the head ranks high under an unlikely first code never reach
    the re-ordering; this teaches the search where the head's mass lies, at no decoding cost.
    Needs an item head (``item_loss_weight`` > 0)."""
    head_distill_levels: int = 2
    """SID positions that ``head_distill_weight`` trains (from the first), each under the
    target's own prefix as in teacher forcing."""
    item_score_weight: float = 1.0
    """With an item head: each candidate's final score is ``log p(SID) + item_score_weight *
    item-head logit``."""
    max_history: int = 20
    """Most recent items of the history fed to the encoder (left-truncated)."""
    max_train_prefixes: int = 0
    """Training examples per user: only the targets of the most recent N prefixes of each
    training sequence (0 = every prefix, as TIGER). Recent targets resemble the held-out ones
    more, and an epoch gets shorter, so a CPU budget buys more passes over them."""
    n_user_buckets: int = 2000
    """Hashed user-token buckets (TIGER: 2000)."""

    # -- optimisation --
    batch_size: int = 256
    """Training examples (history prefix -> next item) per optimiser step."""
    length_buckets: int = 0
    """Group training examples of similar history length into the same batch: examples are
    sorted by length within windows of this many batches of the shuffled epoch, and the batches
    shuffled (0 = off, plain shuffled batches). Each batch is padded to its longest history, so
    this makes steps cheaper where most histories are short."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warmup, then linear decay to 0 at ``max_steps``)."""
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    max_steps: int = 20000
    """Step budget; training also stops after ``max_epochs`` or early stopping."""
    max_epochs: int = 200
    max_minutes: float = 0.0
    """Wall-clock cap on training, in minutes (0 = none): training stops at the first step past
    it, is validated, and keeps its best weights. A safety net for a fixed budget: a run that
    hits it depends on the machine's speed, so set ``max_steps`` to fit and the cap above it."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    amp: str = "auto"
    """Mixed precision: "auto" (bf16 on a GPU that supports it, else fp16; off on CPU), "off",
    "bf16" or "fp16"."""

    # -- validation / model selection --
    eval_every: int = 1000
    """Steps between validation runs (NDCG@10 on validation users) and checkpoints."""
    patience: int = 5
    """Stop after this many evaluations without a better validation NDCG@10 (0 = never)."""
    val_max_users: int = 0
    """Validate on a fixed random subset of this many users (0 = all validation users)."""
    eval_batch_size: int = 64
    """Users decoded together by beam search."""

    # -- decoding --
    num_beams: int = 20
    """Beam width for evaluation; must be >= the largest K evaluated (20)."""
    output_softmax: str = "children"
    """What each decoding step's softmax runs over, in training and in scoring: "position" —
    that SID position's own codebook (a step's head costs K rows, not the whole vocabulary);
    "vocab" — the whole vocabulary (user tokens and the other positions' codes included), as
    a plain T5 language-model head does; "children" — only the codes that continue the target's
    prefix to a real item (the trie's children: a hierarchical softmax over the catalogue, so no
    probability is spent on IDs that do not exist and a step with one child costs nothing).
    Scoring then uses the same normalisation (``score`` is ignored)."""
    score: str = "joint"
    """Score of a decoded item: "joint" — the model's joint log-likelihood of the whole SID
    under ``output_softmax``; "children" — log-softmax over the trie's valid children only,
    under which a step with one child adds exactly 0, so the tokens after the first unique
    prefix never rank anything."""
    candidates_n: int = 50
    """Candidates per user saved to ``candidates.parquet`` for the ranker; the final decoding
    uses ``max(num_beams, candidates_n)`` beams."""

    # -- decoding priors --
    priors: PriorsConfig = field(default_factory=PriorsConfig)

    # -- stage 2 --
    stage2: Stage2Config = field(default_factory=Stage2Config)

    def __post_init__(self) -> None:
        if isinstance(self.stage2, dict):
            self.stage2 = Stage2Config(**self.stage2)
        if isinstance(self.priors, dict):
            unknown = sorted(set(self.priors) - {f.name for f in dataclasses.fields(PriorsConfig)})
            if unknown:
                raise DataError(f"retriever config: unknown priors field(s) {unknown}")
            self.priors = PriorsConfig(**self.priors)
        _floats_as_floats(self)
        _floats_as_floats(self.stage2)
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.d_model > 0 and self.d_kv > 0 and self.d_ff > 0, "model sizes must be positive"),
            (self.num_layers > 0 and self.num_decoder_layers > 0, "need at least one layer each"),
            (self.num_heads > 0, "num_heads must be positive"),
            (0.0 <= self.dropout < 1.0, "dropout must lie in [0, 1)"),
            (self.max_history > 0, "max_history must be positive"),
            (self.max_train_prefixes >= 0, "max_train_prefixes must be >= 0"),
            (self.n_user_buckets > 0, "n_user_buckets must be positive"),
            (self.batch_size > 0 and self.eval_batch_size > 0, "batch sizes must be positive"),
            (self.length_buckets >= 0, "length_buckets must be >= 0"),
            (self.lr > 0, "lr must be positive"),
            (self.max_steps > 0 and self.max_epochs > 0, "max_steps and max_epochs must be > 0"),
            (self.max_minutes >= 0, "max_minutes must be >= 0"),
            (self.eval_every > 0, "eval_every must be positive"),
            (self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}"),
            (self.history_encoding in HISTORY_ENCODINGS,
             f"history_encoding must be one of {HISTORY_ENCODINGS}"),
            (self.score in SCORES, f"score must be one of {SCORES}"),
            (self.output_softmax in OUTPUT_SOFTMAX,
             f"output_softmax must be one of {OUTPUT_SOFTMAX}"),
            (self.num_beams >= 20, "num_beams must be >= 20 (the largest K evaluated)"),
            (self.candidates_n > 0, "candidates_n must be positive"),
            (self.item_loss_weight >= 0 and self.item_score_weight >= 0,
             "item_loss_weight and item_score_weight must be >= 0"),
            (self.item_loss_weight == 0 or (self.history_encoding == "item"
                                            and self.output_softmax in ("position", "children")),
             "item_loss_weight needs history_encoding 'item' and output_softmax 'position' or "
             "'children'"),
            (not (self.item_id_embedding or self.recency_embedding)
             or self.history_encoding == "item",
             "item_id_embedding and recency_embedding need history_encoding 'item'"),
            (self.head_distill_weight >= 0 and self.head_distill_levels >= 1,
             "head_distill_weight must be >= 0 and head_distill_levels >= 1"),
            (self.head_distill_weight == 0 or self.item_loss_weight > 0,
             "head_distill_weight needs an item head (item_loss_weight > 0)"),
            (self.item_query in ITEM_QUERIES, f"item_query must be one of {ITEM_QUERIES}"),
            (self.decoder_start in DECODER_STARTS,
             f"decoder_start must be one of {DECODER_STARTS}"),
            (self.decoder_start == "token" or (self.history_encoding == "item"
                                                and self.output_softmax in ("position", "children")),
             "decoder_start 'last' needs history_encoding 'item' and output_softmax 'position' or "
             "'children'"),
            (self.stage2.tau > 0, "stage2.tau must be positive"),
            (0 <= self.stage2.max_collision_increase <= 1,
             "stage2.max_collision_increase must be in [0, 1]"),
            (self.stage2.steps >= 0 and self.stage2.continue_steps >= 0,
             "stage2 step counts must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"retriever config: {message}")
        self.priors.validate()

    @property
    def normalize(self) -> str:
        """The constrained search's ``normalize`` argument for this config's scoring rule."""
        if self.score == "children" or self.output_softmax == "children":
            return "children"
        return self.output_softmax

    @property
    def rerank_weight(self) -> float:
        """Weight of the item head when re-ordering the beam (0 = no item head trained)."""
        return self.item_score_weight if self.item_loss_weight > 0 else 0.0

    @property
    def decode_beams(self) -> int:
        """Beams of the final decoding (never fewer than the candidates requested)."""
        return max(self.num_beams, self.candidates_n)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the fields that change what the retriever's training produces (a checkpoint
        is resumed only when it matches); decoding-only fields and stage 2 are excluded."""
        fields = self.to_dict()
        for name in ("stage2", "priors", "candidates_n", "eval_batch_size"):
            fields.pop(name)
        if not self.head_distill_weight:
            # Added later: runs trained without it keep resuming their checkpoints.
            fields.pop("head_distill_weight")
            fields.pop("head_distill_levels")
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @staticmethod
    def upgrade_legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
        """``data`` without the hand-set prior weights of earlier versions
        (:data:`LEGACY_PRIOR_KEYS`), logging one warning: the priors are fitted on validation
        users now. Returns ``data`` itself when it holds no old key."""
        gone = [key for key in data if key in REMOVED_KEYS]
        if data.get("transition_embedding"):
            raise DataError("retriever config: transition_embedding (a learned item-to-item "
                            "term) was removed; the transition prior is fitted instead")
        if data.get("content_embedding"):
            raise DataError("retriever config: content_embedding was removed (no gain on "
                            "validation users); the content prior is fitted instead")
        if gone:
            logging.getLogger(__name__).warning(
                "retriever config: %s no longer exist (options experiments rejected: the learned "
                "transition term was removed); ignored", ", ".join(gone))
            data = {k: v for k, v in data.items() if k not in REMOVED_KEYS}
        old = [key for key in data if key in LEGACY_PRIOR_KEYS]
        if not old:
            return data
        logging.getLogger(__name__).warning(
            "retriever config: %s no longer set the priors by hand; their weights are fitted "
            "on validation users (retriever.priors), so these keys are ignored", ", ".join(old))
        return {k: v for k, v in data.items() if k not in LEGACY_PRIOR_KEYS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RetrieverConfig":
        data = cls.upgrade_legacy_keys(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"retriever config: unknown field(s) {unknown}")
        return cls(**data)

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "RetrieverConfig":
        if name not in PROFILES:
            raise DataError(f"unknown retriever profile {name!r}; choose from {sorted(PROFILES)}")
        base = PROFILES[name].to_dict()
        stage2 = dict(base.pop("stage2"))
        stage2.update(overrides.pop("stage2", {}) or {})
        base.update(overrides)
        return cls(**base, stage2=Stage2Config(**stage2))


PROFILES: dict[str, RetrieverConfig] = {
    # TIGER sizes; a GPU trains this in minutes on ml-1m, hours on Amazon Beauty.
    "default": RetrieverConfig(),
    # Two CPU cores, ml-100k-mm (~97k training prefixes): the settings of
    # configs/ml-100k-mm.quick.yaml (measured in benchmarks/results/retriever_sweep_ml-100k.jsonl).
    # Deviations from the method, for speed: the encoder sees the last 10 items (not 20) and no
    # dropout (training stays within a few epochs, where dropout only slows learning down).
    "quick": RetrieverConfig(
        d_model=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        d_kv=16,
        d_ff=256,
        dropout=0.0,
        max_history=10,
        batch_size=256,
        lr=3e-3,
        warmup_steps=100,
        max_steps=2000,
        eval_every=500,
        patience=0,
        val_max_users=0,
        eval_batch_size=128,
        stage2=Stage2Config(steps=100, continue_steps=300),
    ),
}
