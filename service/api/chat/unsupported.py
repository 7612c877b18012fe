"""OpenAI parameters this service cannot honour. They are refused with a 400 naming the parameter, as
OpenAI-compatible servers without tool calling do, instead of being silently dropped (a client that sends
``tools`` and gets plain text back would mistake it for the model declining to call a tool)."""

from __future__ import annotations

from typing import Any

from service.api.chat.protocol import ChatCompletionRequest
from service.errors import invalid

_WHY = {
    "tools": "tool calling is not supported: candidates are plain text, reranked by verifiers",
    "tool_choice": "tool calling is not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "parallel_tool_calls": "tool calling is not supported",
    "response_format": "only response_format {\"type\": \"text\"} is supported (no JSON mode or schemas)",
    "logprobs": "logprobs are not returned: the selected answer is one of several samples",
    "top_logprobs": "logprobs are not returned",
}


def _harmless(name: str, value: Any) -> bool:
    """Values that ask for nothing beyond plain text (what stock clients send by default)."""
    if value is None or value is False:
        return True
    if name in {"tools", "functions"}:
        return value == []
    if name in {"tool_choice", "function_call"}:
        return value in ("none",)
    if name == "response_format":
        return isinstance(value, dict) and value.get("type") == "text"
    if name == "top_logprobs":
        return value == 0
    return name == "parallel_tool_calls"  # meaningless without tools, whatever its value


def refuse_unsupported(request: ChatCompletionRequest) -> None:
    extra = request.model_extra or {}
    for name, why in _WHY.items():
        if name in extra and not _harmless(name, extra[name]):
            raise invalid(f"{name}: {why}", name, "unsupported_parameter")
