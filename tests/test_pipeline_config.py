"""Config loading, overrides, run directory and stage skipping."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.config import load_config, parse_overrides
from pipeline.stages import run_pipeline, stage_hashes
from recdata import DataError
from tests.conftest import REPO_ROOT


def test_yaml_extends_and_dotted_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ndata:\n  dataset: synthetic\n  kcore: 2\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ndata:\n  kcore: 4\n")
    cfg = load_config(tmp_path / "child.yaml", ["data.synthetic_users=30", "seed=7"])
    data = cfg.section("data")
    assert (cfg.seed, data.dataset, data.kcore, data.synthetic_users) == (7, "synthetic", 4, 30)


def test_copied_custom_config_extends_a_shipped_profile(tmp_path):
    # What a new user does: copy the template out of configs/ and point it at their folder.
    copy = tmp_path / "mine.yaml"
    copy.write_text((REPO_ROOT / "configs" / "custom.example.yaml").read_text())
    cfg = load_config(copy, ["data.path=/somewhere"])
    assert cfg.section("data").dataset == "custom"
    # A new user's catalogue gets the default recipe, its priors fitted on validation users.
    default = load_config(REPO_ROOT / "configs" / "default.yaml")
    assert cfg.section("retriever") == default.section("retriever")
    assert cfg.section("retriever").item_head.loss_weight > 0
    assert cfg.section("retriever").priors.fit
    assert cfg.section("eval").baselines == default.section("eval").baselines
    (tmp_path / "bad.yaml").write_text("extends: no-such-profile.yaml\n")
    with pytest.raises(DataError, match="no shipped profile"):
        load_config(tmp_path / "bad.yaml")


def test_unknown_key_and_bad_type_are_clear_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  kcoer: 5\n")
    with pytest.raises(DataError, match="unknown key\\(s\\) kcoer"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(DataError, match="expected int"):
        load_config(None, ["data.kcore=five"])
    with pytest.raises(DataError, match="unknown section"):
        load_config(None, ["tokeniser.codebook_size=3"])
    with pytest.raises(DataError, match="section.key=value"):
        parse_overrides(["novalue"])


def test_stage_hash_changes_only_downstream():
    a = stage_hashes(load_config(None, ["data.dataset=synthetic"]))
    b = stage_hashes(load_config(None, ["data.dataset=synthetic", "ranker.k=7"]))
    assert a["data"] == b["data"] and a["train-retriever"] == b["train-retriever"]
    assert a["train-ranker"] != b["train-ranker"] and a["evaluate"] != b["evaluate"]


def test_up_to_date_stage_is_skipped_and_from_redoes(tmp_path):
    cfg = load_config(None, ["data.dataset=synthetic", "data.synthetic_users=30", "data.synthetic_items=40"])
    assert run_pipeline(cfg=cfg, run_dir=tmp_path, until_stage="data") == [("data", "ran")]
    assert run_pipeline(cfg=cfg, run_dir=tmp_path, until_stage="data") == [("data", "skipped")]
    assert run_pipeline(cfg=cfg, run_dir=tmp_path, until_stage="data", from_stage="data") == [("data", "ran")]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["stages"]["data"]
    assert entry["status"] == "done" and "data/dataset.json" in entry["artefacts"]
    assert all(a.startswith("data/") for a in entry["artefacts"])
    assert entry["summary"]["users"] == 30
    assert (tmp_path / "config.yaml").exists()
    # A changed config re-runs the stage.
    cfg2 = load_config(None, ["data.dataset=synthetic", "data.synthetic_users=31", "data.synthetic_items=40"])
    assert run_pipeline(cfg=cfg2, run_dir=tmp_path, until_stage="data") == [("data", "ran")]


def test_every_subcommand_has_help():
    for args in (["--help"], ["data", "stats", "--help"], ["run", "--help"], ["encode", "--help"],
                 ["tokenize", "--help"], ["train-retriever", "--help"], ["train-ranker", "--help"],
                 ["evaluate", "--help"], ["variants", "--help"], ["train-bbqrec", "--help"],
                 ["recommend", "--help"], ["serve", "--help"], ["add-items", "--help"],
                 ["report", "compare", "--help"]):
        out = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=REPO_ROOT)
        assert out.returncode == 0, (args, out.stderr)
        assert "usage:" in out.stdout


def test_bad_config_exits_2_with_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("data: [1, 2\n")
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )
    assert out.returncode == 2
    errors = [l for l in out.stderr.splitlines() if "error" in l]
    assert len(errors) == 1 and "c.yaml" in errors[0] and "Traceback" not in out.stderr


def test_every_system_follows_one_history_protocol():
    from pipeline.config import config_from_dict

    cfg = config_from_dict({"eval": {"exclude_history": True}})
    assert cfg.section("ranker").exclude_seen is True
    assert cfg.section("bbqrec").exclude_history is True
    default = config_from_dict({})
    assert default.section("ranker").exclude_seen is False
    assert default.section("bbqrec").exclude_history is False
    with pytest.raises(DataError, match="follows eval.exclude_history"):
        config_from_dict({"ranker": {"exclude_seen": True}})
    assert config_from_dict({"ranker": {"exclude_seen": True}, "eval": {"exclude_history": True}}) \
        .section("ranker").exclude_seen is True


def test_stage_alone_commands_take_the_same_set_syntax(tmp_path, capsys):
    """`python -m encoders` and `python -m generative_rec.stage` read `--set key=value` as
    `mmqrec --set` does, with the same one-line error for a key their config lacks."""
    from encoders.cli import main as encoders_main
    from generative_rec.config import RetrieverConfig
    from generative_rec.stage import main as retriever_main
    from recdata.overrides import config_with_overrides

    assert encoders_main([str(tmp_path), "--set", "batchsize=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config encoders: unknown key(s) batchsize;") and "\n" not in err
    assert retriever_main([str(tmp_path), "--set", "stage2.enable=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config retriever.stage2: unknown key(s) enable;")
    assert "\n" not in err
    cfg = config_with_overrides(RetrieverConfig, ["schedule.max_steps=7", "stage2.enabled=true"],
                                "retriever", **RetrieverConfig(d_model=64).to_dict())
    assert cfg.schedule.max_steps == 7 and cfg.stage2.enabled and cfg.d_model == 64
    with pytest.raises(DataError, match="expected int"):
        config_with_overrides(RetrieverConfig, ["schedule.max_steps=lots"], "retriever")
