"""Configuration of the generative retriever (TIGER-style T5 over semantic-ID tokens).

``RetrieverConfig`` is the ``retriever:`` section of a run's YAML config: the T5's size at the
top level, and one section per component — ``history`` (what the encoder reads), ``item_head``
(a catalogue softmax that re-orders the beam), ``schedule`` (training and model selection),
``decoding`` (the constrained beam search), ``priors`` (transition and content priors fitted on
validation users) and ``stage2`` (behaviour-aware tokenizer fine-tuning). The defaults are the
TIGER sizes; the shipped profiles live in ``configs/`` (``ml-100k-mm.quick.yaml`` is the small
CPU setting of the demo and the tests). Flat keys of earlier versions (``max_history``,
``lr``, ``item_loss_weight``, ...) still load, moved into their section with one warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from recdata.errors import DataError
from recdata.overrides import move_flat_keys

# Nearest items kept per item for the content prior's extra candidates (content_candidates <= it).
CONTENT_NEIGHBOURS = 32
# Nearest items per item that the untrained items' channel reads (generative_rec.untrained).
UNTRAINED_NEIGHBOURS = 16
# Recent items the places for untrained items are chosen by (generative_rec.untrained).
SLOT_HISTORY = 5

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
    transition_weights: list[float] = field(
        default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    """Candidate weights of ``log(1 + count(last item -> candidate))``."""
    transition_candidates: list[int] = field(default_factory=lambda: [0, 5, 10])
    """Candidate numbers of the last item's most frequent training successors added to the
    lists when the search missed them (a bounded lookup per user)."""
    content_weights: list[float] = field(
        default_factory=lambda: [0.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0])
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
    untrained_candidates: int = 5
    """Items without training interactions (cold items, items added after training) are offered
    to a user when they are among the this many items nearest by content to the most recent
    item, each scored as its nearest listed trained item (:mod:`generative_rec.untrained`);
    0 = off. A fixed width, not fitted: it lists near duplicates of listed items and costs the
    other users nothing measurable (experiment 64)."""
    untrained_slots: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    """Candidate numbers of the last places of the first ten given to the untrained items most
    like the user's recent items (:func:`generative_rec.untrained.nearest_untrained`), fitted
    after the weights on the validation users when some of their targets are untrained (the
    cold-start protocol holds items out as validation targets too); otherwise the first value
    stands."""

    @property
    def history_depth(self) -> int:
        """How many of each validation user's most recent items the fit reads."""
        return max(max(self.content_history), SLOT_HISTORY)

    def validate(self) -> None:
        grids = {"transition_weights": self.transition_weights,
                 "transition_candidates": self.transition_candidates,
                 "content_weights": self.content_weights,
                 "content_candidates": self.content_candidates,
                 "content_history": self.content_history, "content_decay": self.content_decay,
                 "untrained_slots": self.untrained_slots}
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
            (all(0 <= int(n) <= 10 for n in self.untrained_slots),
             "priors.untrained_slots must lie in 0..10"),
            (0 <= self.untrained_candidates <= UNTRAINED_NEIGHBOURS,
             f"priors.untrained_candidates must lie in 0..{UNTRAINED_NEIGHBOURS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"retriever config: {message}")


@dataclass
class HistoryConfig:
    """How the encoder reads a user's history."""

    encoding: str = "item"
    """"item" — one encoder position per history item, the scaled sum of its SID token
    embeddings (L times shorter input, several times cheaper per step); "token" — one position
    per SID token, as TIGER does."""
    max_length: int = 20
    """Most recent items of the history fed to the encoder (left-truncated)."""
    item_id_embedding: bool = False
    """Add a learned per-item vector (zero at start) to each history item's SID embedding, as an
    ItemID model has. The decoder still generates SIDs; an item added after training reads as
    its SID alone. Needs ``encoding: item``."""
    recency_embedding: bool = False
    """Add a learned vector per distance from the end of the history (0 = the most recent item;
    zero at start), so the model can single out the last items, whose successors are the most
    predictable. Needs ``encoding: item``."""


@dataclass
class ItemHeadConfig:
    """A softmax over the whole catalogue beside the SID softmax, used only to re-order the
    beam's candidates, so decoding cost does not grow with the catalogue. It scores every item
    by the dot product of a query (the decoder's start-token output) with the item's history
    embedding (its SID rows, plus its learned vector under ``history.item_id_embedding``)."""

    loss_weight: float = 0.0
    """Weight of the head's cross-entropy in the training loss (0 = no item head). Needs
    ``history.encoding: item`` and ``output_softmax`` ``position`` or ``children``."""
    query: str = "decoder"
    """"decoder" — the decoder's start-token output; "last" — that plus the encoder's output at
    the most recent history item, a direct path from the last item to the scores of its likely
    successors (as SASRec reads its last position)."""
    score_weight: float = 1.0
    """Each candidate's final score is ``log p(SID) + score_weight * item-head logit``."""
    distill_weight: float = 0.0
    """Weight of a loss that pulls the SID softmax of the first ``distill_levels`` codes toward
    the head's catalogue distribution summed over the items under each code (the head as
    teacher, its gradient stopped; 0 = off). The beam keeps only the prefixes the SID softmax
    ranks high, so items the head ranks high under an unlikely first code never reach the
    re-ordering; this teaches the search where the head's mass lies, at no decoding cost."""
    distill_levels: int = 2
    """SID positions that ``distill_weight`` trains (from the first), each under the target's
    own prefix as in teacher forcing."""
    signals: bool = False
    """Add to each item's logit the history's successor count and content similarity of the
    item and its popularity, weighted by a gate the head learns from its query
    (:mod:`generative_rec.signals`): the signals of the ``heuristic`` baseline, learned
    instead of fitted. Needs the run's cached embeddings."""
    signal_candidates: int = 10
    """With ``signals``: the most recent item's most frequent successors and, as many, its
    nearest items by content that join the beam's candidates when decoding, scored by the model
    like the beam's own (decoding only; 0 = the beam alone)."""


@dataclass
class ScheduleConfig:
    """Training examples, optimisation and model selection."""

    batch_size: int = 256
    """Training examples (history prefix -> next item) per optimiser step."""
    length_buckets: int = 0
    """Group training examples of similar history length into the same batch: examples are
    sorted by length within windows of this many batches of the shuffled epoch, and the batches
    shuffled (0 = off). Each batch is padded to its longest history, so this makes steps cheaper
    where most histories are short."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warmup, then linear decay to 0 at ``max_steps``)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases, norms and embeddings)."""
    warmup_steps: int = 1000
    """Steps of linear warmup to ``lr``."""
    max_steps: int = 20000
    """Most optimiser steps; the schedule runs ``min(max_steps, max_epochs x batches per
    epoch)`` steps, the learning rate decaying to 0 at the last (early stopping may end it
    sooner)."""
    max_epochs: int = 200
    """Length of the schedule in passes over the training examples, so that it follows the
    catalogue's size (its users and their history lengths: every prefix is an example);
    ``max_steps`` caps it."""
    max_minutes: float = 0.0
    """Wall-clock cap on training, in minutes (0 = none): training stops at the first step past
    it, is validated, and keeps its best weights. A safety net for a fixed budget: a run that
    hits it depends on the machine's speed, so set ``max_steps`` to fit and the cap above it."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    amp: str = "auto"
    """Mixed precision: "auto" (bf16 on a GPU that supports it, else fp16; off on CPU), "off",
    "bf16" or "fp16"."""
    eval_every: int = 1000
    """Steps between validation runs (NDCG@10 on validation users) and checkpoints."""
    patience: int = 5
    """Stop after this many evaluations without a better validation NDCG@10 (0 = never)."""
    val_max_users: int = 0
    """Validate on a fixed random subset of this many users (0 = all validation users)."""
    eval_batch_size: int = 64
    """Users decoded together by beam search."""


@dataclass
class DecodingConfig:
    """Beam search over the trie of real IDs."""

    num_beams: int = 20
    """Beam width for evaluation; must be >= the largest K evaluated (20)."""
    score: str = "joint"
    """Score of a decoded item when ``output_softmax`` is not "children": "joint" — the model's
    joint log-likelihood of the whole SID; "children" — log-softmax over the trie's valid
    children only, under which a step with one child adds exactly 0."""
    candidates_n: int = 50
    """Candidates per user saved to ``candidates.parquet`` for the ranker; the final decoding
    uses ``max(num_beams, candidates_n)`` beams."""


SECTION_CLASSES: dict[str, type] = {
    "history": HistoryConfig, "item_head": ItemHeadConfig, "schedule": ScheduleConfig,
    "decoding": DecodingConfig, "priors": PriorsConfig, "stage2": Stage2Config,
}
"""The nested sections of ``retriever:``, by key."""

LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "history_encoding": ("history", "encoding"),
    "max_history": ("history", "max_length"),
    "item_id_embedding": ("history", "item_id_embedding"),
    "recency_embedding": ("history", "recency_embedding"),
    "item_loss_weight": ("item_head", "loss_weight"),
    "item_query": ("item_head", "query"),
    "item_score_weight": ("item_head", "score_weight"),
    "head_distill_weight": ("item_head", "distill_weight"),
    "head_distill_levels": ("item_head", "distill_levels"),
    **{key: ("schedule", key) for key in (
        "batch_size", "length_buckets", "lr", "weight_decay",
        "warmup_steps", "max_steps", "max_epochs", "max_minutes", "grad_clip", "amp",
        "eval_every", "patience", "val_max_users", "eval_batch_size")},
    **{key: ("decoding", key) for key in ("num_beams", "score", "candidates_n")},
}
"""Flat keys of earlier versions -> (section, key): they still load, with one warning."""
LEGACY_PRIOR_KEYS = ("transition_prior_weight", "transition_candidates", "content_prior_weight",
                     "content_candidates", "content_history", "content_decay")
"""Flat keys of earlier versions that set the priors' weights by hand; they are now fitted on
validation users (:class:`PriorsConfig`), so the keys are dropped with one warning."""
REMOVED_KEYS = ("transition_embedding", "transition_dropout", "transition_score_weight",
                "content_embedding", "max_train_prefixes")
"""Keys of options that experiments rejected and the code no longer has (a learned item-to-item
term; the items' content vectors in the history embeddings; training on each user's most
recent prefixes only): a config that leaves them off loads with one warning, one that turns
one on is refused."""
RETRIEVER_FORMAT = 2
"""Version of ``retriever/config.json``: 2 since the item head's learned content signal reaches
every item (experiment 70); a version-1 retriever with ``item_head.signals`` and without
``item_head.dense_content`` learned it among the nearest items only and must be retrained."""
REMOVED_STAGE2_KEYS = ("soft_targets",)
"""Stage-2 options removed the same way (soft target tokens collapsed a codebook)."""


@dataclass
class RetrieverConfig:
    """Generative retriever: the T5's size at the top level, the rest by component."""

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
    n_user_buckets: int = 2000
    """Hashed user-token buckets (TIGER: 2000)."""
    output_softmax: str = "children"
    """What each decoding step's softmax runs over, in training and in scoring: "position" —
    that SID position's own codebook; "vocab" — the whole vocabulary, as a plain T5 language
    model head does; "children" — only the codes that continue the prefix to a real item (the
    trie's children: a hierarchical softmax over the catalogue, so no probability is spent on
    IDs that do not exist and a step with one child costs nothing)."""
    decoder_start: str = "token"
    """The decoder's first input: "token" — the start token's embedding; "last" — that plus the
    encoder's output at the most recent history item, so the SID search reads the last item
    directly (the first code decides which items the beam keeps). Needs
    ``history.encoding: item`` and ``output_softmax`` ``position`` or ``children``."""
    history: HistoryConfig = field(default_factory=HistoryConfig)
    """How the encoder reads a user's history."""
    item_head: ItemHeadConfig = field(default_factory=ItemHeadConfig)
    """A catalogue softmax that re-orders the beam's candidates (off by default)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Training examples, optimisation and model selection."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Beam search and the candidates kept."""
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    """Transition and content priors re-ordering the final candidates, fitted on validation."""
    stage2: Stage2Config = field(default_factory=Stage2Config)
    """Behaviour-aware fine-tuning of the tokenizer (off by default)."""

    def __post_init__(self) -> None:
        for name, cls in SECTION_CLASSES.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
                if unknown:
                    raise DataError(f"retriever config: unknown {name} field(s) {unknown}")
                setattr(self, name, cls(**value))
        for obj in [self] + [getattr(self, name) for name in SECTION_CLASSES]:
            _floats_as_floats(obj)
        self.validate()

    def validate(self) -> None:
        h, head, sch, dec = self.history, self.item_head, self.schedule, self.decoding
        per_position = self.output_softmax in ("position", "children")
        checks = [
            (self.d_model > 0 and self.d_kv > 0 and self.d_ff > 0, "model sizes must be positive"),
            (self.num_layers > 0 and self.num_decoder_layers > 0, "need at least one layer each"),
            (self.num_heads > 0, "num_heads must be positive"),
            (0.0 <= self.dropout < 1.0, "dropout must lie in [0, 1)"),
            (self.n_user_buckets > 0, "n_user_buckets must be positive"),
            (self.output_softmax in OUTPUT_SOFTMAX,
             f"output_softmax must be one of {OUTPUT_SOFTMAX}"),
            (self.decoder_start in DECODER_STARTS,
             f"decoder_start must be one of {DECODER_STARTS}"),
            (self.decoder_start == "token" or (h.encoding == "item" and per_position),
             "decoder_start 'last' needs history.encoding 'item' and output_softmax 'position' "
             "or 'children'"),
            (h.encoding in HISTORY_ENCODINGS, f"history.encoding must be one of {HISTORY_ENCODINGS}"),
            (h.max_length > 0, "history.max_length must be positive"),
            (not (h.item_id_embedding or h.recency_embedding) or h.encoding == "item",
             "history.item_id_embedding and history.recency_embedding need history.encoding 'item'"),
            (head.loss_weight >= 0 and head.score_weight >= 0,
             "item_head.loss_weight and item_head.score_weight must be >= 0"),
            (head.loss_weight == 0 or (h.encoding == "item" and per_position),
             "item_head.loss_weight needs history.encoding 'item' and output_softmax 'position' "
             "or 'children'"),
            (head.query in ITEM_QUERIES, f"item_head.query must be one of {ITEM_QUERIES}"),
            (head.distill_weight >= 0 and head.distill_levels >= 1,
             "item_head.distill_weight must be >= 0 and item_head.distill_levels >= 1"),
            (head.distill_weight == 0 or head.loss_weight > 0,
             "item_head.distill_weight needs an item head (item_head.loss_weight > 0)"),
            (0 <= head.signal_candidates <= CONTENT_NEIGHBOURS,
             f"item_head.signal_candidates must lie in 0..{CONTENT_NEIGHBOURS}"),
            (not head.signals or head.loss_weight > 0,
             "item_head.signals needs an item head (item_head.loss_weight > 0)"),
            (sch.batch_size > 0 and sch.eval_batch_size > 0, "batch sizes must be positive"),
            (sch.length_buckets >= 0, "schedule.length_buckets must be >= 0"),
            (sch.lr > 0, "schedule.lr must be positive"),
            (sch.max_steps > 0 and sch.max_epochs > 0,
             "schedule.max_steps and schedule.max_epochs must be > 0"),
            (sch.max_minutes >= 0, "schedule.max_minutes must be >= 0"),
            (sch.eval_every > 0, "schedule.eval_every must be positive"),
            (sch.amp in AMP_MODES, f"schedule.amp must be one of {AMP_MODES}"),
            (dec.score in SCORES, f"decoding.score must be one of {SCORES}"),
            (dec.num_beams >= 20, "decoding.num_beams must be >= 20 (the largest K evaluated)"),
            (dec.candidates_n > 0, "decoding.candidates_n must be positive"),
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
        if self.decoding.score == "children" or self.output_softmax == "children":
            return "children"
        return self.output_softmax

    @property
    def rerank_weight(self) -> float:
        """Weight of the item head when re-ordering the beam (0 = no item head trained)."""
        return self.item_head.score_weight if self.item_head.loss_weight > 0 else 0.0

    @property
    def decode_beams(self) -> int:
        """Beams of the final decoding (never fewer than the candidates requested)."""
        return max(self.decoding.num_beams, self.decoding.candidates_n)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Hash of the fields that change what the retriever's training produces (a checkpoint
        is resumed only when it matches); decoding-only fields and stage 2 are excluded. Hashed
        in the flat spelling of earlier versions, so their checkpoints keep resuming."""
        fields = {k: v for k, v in self.to_dict().items() if k not in SECTION_CLASSES}
        for old, (section, key) in LEGACY_KEYS.items():
            fields[old] = getattr(getattr(self, section), key)
        fields["max_train_prefixes"] = 0  # removed: hashed as its only value, so runs resume
        for name in ("candidates_n", "eval_batch_size"):
            fields.pop(name)
        if not self.item_head.distill_weight:
            fields.pop("head_distill_weight")
            fields.pop("head_distill_levels")
        if self.item_head.signals:  # absent when off: earlier checkpoints keep resuming
            fields["item_signals"] = True
            # The content signal over every item (the only one since it replaced the nearest
            # items'): hashed as before, so checkpoints of the nearest-items signal never resume.
            fields["item_signals_dense"] = True
        payload = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @staticmethod
    def upgrade_legacy_keys(data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with the flat keys of earlier versions (:data:`LEGACY_KEYS`) moved into their
        sections and the hand-set prior weights (:data:`LEGACY_PRIOR_KEYS`) and removed options
        (:data:`REMOVED_KEYS`) dropped, logging one warning for each kind. Returns ``data``
        itself when it holds no old key."""
        warn = logging.getLogger(__name__).warning
        if data.get("transition_embedding"):
            raise DataError("retriever config: transition_embedding (a learned item-to-item "
                            "term) was removed; the transition prior is fitted instead")
        if data.get("content_embedding"):
            raise DataError("retriever config: content_embedding was removed (no gain on "
                            "validation users); the content prior is fitted instead")
        schedule = data.get("schedule")
        if isinstance(schedule, dict) and "max_train_prefixes" in schedule:
            # the nested spelling, saved by the versions between the nesting and the removal
            data = {**data, "max_train_prefixes": schedule["max_train_prefixes"],
                    "schedule": {k: v for k, v in schedule.items() if k != "max_train_prefixes"}}
        if data.get("max_train_prefixes"):
            raise DataError("retriever config: max_train_prefixes was removed (no better per "
                            "step than every prefix); the retriever trains on every prefix")
        stage2 = data.get("stage2")
        if isinstance(stage2, dict) and any(k in stage2 for k in REMOVED_STAGE2_KEYS):
            if stage2.get("soft_targets"):
                raise DataError("retriever config: stage2.soft_targets was removed (it collapsed "
                                "a codebook); stage 2 feeds the history's codes softly only")
            warn("retriever config: stage2.soft_targets no longer exists; ignored")
            data = {**data, "stage2": {k: v for k, v in stage2.items()
                                       if k not in REMOVED_STAGE2_KEYS}}
        head = data.get("item_head")
        if isinstance(head, dict) and "dense_content" in head:
            if head.get("signals") and not head["dense_content"]:
                raise DataError("retriever config: item_head.dense_content: false (the content "
                                "signal among each recent item's nearest items only) was removed "
                                "(experiment 70); the signal reaches every item")
            # The only behaviour now: the key has nothing left to choose.
            data = {**data, "item_head": {k: v for k, v in head.items() if k != "dense_content"}}
        gone = [key for key in data if key in REMOVED_KEYS]
        if gone:
            warn("retriever config: %s no longer exist (options experiments rejected and the "
                 "code no longer has); ignored", ", ".join(gone))
            data = {k: v for k, v in data.items() if k not in REMOVED_KEYS}
        old = [key for key in data if key in LEGACY_PRIOR_KEYS]
        if old:
            warn("retriever config: %s no longer set the priors by hand; their weights are "
                 "fitted on validation users (retriever.priors), so these keys are ignored",
                 ", ".join(old))
            data = {k: v for k, v in data.items() if k not in LEGACY_PRIOR_KEYS}
        data, moved = move_flat_keys(data, LEGACY_KEYS, component="retriever")
        if moved:
            warn("retriever config: old flat key(s) of an earlier version read in their section "
                 "(old -> new spelling): %s", ", ".join(moved))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RetrieverConfig":
        """A validated config from a mapping (YAML section, ``retriever/config.json``); old
        flat keys are accepted (:meth:`upgrade_legacy_keys`), unknown keys refused."""
        if not isinstance(data, dict):
            raise DataError(f"the retriever config must be a mapping, got {type(data).__name__}")
        data = cls.upgrade_legacy_keys(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"retriever config: unknown field(s) {unknown}")
        return cls(**data)
