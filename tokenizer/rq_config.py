"""Configuration of the residual-quantisation baselines, RQ-VAE (TIGER) and RQ-k-means
(``tokenizer.rq`` in a run config).

No torch import, so that ``tokenizer/config.py`` can nest it (``TokenizerConfig.rq``). Fields
shared with the other tokenizers (``codebook_size``, ``beta``, ``codebook_weight``, ``kmeans_*``,
``warmup_epochs``, ``dead_code_reset``, ``epochs``, ``batch_size``, ...) are read from the
enclosing :class:`tokenizer.config.TokenizerConfig`; only the two baselines' own knobs live here.
Defaults follow TIGER (3 levels, a 512-256-128 encoder, a 32-d latent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recdata.errors import DataError
from tokenizer.section import ConfigSection


@dataclass
class RQConfig(ConfigSection):
    """Every knob of RQ-VAE and RQ-k-means (``tokenizer/rqvae.py``, ``tokenizer/rqkmeans.py``)."""

    SECTION = "rq"

    levels: int = 3
    """Residual levels, one SID token each before the collision token (TIGER: 3)."""
    input: str = "concat"
    """What both baselines quantise: "concat" ([text; image], image zero-filled where missing,
    i.e. the training mean after standardisation) or "text" (text embedding only)."""
    hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    """RQ-VAE encoder hidden widths (TIGER: 512, 256, 128; the decoder mirrors them)."""
    latent_dim: int = 32
    """RQ-VAE latent width (TIGER: 32)."""
    lr: float = 1e-3
    """RQ-VAE learning rate (the shared ``tokenizer.lr`` is MMQ's and BBQ's): at 3e-3 its
    codebooks collapse right after k-means initialisation and it ends with more collisions on
    amazon-beauty."""
    balanced: bool = True
    """RQ-k-means: cap cluster sizes at ceil(N / K) while fitting (balanced k-means, as in
    OneRec's RQ-Kmeans); plain k-means on 1,664-d inputs leaves most items in one cluster."""

    def validate(self) -> "RQConfig":
        """Raise a one-line DataError for an unusable configuration; return self."""
        if self.input not in ("concat", "text"):
            raise DataError(f"tokenizer.rq.input must be 'concat' or 'text', got {self.input!r}")
        for name in ("levels", "latent_dim"):
            if getattr(self, name) < 1:
                raise DataError(f"tokenizer.rq.{name} must be >= 1, got {getattr(self, name)}")
        if any(int(w) < 1 for w in self.hidden):
            raise DataError(f"tokenizer.rq.hidden widths must be >= 1, got {list(self.hidden)}")
        if self.lr <= 0:
            raise DataError(f"tokenizer.rq.lr must be > 0, got {self.lr}")
        return self
