"""Render docs/reference/configuration.md from the settings models, so the page cannot drift from the code.

Gateway keys come from ``service.settings.Settings`` (YAML key, environment variable, type, default,
description); worker keys from ``workers.config.WorkerConfig``.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from docs.gen.common import DOCS, main  # noqa: E402
from service.settings import Settings  # noqa: E402
from workers.config import WorkerConfig  # noqa: E402

SCRIPT = "docs/gen/config_reference.py"


def type_name(annotation: Any) -> str:
    """A short, readable spelling of a field's type (``int | None``, ``list[str]``, ``'mean' | 'majority'``)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "unset"
    if isinstance(value, list | dict | tuple) and not value:
        return "empty"
    if isinstance(value, Path):
        return str(value)
    return repr(value) if isinstance(value, str) else str(value)


def nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def rows(model: type[BaseModel], prefix: str = "", env_prefix: str | None = None) -> list[tuple[str, ...]]:
    """One row per leaf key, depth first, in declaration order."""
    out: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        env = f"{env_prefix}{name.upper()}" if env_prefix is not None else ""
        sub = nested_model(field.annotation)
        if sub is not None:
            out.extend(rows(sub, f"{key}.", f"{env}__" if env_prefix is not None else None))
            continue
        description = (field.description or "").replace("|", "\\|")
        cells = [f"`{key}`", f"`{env}`" if env else "", f"`{type_name(field.annotation)}`".replace("|", "\\|"),
                 f"`{default_text(field)}`".replace("|", "\\|"), description]
        out.append(tuple(cells) if env_prefix is not None else tuple(c for i, c in enumerate(cells) if i != 1))
    return out


def table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def render() -> str:
    gateway = rows(Settings, env_prefix="WEAVER_")
    worker = rows(WorkerConfig)
    return (
        "# Configuration reference\n\n"
        "Generated from the settings models; [Configuration](../configuration.md) explains how the files and the\n"
        "environment combine.\n\n"
        "## Gateway (`weaver serve --config FILE`, `WEAVER_CONFIG`)\n\n"
        "Every key can also be set from the environment (the second column; nested keys joined with `__`).\n"
        "Precedence: command-line flags > environment > YAML file > defaults. Unknown keys are rejected.\n\n"
        + table(("key", "environment", "type", "default", "meaning"), gateway)
        + "\n## Worker (`--worker-config FILE`, default `workers/default_config.yaml`)\n\n"
        "The worker's YAML is validated by `workers.config.WorkerConfig`; unknown keys are rejected. The\n"
        "`generation:` block is validated by the chosen backend's settings ([Generation](../generation.md)) and\n"
        "each verifier's `params` by its type ([Workers and verifiers](../workers.md)).\n\n"
        + table(("key", "type", "default", "meaning"), worker)
    )


if __name__ == "__main__":
    main(DOCS / "reference" / "configuration.md", render, SCRIPT)
