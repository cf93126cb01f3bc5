"""The run directory's layout: the one place that names where each artefact lives.

Every stage, the serving API and the report ask :func:`layout` for a path instead of joining
strings, so moving an artefact is a change here and nowhere else. ``docs/architecture.md``
("Run directory") describes each file's content; the writing stage is named beside each group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory (nothing is created or checked here)."""

    root: Path

    # -- run-level files
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def metrics(self) -> Path:
        """Merged metrics of every system (written by `evaluate`)."""
        return self.root / "metrics.json"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    # -- data stage
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def items(self) -> Path:
        return self.data_dir / "items.parquet"

    @property
    def users(self) -> Path:
        return self.data_dir / "users.parquet"

    @property
    def sequences(self) -> Path:
        return self.data_dir / "sequences.parquet"

    @property
    def strata(self) -> Path:
        return self.data_dir / "strata.parquet"

    @property
    def ratings(self) -> Path:
        return self.data_dir / "ratings.parquet"

    @property
    def dataset_info(self) -> Path:
        return self.data_dir / "dataset.json"

    # -- encode stage
    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    def embeddings(self, modality: str) -> Path:
        """``text`` or ``image`` embeddings (safetensors: embeddings, mask)."""
        return self.embeddings_dir / f"{modality}.safetensors"

    @property
    def embeddings_meta(self) -> Path:
        return self.embeddings_dir / "meta.json"

    # -- tokenize stage
    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def semantic_ids(self) -> Path:
        return self.tokenizer_dir / "semantic_ids.parquet"

    @property
    def tokenizer_metrics(self) -> Path:
        return self.tokenizer_dir / "metrics.json"

    # -- train-retriever stage
    @property
    def retriever_dir(self) -> Path:
        return self.root / "retriever"

    @property
    def retriever_model(self) -> Path:
        return self.retriever_dir / "model.safetensors"

    @property
    def retriever_transitions(self) -> Path:
        """Training transition counts, when the retriever re-orders by them."""
        return self.retriever_dir / "transitions.safetensors"

    @property
    def retriever_content(self) -> Path:
        """The catalogue's content vectors and neighbours, when the retriever re-orders by them."""
        return self.retriever_dir / "content.safetensors"

    @property
    def retriever_priors(self) -> Path:
        """The priors' weights fitted on validation users, and the fit's trials."""
        return self.retriever_dir / "priors.json"

    @property
    def retriever_config(self) -> Path:
        return self.retriever_dir / "config.json"

    @property
    def retriever_metrics(self) -> Path:
        return self.retriever_dir / "metrics.json"

    @property
    def candidates(self) -> Path:
        """The retriever's ranked candidates per (user, split)."""
        return self.retriever_dir / "candidates.parquet"

    @property
    def candidates_model_only(self) -> Path:
        """The same users' lists in the model's own order, before the priors re-order them."""
        return self.retriever_dir / "candidates_model_only.parquet"

    @property
    def retriever_metrics_model_only(self) -> Path:
        """Test metrics of the model's own lists (no priors)."""
        return self.retriever_dir / "metrics_model_only.json"

    def retriever_checkpoint(self, phase: str) -> Path:
        return self.retriever_dir / "checkpoint" / f"{phase}.safetensors"

    @property
    def stage2_dir(self) -> Path:
        """Stage 2's fine-tuned tokenizer and re-assigned IDs (written by `train-retriever`;
        they replace ``tokenizer/``'s for every reader only when its marker says adopted)."""
        return self.root / "stage2"

    @property
    def stage2_marker(self) -> Path:
        return self.stage2_dir / "stage2.json"

    # -- train-ranker stage
    @property
    def ranker_dir(self) -> Path:
        return self.root / "ranker"

    @property
    def ranker_config(self) -> Path:
        return self.ranker_dir / "config.json"

    @property
    def ranker_metrics(self) -> Path:
        return self.ranker_dir / "metrics.json"

    def ranker_model(self, variant: str) -> Path:
        return self.ranker_dir / f"model_{variant}.safetensors"

    def ranker_semantic_ids(self, variant: str) -> Path:
        """The ID table a soft-indexing SID ranker variant learned."""
        return self.ranker_dir / f"semantic_ids_{variant}.parquet"

    @property
    def two_stage_ranked(self) -> Path:
        return self.ranker_dir / "two_stage_ranked.parquet"

    # -- variants and evaluate stages
    @property
    def variants_dir(self) -> Path:
        return self.root / "variants"

    def variant(self, name: str) -> Path:
        return self.variants_dir / name

    def baseline_dir(self, name: str) -> Path:
        return self.root / "baselines" / name

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    # -- add-items (serving)
    @property
    def additions_dir(self) -> Path:
        return self.root / "additions"


def layout(run_dir: Path | str) -> RunLayout:
    """The layout of ``run_dir``."""
    return RunLayout(Path(run_dir))
