"""Chat messages -> prompt token ids, the same way for every local backend (so token counts agree)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.contract import ChatMessage

# Used only when the tokenizer ships no chat template and the config gives none (ChatML, like SmolLM2's).
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def load_tokenizer(path: str | Path, chat_template: str | None = None) -> Any:
    """A Hugging Face tokenizer with left padding and a chat template (the config's, its own, or ChatML)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow each prompt directly
    if chat_template:
        tokenizer.chat_template = chat_template
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage]) -> list[int]:
    """Apply the chat template with the generation prompt, then tokenize (the template carries special tokens)."""
    chat = [{"role": m.role, "content": m.content} for m in messages]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids
