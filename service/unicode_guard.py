"""Reject request bodies holding text that is not valid Unicode (lone surrogates) with a 400 naming the field.

JSON may spell a lone surrogate (``"\\ud800"``); Python decodes it into a ``str`` that cannot be encoded
as UTF-8, and every later encode (the score-cache hash, the tokenizer, response serialization) raised a
500. This pure ASGI middleware reads the (already size-limited) body once, scans the raw bytes for an
escaped surrogate, and only when one is present parses the JSON to find the field; bodies without one
pass through untouched. The body is replayed to the app unchanged, then ``receive`` is handed back so
disconnect detection keeps working.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import APIError, error_response

_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def first_unencodable(value: Any, path: str = "") -> str | None:
    """The path (``messages[0].content``) of the first string or key that UTF-8 cannot encode, else None."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return where or "body"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                name = f"{where}.{key}" if where else str(key)
                if not _encodable(key):
                    return where or "body"
                stack.append((child, name))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class UnicodeGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if _ESCAPED_SURROGATE.search(body):
            field = _field_with_surrogate(body)
            if field is not None:
                error = APIError(400, f"{field} contains text that is not valid Unicode (a lone UTF-16 surrogate such "
                                      "as \\ud800); send well-formed UTF-8 text", param=field, code="invalid_unicode")
                await error_response(error)(scope, receive, send)
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _field_with_surrogate(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None  # not JSON: the endpoint answers its own parse error
    return first_unencodable(parsed)
