"""Render docs/reference/api.md from the gateway's own OpenAPI schema (FastAPI), so the page cannot drift.

Builds the app without starting it (no models are loaded), reads ``app.openapi()`` and writes one section
per operation: its summary, the request body's fields and the responses it declares.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from docs.gen.common import DOCS, main  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402

SCRIPT = "docs/gen/api_reference.py"


def ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def schema_type(schema: dict[str, Any]) -> str:
    """A compact type for a property schema: ``string``, ``integer | null``, ``array[Message]``, ``Verification``."""
    name = ref_name(schema)
    if name:
        return name
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return " | ".join(schema_type(s) for s in schema[combinator])
    kind = schema.get("type")
    if kind == "array":
        return f"array[{schema_type(schema.get('items', {}))}]"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    return str(kind) if kind else "any"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def fields_table(name: str, components: dict[str, Any]) -> str:
    schema = components.get(name, {})
    props: dict[str, Any] = schema.get("properties", {})
    if not props:
        return ""
    required = set(schema.get("required", []))
    lines = [f"**`{name}`**" + (f": {cell(schema['description'])}" if schema.get("description") else ""), "",
             "| field | type | required | default | description |", "|---|---|---|---|---|"]
    for field, prop in props.items():
        default = f"`{prop['default']!r}`" if "default" in prop else ""
        lines.append(
            f"| `{field}` | `{cell(schema_type(prop))}` | {'yes' if field in required else ''} | {cell(default)} "
            f"| {cell(prop.get('description', ''))} |"
        )
    return "\n".join(lines) + "\n"


def referenced_models(name: str, components: dict[str, Any], seen: set[str]) -> list[str]:
    """``name`` and every model it references, depth first, each once."""
    if name in seen or name not in components:
        return []
    seen.add(name)
    out = [name]
    stack = [components[name]]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            child = ref_name(node)
            if child:
                out.extend(referenced_models(child, components, seen))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def render() -> str:
    spec = create_app(Settings()).openapi()
    components: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    parts = [
        "# API reference\n\n",
        f"Generated from the gateway's OpenAPI schema ({spec['info']['title']} {spec['info']['version']}); a running\n"
        "server serves the same schema at `/openapi.json` and an explorer at `/docs`. [API](../api.md) explains\n"
        "the behaviour; errors always have the shape `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`.\n\n",
        "| method | path | summary |\n|---|---|---|\n",
    ]
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    for path, method, op in operations:
        parts.append(f"| {method.upper()} | `{path}` | {cell(op.get('summary', ''))} |\n")
    seen: set[str] = set()
    for path, method, op in operations:
        parts.append(f"\n## {method.upper()} `{path}`\n\n")
        if op.get("description"):
            parts.append(op["description"].strip() + "\n\n")
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        body_name = ref_name(body)
        if body_name:
            parts.append(f"Request body: `{body_name}`.\n\n")
        responses = op.get("responses", {})
        if responses:
            listed = []
            for status, response in responses.items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                model = ref_name(schema)
                listed.append(f"{status}" + (f" (`{model}`)" if model else "") + f": {response.get('description', '')}")
            parts.append("Responses: " + "; ".join(cell(x) for x in listed) + ".\n\n")
        for name in referenced_models(body_name, components, seen) if body_name else []:
            table = fields_table(name, components)
            if table:
                parts.append(table + "\n")
    return "".join(parts)


if __name__ == "__main__":
    main(DOCS / "reference" / "api.md", render, SCRIPT)
