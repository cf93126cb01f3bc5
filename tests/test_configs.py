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
    cfg.section("tokenizer").validate()
    for name in cfg.variants:
        variant = cfg.variant(name)
        variant.to_dict()
        # A variant switching tokenizer keeps the main run's other sections, unread.
        variant.section("tokenizer").validate()


def test_quick_profile_is_the_demo():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "configs/ml-100k-mm.quick.yaml" in makefile
    cfg = load_config(REPO_ROOT / "configs" / "ml-100k-mm.quick.yaml")
    assert cfg.section("data").dataset == "ml-100k-mm"
    assert cfg.section("retriever").decoding.num_beams >= 20


def test_ablation_switches_reach_the_tokenizer():
    abl = REPO_ROOT / "configs" / "ablations"
    assert load_config(abl / "mmq-l2.yaml").section("tokenizer").mmq.assignment == "l2"
    assert load_config(abl / "mmq-no-ortho.yaml").section("tokenizer").mmq.ortho_loss is False
    assert load_config(abl / "mmq-no-aux.yaml").section("tokenizer").mmq.aux_loss is False
    assert load_config(abl / "mmq-specific-only.yaml").section("tokenizer").mmq.specific_only is True
    sid12 = load_config(abl / "sid-length-12.yaml").section("tokenizer")
    assert (sid12.mmq.n_shared, sid12.mmq.n_text, sid12.mmq.n_vision) == (4, 4, 4)
    # The ablation changes its own key only: the rest of the section comes from the parent.
    assert load_config(abl / "mmq-l2.yaml").section("tokenizer").mmq.n_text == 2
    assert load_config(abl / "mmq-l2.yaml").variants == {}


def test_every_shipped_config_extends_the_default_recipe():
    """The default profile is what every shipped config builds on: following each config's
    ``extends`` chain ends at configs/default.yaml."""
    import yaml

    for path in CONFIGS:
        seen = path
        while True:
            parent = (yaml.safe_load(seen.read_text()) or {}).get("extends")
            if parent is None:
                break
            seen = (seen.parent / parent).resolve()
        assert seen == (REPO_ROOT / "configs" / "default.yaml").resolve(), path
