"""What every tokenizer-specific config section shares (``tokenizer.mmq``, ``tokenizer.rq``,
``tokenizer.bbq``): conversion to a dict and coercion from a mapping with unknown keys refused.

No torch import: the section dataclasses are nested in :class:`tokenizer.config.TokenizerConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from recdata.errors import DataError

S = TypeVar("S", bound="ConfigSection")


class ConfigSection:
    """Mixin of a tokenizer config section dataclass; ``SECTION`` is its field name in
    :class:`tokenizer.config.TokenizerConfig` (and the prefix of its error messages)."""

    SECTION = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def coerce(cls: type[S], value: "S | dict[str, Any] | None") -> S:
        """The section from itself, a mapping (YAML / config.json) or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            unknown = sorted(set(value) - known)
            if unknown:
                raise DataError(f"unknown tokenizer.{cls.SECTION} config keys: {', '.join(map(str, unknown))}")
            return cls(**value)
        raise DataError(f"tokenizer.{cls.SECTION} must be a mapping, got {type(value).__name__}")
