"""The tokenizer config: shared fields plus one nested section per tokenizer family, the flat
keys of earlier versions read in their new place, and the spec registry's sections."""

from __future__ import annotations

import logging

import pytest

from pipeline.config import config_from_dict, load_config
from recdata.errors import DataError
from tokenizer.bbq.config import BBQConfig
from tokenizer.config import LEGACY_KEYS, TOKENIZER_NAMES, TOKENIZER_SECTIONS, TokenizerConfig
from tokenizer.mmq_config import MMQConfig
from tokenizer.registry import TOKENIZERS, spec_of
from tokenizer.rq_config import RQConfig

LOGGER = "tokenizer.config"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_nested_sections_are_read_and_round_trip(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cfg = TokenizerConfig.from_dict({
        "name": "mmq", "codebook_size": 64,
        "mmq": {"n_shared": 1, "n_text": 4, "n_vision": 0, "assignment": "l2"},
        "rq": {"levels": 4, "hidden": [32], "balanced": False},
        "bbq": {"steps": 50, "warmup_steps": 10},
    })
    assert isinstance(cfg.mmq, MMQConfig) and isinstance(cfg.rq, RQConfig) and isinstance(cfg.bbq, BBQConfig)
    assert (cfg.mmq.n_shared, cfg.mmq.n_text, cfg.mmq.n_vision, cfg.mmq.assignment) == (1, 4, 0, "l2")
    assert (cfg.rq.levels, cfg.rq.hidden, cfg.rq.balanced) == (4, [32], False)
    assert cfg.mmq.latent_dim == MMQConfig().latent_dim  # unset keys keep their defaults
    assert cfg.section_config() is cfg.mmq
    data = cfg.to_dict()
    assert data["mmq"]["n_text"] == 4 and data["rq"]["levels"] == 4 and "n_text" not in data
    assert TokenizerConfig.from_dict(data) == cfg
    assert _warnings(caplog) == []


def test_flat_keys_of_earlier_versions_move_into_their_section_with_one_warning(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cfg = TokenizerConfig.from_dict({"name": "rqvae", "n_shared": 3, "ortho_target": "weights",
                                     "rqvae_levels": 4, "rqvae_hidden": [16], "rqvae_lr": 0.01,
                                     "rqkmeans_balanced": False, "mmq": {"n_text": 5}})
    assert (cfg.mmq.n_shared, cfg.mmq.n_text, cfg.mmq.ortho_target) == (3, 5, "weights")
    assert (cfg.rq.levels, cfg.rq.hidden, cfg.rq.lr, cfg.rq.balanced) == (4, [16], 0.01, False)
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    for spelling in ("mmq.n_shared", "mmq.ortho_target", "rq.levels", "rq.hidden", "rq.lr", "rq.balanced"):
        assert spelling in warnings[0]
    # Every old key has a home in its section's dataclass.
    for old, (section, new) in LEGACY_KEYS.items():
        assert new in {f for f in getattr(TokenizerConfig(), section).to_dict()}, old


def test_a_tokenizer_config_json_of_an_earlier_version_loads():
    """The flat layout ``tokenizer/config.json`` had before the sections existed."""
    old = {k: v for k, v in TokenizerConfig().to_dict().items() if k not in ("mmq", "rq")}
    mmq = MMQConfig(n_shared=1, n_text=3).to_dict()
    rq = RQConfig(levels=2).to_dict()
    old.update(mmq)
    old.update({"rqvae_levels": rq["levels"], "rqvae_input": rq["input"], "rqvae_hidden": rq["hidden"],
                "rqvae_latent_dim": rq["latent_dim"], "rqvae_lr": rq["lr"],
                "rqkmeans_balanced": rq["balanced"]})
    cfg = TokenizerConfig.from_dict(old)
    assert cfg.mmq == MMQConfig(n_shared=1, n_text=3) and cfg.rq == RQConfig(levels=2)
    assert cfg.to_dict() == TokenizerConfig(mmq=MMQConfig(n_shared=1, n_text=3), rq=RQConfig(levels=2)).to_dict()


@pytest.mark.parametrize("data,where", [
    ({"codebooksize": 3}, "unknown tokenizer config keys: codebooksize"),
    ({"mmq": {"n_experts": 3}}, "unknown tokenizer.mmq config keys: n_experts"),
    ({"rq": {"rqvae_levels": 3}}, "unknown tokenizer.rq config keys: rqvae_levels"),
    ({"bbq": {"stepz": 3}}, "unknown tokenizer.bbq config keys: stepz"),
    ({"mmq": 3}, "tokenizer.mmq must be a mapping"),
])
def test_unknown_keys_are_refused_at_every_level(data, where):
    with pytest.raises(DataError) as exc:
        TokenizerConfig.from_dict({"name": "mmq", **data})
    assert where in _one_line(exc)


def test_a_setting_given_both_ways_is_an_error():
    with pytest.raises(DataError) as exc:
        TokenizerConfig.from_dict({"n_shared": 1, "mmq": {"n_shared": 2}})
    assert "tokenizer.n_shared" in _one_line(exc) and "tokenizer.mmq.n_shared" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        TokenizerConfig.from_dict({"rqvae_levels": 2, "rq": {"levels": 3}})
    assert "tokenizer.rq.levels" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        config_from_dict({"tokenizer": {"n_text": 1, "mmq": {"n_text": 2}}})
    _one_line(exc)


def test_run_configs_read_both_spellings_per_layer(tmp_path, caplog):
    """YAML files, ``extends`` chains, ``--set`` overrides and variants: an old flat key in one
    layer and the nested spelling in another are the same setting."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    (tmp_path / "parent.yaml").write_text(
        "tokenizer:\n  name: mmq\n  mmq: {n_shared: 1, n_text: 2}\n")
    (tmp_path / "child.yaml").write_text(
        "extends: parent.yaml\ntokenizer:\n  n_text: 4\n  rqvae_levels: 2\n"
        "variants:\n  rq: {tokenizer: {name: rqvae, rqvae_latent_dim: 8}}\n")
    cfg = load_config(tmp_path / "child.yaml", ["tokenizer.n_vision=0", "tokenizer.mmq.latent_dim=16"])
    tok = cfg.section("tokenizer").validate()
    assert (tok.mmq.n_shared, tok.mmq.n_text, tok.mmq.n_vision, tok.mmq.latent_dim) == (1, 4, 0, 16)
    assert tok.rq.levels == 2
    variant = cfg.variant("rq").section("tokenizer").validate()
    assert variant.name == "rqvae" and (variant.rq.levels, variant.rq.latent_dim) == (2, 8)
    assert variant.mmq == tok.mmq  # inherited, unread by rqvae
    assert _warnings(caplog)
    with pytest.raises(DataError) as exc:
        load_config(tmp_path / "child.yaml", ["tokenizer.n_text=3", "tokenizer.mmq.n_text=5"])
    _one_line(exc)


def test_only_the_chosen_tokenizers_section_is_validated():
    bad_mmq = {"mmq": {"assignment": "dot"}}
    for name in ("rqvae", "rqkmeans", "bbq"):
        TokenizerConfig.from_dict({"name": name, **bad_mmq})
    with pytest.raises(DataError) as exc:
        TokenizerConfig.from_dict({"name": "mmq", **bad_mmq})
    assert "tokenizer.mmq.assignment" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        TokenizerConfig.from_dict({"name": "rqkmeans", "rq": {"input": "image"}})
    assert "tokenizer.rq.input" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        TokenizerConfig.from_dict({"name": "bbq", "bbq": {"steps": 10, "warmup_steps": 10}})
    assert "tokenizer.bbq.warmup_steps" in _one_line(exc)


@pytest.mark.parametrize("name", TOKENIZER_NAMES)
def test_every_registered_spec_reads_a_section_that_validates(name):
    spec = TOKENIZERS[name]
    cfg = TokenizerConfig(name=name).validate()
    assert spec.section == TOKENIZER_SECTIONS[name]
    assert isinstance(cfg.section_config(), spec.config)
    assert cfg.section_config() is getattr(cfg, spec.section)
    spec.config().validate()
    assert callable(spec.fit)


def test_the_registry_and_the_config_know_the_same_tokenizers():
    assert set(TOKENIZERS) == set(TOKENIZER_NAMES) == set(TOKENIZER_SECTIONS)


def test_an_unknown_tokenizer_name_is_a_one_line_data_error(tmp_path):
    from tokenizer.stage import run

    with pytest.raises(DataError) as exc:
        spec_of("vqgan")
    assert "tokenizer.name" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        TokenizerConfig.from_dict({"name": "vqgan"})
    assert "tokenizer.name" in _one_line(exc)
    with pytest.raises(DataError) as exc:
        run(cfg=TokenizerConfig(name="vqgan"), run_dir=tmp_path, seed=0, device="cpu")
    assert "tokenizer.name" in _one_line(exc)
