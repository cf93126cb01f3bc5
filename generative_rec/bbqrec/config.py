"""Configuration of BBQRec: a SASRec backbone whose self-attention is reweighted by the
discretised similarity of the semantic IDs of the two attended positions (method.md section 7).

Every field maps 1:1 onto the ``bbqrec:`` section of a run's YAML config. Backbone sizes are the
usual SASRec ones (as the SASRec baseline in ``eval.config.SASRecConfig``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from recdata.errors import DataError

SIMILARITIES = ("shared", "prefix")


@dataclass
class BBQRecConfig:
    """BBQRec model, training and evaluation settings."""

    name: str = "bbqrec"
    """System name in the report and output folder under the run directory
    (``RUN_DIR/<name>/``); the no-reweighting ablation uses ``"bbqrec_noreweight"``."""

    # -- backbone (SASRec) --
    hidden: int = 64
    """Width of item / position embeddings and of the transformer."""
    layers: int = 2
    """Transformer blocks."""
    heads: int = 2
    """Attention heads per block."""
    inner: int = 256
    """Width of the feed-forward layer inside each block."""
    max_len: int = 50
    """Most recent history items fed to the model (older ones are dropped)."""
    dropout: float = 0.2
    """Dropout on embeddings and hidden states."""
    attn_dropout: float = 0.2
    """Dropout on attention weights."""

    # -- discretised similarity reweighting --
    reweight: bool = True
    """Reweight attention by SID similarity. False gives the plain SASRec backbone (the
    ``bbqrec_noreweight`` ablation): same code path with the bias switched off."""
    similarity: str = "shared"
    """How two items' SIDs are compared (collision token excluded): "shared" = number of
    positions whose codes agree (0..L; suits parallel codes such as MMQ's), "prefix" = length
    of the longest common prefix (0..L; suits residual codes such as BBQ's and RQ-VAE's)."""
    table_init: float = 0.0
    """Initial value of every entry of the learned bias table. 0 makes the model start as
    exactly the plain backbone (attention unchanged) and learn how much similarity matters."""
    per_head: bool = True
    """One bias table per layer and head (else one per layer, shared by its heads)."""

    # -- optimisation --
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay (not applied to the bias table, which starts at zero)."""
    table_lr: float = 1e-2
    """Adam learning rate of the similarity bias table. Its few scalars each receive the summed
    gradient of every attention pair; at the backbone's rate they are still drifting when early
    stopping ends training (about 0.3 after 300 steps), hence a larger rate."""
    epochs: int = 200
    """Maximum training epochs (early stopping usually ends sooner)."""
    batch_size: int = 128
    """Training windows (up to max_len positions, each a next-item target) per batch."""
    patience: int = 5
    """Stop after this many epochs without a better validation NDCG@10; the best epoch's
    weights are kept (0 = never stop early)."""
    eval_batch_size: int = 256
    """Users per batch when scoring the full catalogue."""
    max_seconds: float = 0.0
    """Wall-clock training budget in seconds (0 = none); checked after each epoch."""

    # -- evaluation --
    top_k: int = 20
    """Length of the stored ranked lists (and the largest cut-off evaluated)."""
    exclude_history: bool = False
    """Remove a user's history items from the ranking; in a run it follows
    ``eval.exclude_history`` (one protocol for every system)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "BBQRecConfig":
        checks = [
            (min(self.hidden, self.layers, self.heads, self.inner, self.max_len) > 0, "sizes must be positive"),
            (self.hidden % self.heads == 0, "hidden must be divisible by heads"),
            (0.0 <= self.dropout < 1.0 and 0.0 <= self.attn_dropout < 1.0, "dropouts must lie in [0, 1)"),
            (self.similarity in SIMILARITIES, f"similarity must be one of {SIMILARITIES}"),
            (self.lr > 0 and self.table_lr > 0 and self.weight_decay >= 0,
             "lr and table_lr must be > 0, weight_decay >= 0"),
            (self.epochs > 0 and self.batch_size > 0 and self.eval_batch_size > 0, "epochs and batch sizes must be > 0"),
            (self.patience >= 0 and self.max_seconds >= 0, "patience and max_seconds must be >= 0"),
            (bool(self.name) and self.name.replace("_", "").replace("-", "").isalnum(),
             "name must be a non-empty folder name of letters, digits, '_' or '-'"),
            (self.top_k >= 20, "top_k must be >= 20 (the largest K evaluated)"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(f"bbqrec config: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
