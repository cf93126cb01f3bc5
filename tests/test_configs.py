"""Every shipped config loads, and its variants resolve to valid configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT / "configs")))
def test_config_loads_with_variants(path: Path):
    cfg = load_config(path)
    cfg.to_dict()
    for name in cfg.variants:
        cfg.variant(name).to_dict()


def test_quick_profile_is_the_demo():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "configs/ml-100k-mm.quick.yaml" in makefile
    cfg = load_config(REPO_ROOT / "configs" / "ml-100k-mm.quick.yaml")
    assert cfg.section("data").dataset == "ml-100k-mm"
    assert cfg.section("retriever").num_beams >= 20


def test_ablation_switches_reach_the_tokenizer():
    abl = REPO_ROOT / "configs" / "ablations"
    assert load_config(abl / "mmq-l2.yaml").section("tokenizer").assignment == "l2"
    assert load_config(abl / "mmq-no-ortho.yaml").section("tokenizer").ortho_loss is False
    assert load_config(abl / "mmq-no-aux.yaml").section("tokenizer").aux_loss is False
    assert load_config(abl / "mmq-specific-only.yaml").section("tokenizer").specific_only is True
    assert load_config(abl / "sid-length-12.yaml").section("tokenizer").n_vision == 4
    assert load_config(abl / "mmq-l2.yaml").variants == {}
