"""``KEY=VALUE`` overrides of the v2 label model's fit options (``weaver fit/eval --v2-option``).

Every ingredient of version 2 is switchable (``WeaverV2Config``); these overrides let a user rerun an ablation
row of docs/label-model.md on their own scores without writing Python. pydantic checks each value against the
field's type, so a misspelt switch or a bad value is an error naming the field, never a silently ignored one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from pydantic import TypeAdapter, ValidationError

from models.weaver_v2 import WeaverV2Config

LIST_OPTIONS = frozenset({"multi_answer_tasks"})  # comma-separated on the command line


def option_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(WeaverV2Config))


def v2_config(options: Sequence[str]) -> WeaverV2Config:
    """The default config with ``KEY=VALUE`` overrides applied (``within_association=false``, ``max_bins=2``,
    ``multi_answer_tasks=code,sql``); a later override of the same key wins. ValueError says what is wrong."""
    known = option_names()
    values: dict[str, Any] = {}
    for option in options:
        key, sep, raw = option.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"v2 option {option!r}: expected KEY=VALUE, e.g. within_association=false")
        if key not in known:
            raise ValueError(f"unknown v2 option {key!r}; choose from {', '.join(known)}")
        raw = raw.strip()
        values[key] = [part.strip() for part in raw.split(",") if part.strip()] if key in LIST_OPTIONS else raw
    try:
        config: WeaverV2Config = TypeAdapter(WeaverV2Config).validate_python({**asdict(WeaverV2Config()), **values})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ValueError(f"bad v2 option: {problems}") from None
    return config


def changed_options(config: WeaverV2Config) -> dict[str, Any]:
    """The fields of ``config`` that differ from the default (what an eval report should say it ran with)."""
    default = asdict(WeaverV2Config())
    return {key: value for key, value in asdict(config).items() if value != default[key]}


def describe_options(changed: dict[str, Any]) -> str:
    """``changed_options``' result as the CLI prints it."""
    return "fit options changed from the default: " + (
        ", ".join(f"{key}={value}" for key, value in changed.items()) or "none (the values given are the defaults)")
