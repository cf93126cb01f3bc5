"""The tokenizers by name: a :class:`TokenizerSpec` each (model class, config section, fit
routine), building a tokenizer from a config and rebuilding a run's fitted one.

Adding a tokenizer: a model class (a :class:`tokenizer.base.SemanticTokenizer`), its config
section (a :class:`tokenizer.section.ConfigSection` dataclass nested in
:class:`tokenizer.config.TokenizerConfig`, with the name -> section entry in
:data:`tokenizer.config.TOKENIZER_SECTIONS`), and a fit routine with the stage signature —
:func:`tokenizer.fit.content_fit` when the catalogue embeddings are all it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recdata.errors import DataError
from recdata.io import load_tensors, read_json
from tokenizer.base import SemanticTokenizer
from tokenizer.bbq import stage as bbq_stage
from tokenizer.bbq.config import BBQConfig
from tokenizer.bbq.model import BBQTokenizer
from tokenizer.config import TOKENIZER_NAMES, TokenizerConfig
from tokenizer.export import CONFIG_FILE, MODEL_FILE, tokenizer_dir
from tokenizer.fit import FitRoutine, content_fit
from tokenizer.mmq import MMQTokenizer
from tokenizer.mmq_config import MMQConfig
from tokenizer.rq_config import RQConfig
from tokenizer.rqkmeans import RQKMeansTokenizer
from tokenizer.rqvae import RQVAETokenizer
from tokenizer.sid import final_ids_dir


@dataclass(frozen=True)
class TokenizerSpec:
    """One tokenizer: what it is, which config section it reads, how the stage fits it."""

    model: type[SemanticTokenizer]
    """The model class, built as ``model(cfg, d_text=..., d_image=...)``."""
    config: type
    """The class of its config section (``TokenizerConfig.<config.SECTION>``)."""
    fit: FitRoutine
    """``fit(*, cfg, run_dir, seed, device) -> dict``: train it on a run directory, write
    ``run_dir/tokenizer/`` and return the headline metrics (the ``tokenize`` stage)."""

    @property
    def section(self) -> str:
        """The name of its section in :class:`TokenizerConfig` (``mmq``, ``rq``, ``bbq``)."""
        return self.config.SECTION


TOKENIZERS: dict[str, TokenizerSpec] = {
    "mmq": TokenizerSpec(MMQTokenizer, MMQConfig, content_fit(MMQTokenizer)),
    "rqvae": TokenizerSpec(RQVAETokenizer, RQConfig, content_fit(RQVAETokenizer)),
    "rqkmeans": TokenizerSpec(RQKMeansTokenizer, RQConfig, content_fit(RQKMeansTokenizer)),
    # Also reads the training histories, so it has its own fit routine.
    "bbq": TokenizerSpec(BBQTokenizer, BBQConfig, bbq_stage.run),
}


def spec_of(name: str) -> TokenizerSpec:
    """The spec of tokenizer ``name``; a one-line DataError for an unknown name."""
    if name not in TOKENIZERS:
        raise DataError(f"tokenizer.name must be one of {TOKENIZER_NAMES}, got {name!r}")
    return TOKENIZERS[name]


def build_tokenizer(cfg: TokenizerConfig, *, d_text: int, d_image: int) -> SemanticTokenizer:
    """A fresh (unfitted) tokenizer for embeddings of width ``d_text`` / ``d_image`` (0 = none)."""
    cfg.validate()
    return spec_of(cfg.name).model(cfg, d_text=d_text, d_image=d_image)


def load_tokenizer(run_dir: Path, *, device: str = "cpu", stage1: bool = False) -> SemanticTokenizer:
    """Rebuild the run's tokenizer (eval mode, on ``device``): the one that made its final IDs
    (:func:`tokenizer.sid.final_ids_dir`), or with ``stage1`` the `tokenize` stage's own."""
    out = tokenizer_dir(run_dir) if stage1 else final_ids_dir(run_dir)
    info = read_json(out / CONFIG_FILE)
    try:
        cfg = TokenizerConfig.from_dict(dict(info["config"]))
        model = build_tokenizer(cfg, d_text=int(info["d_text"]), d_image=int(info["d_image"]))
    except KeyError as exc:
        raise DataError(f"missing key {exc} in tokenizer config", path=out / CONFIG_FILE) from None
    state = load_tensors(out / MODEL_FILE)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(f"weights do not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})",
                        path=out / MODEL_FILE)
    return model.to(device).eval()
