"""The ``tokenize`` stage: fit the configured tokenizer on a run directory and write
``run_dir/tokenizer/`` (weights, config, semantic_ids.parquet, metrics).

Which routine fits it is the tokenizer's spec in :data:`tokenizer.registry.TOKENIZERS`: the
content tokenizers (mmq, rqvae, rqkmeans) read the catalogue embeddings
(:func:`tokenizer.fit.fit_content`), BBQ also the training histories (:func:`tokenizer.bbq.stage.run`).
"""

from __future__ import annotations

from pathlib import Path

from tokenizer.config import TokenizerConfig
from tokenizer.registry import spec_of


def run(*, cfg: TokenizerConfig, run_dir: Path, seed: int = 0, device: str = "auto") -> dict:
    """Train the tokenizer ``cfg.name`` on ``run_dir`` and write its artefacts; returns the
    headline metrics."""
    cfg.validate()
    return spec_of(cfg.name).fit(cfg=cfg, run_dir=Path(run_dir), seed=seed, device=device)
