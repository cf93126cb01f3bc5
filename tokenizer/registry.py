"""Name -> tokenizer class, and construction from a config."""

from __future__ import annotations

from tokenizer.base import SemanticTokenizer
from tokenizer.bbq.model import BBQTokenizer
from tokenizer.config import TokenizerConfig
from tokenizer.mmq import MMQTokenizer
from tokenizer.rqkmeans import RQKMeansTokenizer
from tokenizer.rqvae import RQVAETokenizer

TOKENIZERS: dict[str, type[SemanticTokenizer]] = {
    "mmq": MMQTokenizer,
    "rqvae": RQVAETokenizer,
    "rqkmeans": RQKMeansTokenizer,
    # Fitted with user histories by tokenizer.bbq.stage (tokenizer.stage.run dispatches there);
    # listed so that load_tokenizer rebuilds it for stage 2.
    "bbq": BBQTokenizer,
}


def build_tokenizer(cfg: TokenizerConfig, *, d_text: int, d_image: int) -> SemanticTokenizer:
    """A fresh (unfitted) tokenizer for embeddings of width ``d_text`` / ``d_image`` (0 = none)."""
    cfg.validate()
    return TOKENIZERS[cfg.name](cfg, d_text=d_text, d_image=d_image)
