"""Real components for the reliability tests: a tiny generator, worker configs, a live HTTP server, a private Redis.

Everything here is real (a randomly initialised Llama with a character tokenizer, the real worker, uvicorn
on a free port, a redis-server binary on a free port); nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support import free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_SPECIAL = ["<|im_start|>", "<|im_end|>", "<unk>"]
_ALPHABET = string.ascii_letters + string.digits + " \n?.,:;!'\"+-*=/#()<>{}[]_"
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_generator(path: Path, context: int = 512) -> Path:
    """A random 2-layer Llama with a one-character-per-token ChatML tokenizer (code paths, not quality)."""
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(_SPECIAL + list(_ALPHABET))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": _SPECIAL[:2]})
    tokenizer.chat_template = _CHATML
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"],
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.suppress_tokens = [vocab["<|im_start|>"], vocab["<unk>"]]
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


CHEAP_VERIFIERS: list[dict[str, Any]] = [
    {"name": "answer_agreement", "type": "answer_agreement"},
    {"name": "math_check", "type": "math_check"},
    {"name": "code_tests", "type": "code_tests", "params": {"test_timeout_s": 2, "memory_mb": 256}},
]


def write_worker_config(path: Path, *, generator_dir: Path | None = None,
                        verifiers: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    """A worker YAML: the cheap CPU verifiers (plus code_tests) and, optionally, the tiny generator."""
    verifiers = verifiers if verifiers is not None else CHEAP_VERIFIERS
    names = [v["name"] for v in verifiers]
    config: dict[str, Any] = {
        "name": "reliability-worker",
        "generation": None if generator_dir is None else {
            "backend": "transformers", "model": str(generator_dir), "device": "cpu", "dtype": "float32",
            "max_batch_size": 8, "num_threads": 1},
        "verifiers": verifiers,
        "profiles": {"cheap": [n for n in names if n in ("answer_agreement", "math_check")] or names[:1],
                     "all": names},
        "default_profile": "cheap",
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path




@contextmanager
def live_server(app: Any, log_config: dict[str, Any] | None = None, log_level: str = "warning") -> Iterator[str]:
    """The ASGI app under a real uvicorn server on a free port (lifespan included); yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, lifespan="on",
                            log_config=log_config)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


class OwnRedis:
    """A private redis-server on a free port (never the shared 6379 one), no persistence; stop/start at will."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server binary not found")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
