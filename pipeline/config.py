"""The run configuration: one dataclass per component, composed and loaded from YAML.

A YAML file under ``configs/`` names any subset of fields; the rest keep their defaults.
Command-line overrides use dotted keys (``tokenizer.codebook_size=128``), parsed as YAML values.
A config may ``extends: other.yaml`` (path relative to itself) to inherit and override.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recdata.errors import DataError
from recdata.overrides import build_dataclass, deep_merge, parse_overrides  # noqa: F401  (re-exported)

# Section name → (module, dataclass). Imported lazily so `mmqrec data stats` stays fast.
SECTIONS: dict[str, tuple[str, str]] = {
    "data": ("recdata.config", "DataConfig"),
    "encoders": ("encoders.config", "EncoderConfig"),
    "tokenizer": ("tokenizer.config", "TokenizerConfig"),
    "retriever": ("generative_rec.config", "RetrieverConfig"),
    "ranker": ("ranking.config", "RankerConfig"),
    "eval": ("eval.config", "EvalConfig"),
    "bbqrec": ("generative_rec.bbqrec.config", "BBQRecConfig"),
}


VARIANT_KEYS = ("stages",)
"""Keys of a variant entry that are not config sections."""


def section_class(name: str) -> type:
    module, cls = SECTIONS[name]
    return getattr(importlib.import_module(module), cls)


def upgrade_legacy_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """One layer of config (a file, the ``--set`` overrides, a variant entry) with each
    section's old spellings moved to their current place, where the section's dataclass
    defines ``upgrade_legacy_keys`` (e.g. ``tokenizer.n_shared`` -> ``tokenizer.mmq.n_shared``).
    Done per layer before layers merge, so that an old spelling in one layer and the new one
    in another are the same key when merged; only the sections present are imported."""
    out = dict(raw)
    for name, values in raw.items():
        if name in SECTIONS and isinstance(values, dict):
            upgrade = getattr(section_class(name), "upgrade_legacy_keys", None)
            if upgrade is not None:
                out[name] = upgrade(values)
    variants = out.get("variants")
    if isinstance(variants, dict):
        out["variants"] = {k: upgrade_legacy_keys(v) if isinstance(v, dict) else v
                           for k, v in variants.items()}
    return out


@dataclass
class RunConfig:
    """Everything a run needs. Sections are component config dataclasses."""

    seed: int = 0
    device: str = "auto"
    sections: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra systems trained on the same data and embeddings, each in ``variants/<name>/``:
    name → {"stages": [...], and section overrides such as {"tokenizer": {"name": "rqvae"}}}."""

    def section(self, name: str) -> Any:
        if name not in self.sections:
            self.sections[name] = section_class(name)()
        return self.sections[name]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "device": self.device}
        for name in SECTIONS:
            out[name] = dataclasses.asdict(self.section(name))
        if self.variants:
            out["variants"] = self.variants
        return out

    def variants_hash(self) -> str:
        payload = json.dumps(self.variants, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def variant(self, name: str) -> "RunConfig":
        """The config of one variant: this config with the variant's section overrides."""
        overrides = {k: v for k, v in self.variants[name].items() if k not in VARIANT_KEYS}
        raw = deep_merge(self.to_dict(), overrides)
        raw.pop("variants", None)
        return config_from_dict(raw)

    def section_hash(self, name: str) -> str:
        payload = json.dumps(dataclasses.asdict(self.section(name)), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = Path(path).resolve()
    if not path.exists():
        raise DataError("config file not found", path=path)
    if path in _seen:
        raise DataError("config `extends` loop", path=path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(f"invalid YAML ({getattr(exc, 'problem', exc)})", path=path, row=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise DataError("a config file must be a mapping", path=path)
    parent = raw.pop("extends", None)
    raw = upgrade_legacy_keys(raw)
    if parent:
        raw = deep_merge(read_yaml(_extends_path(path, str(parent)), _seen + (path,)), raw)
    return raw


# The profiles shipped in the source tree, which a config copied elsewhere may extend by name.
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _extends_path(path: Path, parent: str) -> Path:
    """``extends:`` relative to the config itself, else a shipped profile by file name
    (``extends: ml-100k-mm.quick.yaml`` works from a copy outside ``configs/``)."""
    local = path.parent / parent
    if local.exists():
        return local
    shipped = SHIPPED_CONFIGS / parent
    if shipped.exists():
        return shipped
    raise DataError(f"`extends: {parent}` names no file next to this config and no shipped "
                    f"profile in {SHIPPED_CONFIGS}", path=path)


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    raw = upgrade_legacy_keys(raw)
    cfg = RunConfig(seed=int(raw.pop("seed", 0)), device=str(raw.pop("device", "auto")))
    variants = raw.pop("variants", None) or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise DataError("config: `variants` must map a name to a mapping of section overrides")
    for vname, entry in variants.items():
        unknown = sorted(set(entry) - set(SECTIONS) - set(VARIANT_KEYS))
        if unknown:
            raise DataError(f"config: variant {vname!r} has unknown key(s) {', '.join(unknown)}")
        for section in ("data", "encoders"):
            if section in entry:
                raise DataError(f"config: variant {vname!r} may not change {section!r} (variants share data and embeddings)")
    cfg.variants = variants
    for name, values in raw.items():
        if name not in SECTIONS:
            raise DataError(
                f"config: unknown section {name!r}; valid: seed, device, {', '.join(SECTIONS)}"
            )
        if not isinstance(values, dict):
            raise DataError(f"config: section {name!r} must be a mapping")
        cfg.sections[name] = build_dataclass(section_class(name), values, name)
    _one_protocol(cfg, raw)
    return cfg


# Settings that must equal eval.exclude_history, so that every system of a report is ranked
# under one protocol (seen items kept or removed alike).
PROTOCOL_FOLLOWERS = (("ranker", "exclude_seen"), ("bbqrec", "exclude_history"))


def _one_protocol(cfg: RunConfig, raw: dict[str, Any]) -> None:
    protocol = bool(cfg.section("eval").exclude_history)
    for section, field_name in PROTOCOL_FOLLOWERS:
        given = (raw.get(section) or {}).get(field_name)
        if given is not None and bool(given) != protocol:
            raise DataError(
                f"config: {section}.{field_name} ({given}) differs from eval.exclude_history "
                f"({protocol}); every system follows eval.exclude_history, set only that")
        setattr(cfg.section(section), field_name, protocol)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    raw = read_yaml(Path(path)) if path is not None else {}
    if overrides:
        raw = deep_merge(raw, upgrade_legacy_keys(parse_overrides(overrides)))
    return config_from_dict(raw)
