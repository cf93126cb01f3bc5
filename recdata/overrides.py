"""One override syntax for every command: ``--set a.b=value`` (repeatable), values read as YAML.

``mmqrec`` applies it to the run config (``tokenizer.codebook_size=128``); the stage-alone
entry points (``python -m encoders``, ``python -m generative_rec.stage``, also under
``torchrun``) apply it to their own section (``batch_size=32``, ``stage2.enabled=true``).
Config dataclasses are built with type checks and a one-line error for an unknown key.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml

from recdata.errors import DataError


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``a.b=value`` strings → nested dict; values parsed as YAML (``true``, ``3``, ``[1,2]``)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise DataError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Build nested dataclasses from dicts and check simple scalar types."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return build_dataclass(annotation, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except DataError:
                continue
        raise DataError(f"config {where}: {value!r} does not fit {annotation}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise DataError(f"config {where}: expected {annotation.__name__}, got {value!r}")
        return value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[]") if inner is not Any and inner is not Ellipsis else v for v in value]
        return tuple(items) if origin is tuple else items
    return value


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise DataError(
            f"config {where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def config_with_overrides(cls: type, overrides: list[str], where: str, **base: Any) -> Any:
    """``cls`` built from ``base`` fields with ``--set`` strings applied on top."""
    return build_dataclass(cls, deep_merge(dict(base), parse_overrides(overrides)), where)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursively; an empty mapping clears what it overrides (e.g.
    ``variants: {}`` drops inherited variants)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and value and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def move_flat_keys(data: dict[str, Any], moves: dict[str, tuple[str, str]], *,
                   component: str) -> tuple[dict[str, Any], list[str]]:
    """``data`` with the flat keys of an earlier version (``moves``: old key -> (section, new
    key)) moved into their sections, and the list of ``"old -> section.new"`` moves made (empty:
    ``data`` itself is returned). A setting given both ways is a one-line DataError."""
    old = [key for key in data if key in moves]
    if not old:
        return data, []
    out = dict(data)
    moved = []
    for key in old:
        section, new = moves[key]
        target = out.get(section)
        if target is None:
            target = {}
        if not isinstance(target, dict):
            raise DataError(f"{component}.{section} must be a mapping to take the old key {key}, "
                            f"got {type(target).__name__}")
        if new in target:
            raise DataError(f"{component}.{key} and {component}.{section}.{new} are the same "
                            f"setting given twice; keep only {component}.{section}.{new}")
        out[section] = {**target, new: out.pop(key)}
        moved.append(f"{key} -> {section}.{new}")
    return out, moved
