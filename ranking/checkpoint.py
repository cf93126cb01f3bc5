"""Saving and loading trained rankers (``ranker/model_<variant>.safetensors`` + ``config.json``).

A checkpoint is self-contained: besides the weights it holds the item field ids (hence the SID
codes the model was trained with) and the user feature table as buffers, and ``config.json``
holds the shapes needed to rebuild the module. Loading reads no tokenizer or data artefact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from recdata.errors import DataError
from recdata.io import load_tensors, read_json, save_tensors
from recdata.layout import layout
from ranking.config import RankerConfig
from ranking.models import build_model


def model_path(run_dir: Path, variant: str) -> Path:
    return layout(run_dir).ranker_model(variant)


def save_model(*, run_dir: Path, variant: str, model: nn.Module, spec: dict[str, Any]) -> Path:
    return save_tensors(
        model_path(run_dir, variant),
        model.state_dict(),
        metadata={"variant": variant, "spec": json.dumps(spec, sort_keys=True)},
    )


def read_ranker_config(run_dir: Path) -> dict[str, Any]:
    return read_json(layout(run_dir).ranker_config)


def pick_variant(saved: dict[str, Any], wanted: str | None) -> str:
    variants = list(saved.get("variants", {}))
    if not variants:
        raise DataError("no trained ranker variant recorded", path="ranker/config.json")
    if wanted is None:
        wanted = saved.get("serve_variant") or variants[0]
    if wanted not in variants:
        raise DataError(f"ranker variant {wanted!r} was not trained; available: {variants}")
    return wanted


def load_model(
    *, run_dir: Path, variant: str | None = None, device: str = "cpu"
) -> tuple[nn.Module, dict[str, Any], RankerConfig, str]:
    """(model in eval mode, its spec, the ranker config, the variant name)."""
    saved = read_ranker_config(run_dir)
    variant = pick_variant(saved, variant)
    spec = saved["variants"][variant]["spec"]
    model = build_model(spec)
    tensors = load_tensors(model_path(run_dir, variant), device="cpu")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DataError(f"checkpoint does not match ranker/config.json ({first})", path=model_path(run_dir, variant)) from None
    model.to(device).eval()
    return model, spec, RankerConfig.from_dict(saved["ranker"]), variant
