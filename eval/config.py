"""Configuration of the evaluation stage: protocol, baselines and report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SASRecConfig:
    """SASRec baseline trained through RecBole (cross-entropy over the full catalogue).

    The defaults are the standard SASRec sizes; :meth:`quick` gives a setting that trains on
    MovieLens-100K in a few minutes on two CPU cores.
    """

    epochs: int = 50
    """Maximum training epochs (early stopping on the validation metric may end sooner)."""
    hidden_size: int = 64
    """Width of item embeddings and of the transformer."""
    inner_size: int = 256
    """Width of the feed-forward layer inside each transformer block."""
    n_layers: int = 2
    """Transformer blocks."""
    n_heads: int = 2
    """Attention heads per block."""
    max_seq_length: int = 50
    """Most recent history items fed to the model (older ones are dropped)."""
    max_train_prefixes: int = 0
    """Training examples per user: only the most recent N prefixes of the training sequence
    (0 = every prefix, RecBole's standard augmentation)."""
    hidden_dropout: float = 0.2
    """Dropout on embeddings and hidden states."""
    attn_dropout: float = 0.2
    """Dropout on attention weights."""
    learning_rate: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    train_batch_size: int = 256
    """Training examples (history prefix → next item) per batch."""
    eval_batch_size: int = 512
    """Users per batch when scoring the full catalogue."""
    stopping_step: int = 5
    """Stop after this many validation checks without improvement (best epoch is kept)."""
    valid_metric: str = "NDCG@10"
    """RecBole metric used on the validation users for early stopping."""
    device: str = "inherit"
    """"inherit" uses the stage's device; otherwise "cpu", "cuda" or "auto"."""
    threads: int = 0
    """CPU threads for torch while SASRec trains (0 = leave torch's setting unchanged)."""

    @classmethod
    def quick(cls) -> "SASRecConfig":
        """A short schedule for demos and CI on CPU.

        Training cost grows with (training prefixes) x max_seq_length, because RecBole's SASRec
        encodes every prefix as its own padded sequence; the quick setting shortens the history
        window to 20, trains on each user's 30 most recent prefixes and runs 3 epochs.
        """
        return cls(epochs=3, max_seq_length=20, max_train_prefixes=30, train_batch_size=512,
                   learning_rate=2e-3, stopping_step=2)


@dataclass
class HeuristicConfig:
    """Grids the heuristic's weights are fitted over on validation users (a one-value grid fixes
    a weight; 0 switches a term off)."""

    transition_weights: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    """Weights of ``log(1 + count(last item -> j))``."""
    content_weights: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0])
    """Weights of the content similarity to the recent history."""
    content_history: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 8])
    """Numbers of recent history items whose similarity counts."""
    content_decay: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.85, 1.0])
    """Ratios of an older history item's weight to the next more recent one's."""
    popularity_weights: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.5, 1.0])
    """Weights of ``log(1 + training count of j)``."""
    rounds: int = 2
    """Passes of coordinate ascent."""
    fit_users: int = 5000
    """Validation users the weights are fitted on (a seeded sample when there are more; 0 =
    all): every candidate setting ranks the whole catalogue for each of them."""

    def __post_init__(self) -> None:
        _check_grids(self, "heuristic", ("transition_weights", "content_weights",
                                         "content_history", "content_decay",
                                         "popularity_weights"))


@dataclass
class ContentKnnConfig:
    """Grids the ``content_knn`` baseline's history length H and decay λ are fitted over on
    validation users: the heuristic's content term alone (its transition and popularity weights
    fixed at 0), which ranks items never seen in training as readily as any other."""

    content_history: list[int] = field(default_factory=lambda: [1, 2, 3, 5, 8])
    """Numbers H of recent history items whose similarity counts."""
    content_decay: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.85, 1.0])
    """Ratios λ of an older history item's weight to the next more recent one's."""
    rounds: int = 2
    """Passes of coordinate ascent."""
    fit_users: int = 5000
    """Validation users H and λ are fitted on (a seeded sample when there are more; 0 = all)."""

    def __post_init__(self) -> None:
        _check_grids(self, "content_knn", ("content_history", "content_decay"))

    def as_heuristic(self) -> HeuristicConfig:
        """The heuristic's grids that make it this baseline: content weight 1, the others 0."""
        return HeuristicConfig(transition_weights=[0.0], content_weights=[1.0],
                               content_history=list(self.content_history),
                               content_decay=list(self.content_decay), popularity_weights=[0.0],
                               rounds=self.rounds, fit_users=self.fit_users)


def _check_grids(cfg: HeuristicConfig | ContentKnnConfig, section: str,
                 names: tuple[str, ...]) -> None:
    """A one-line DataError unless each of ``cfg``'s grids ``names`` is a non-empty list of
    values >= 0, its history lengths >= 1 and its decays in (0, 1]."""
    from recdata.errors import DataError

    for name in names:
        grid = getattr(cfg, name)
        if not isinstance(grid, list) or not grid or min(grid) < 0:
            raise DataError(f"eval.{section}.{name} must be a non-empty list of values >= 0")
    if min(cfg.content_history) < 1 or not all(0 < d <= 1 for d in cfg.content_decay):
        raise DataError(f"eval.{section}: content_history must be >= 1 and content_decay "
                        "in (0, 1]")


@dataclass
class EvalConfig:
    """How systems are evaluated and reported.

    Every system (the generative retriever and the baselines) is scored on the same
    leave-one-out test users with full-catalogue rankings and the same popularity strata.
    """

    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    """Cut-offs for Recall@K and NDCG@K."""
    exclude_history: bool = False
    """The evaluation protocol of every system: remove each user's history items from the
    ranked lists (baselines, generative retrievers, BBQRec and the two-stage lists alike; the
    run config copies it into ``bbqrec.exclude_history`` and ``ranker.exclude_seen``). Off by
    default, as in TIGER's protocol; stated in the report either way."""
    baselines: list[str] = field(
        default_factory=lambda: ["pop", "heuristic", "sasrec", "sasrec_priors"])
    """Baselines to run (registry names in eval.baselines.BASELINES): most-popular, the
    no-model rule (:mod:`eval.heuristic`), SASRec, and SASRec's candidates re-ordered by the
    priors fitted on validation users as the generative retriever's are. Also available:
    ``content_knn``, the rule's content term alone (similarity to the recent history), which
    can recommend items never seen in training."""
    reuse_baselines: bool = True
    """Reuse a baseline's stored results when its config and the data are unchanged."""
    retriever_name: str | None = None
    """Name of the generative retriever in the report; None → read from retriever/metrics.json
    (key "model"), else "generative"."""
    bootstrap_samples: int = 1000
    """Bootstrap resamples of the test users for confidence intervals."""
    confidence: float = 0.95
    """Confidence level of the intervals."""
    report: bool = True
    """Write report/report.md and report/report.html."""
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    """Settings of the SASRec baseline."""
    heuristic: HeuristicConfig = field(default_factory=HeuristicConfig)
    """Grids the no-model rule's weights are fitted over."""
    content_knn: ContentKnnConfig = field(default_factory=ContentKnnConfig)
    """Grids the content-only baseline's history length and decay are fitted over."""

    def __post_init__(self) -> None:
        if isinstance(self.sasrec, dict):
            self.sasrec = SASRecConfig(**self.sasrec)
        if isinstance(self.heuristic, dict):
            self.heuristic = HeuristicConfig(**self.heuristic)
        if isinstance(self.content_knn, dict):
            self.content_knn = ContentKnnConfig(**self.content_knn)
        self.ks = [int(k) for k in self.ks]
        if not self.ks or min(self.ks) <= 0:
            from recdata.errors import DataError

            raise DataError(f"eval.ks must be positive cut-offs, got {self.ks}")

    @property
    def depth(self) -> int:
        """Length of the stored ranked lists (the largest cut-off)."""
        return max(self.ks)
