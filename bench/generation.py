"""Generation benchmark: N samples of one prompt as one request (n=N) versus N requests of n=1.

    python bench/generation.py [--backend transformers|vllm|both] [--n 8] [--max-tokens 64] [--repeats 2]

Model: the embedded SmolLM2-135M-Instruct (converted once to safetensors; the load time printed is the
cached reload). Modes, each on a warm model, best of ``--repeats``:
  one request, n=N           the N samples share the prompt (transformers: one batch; vLLM: one prefill)
  N concurrent requests      N unseeded requests with n=1 at once (transformers coalesces them into a batch)
  N sequential requests      one after another, n=1 each
Tokens/s counts the completion tokens the backend reports (real counts; EOS can end a sample early).
vLLM needs the [vllm] extra; the script must run as __main__ (the engine spawns its core process).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.contract import ChatMessage, SamplingParams  # noqa: E402
from workers.generation import GenerationBackend, GenerationOutput, build_backend  # noqa: E402

PROMPT = [ChatMessage(role="user", content="Natalia sold clips to 48 of her friends in April, and then she sold half "
                                           "as many clips in May. How many clips did Natalia sell altogether? "
                                           "Think step by step.")]
CONFIGS: dict[str, dict[str, Any]] = {
    "transformers": {"backend": "transformers", "device": "cpu"},
    "vllm": {"backend": "vllm", "dtype": "float32", "max_model_len": 2048, "enforce_eager": True,
             "cpu_kv_cache_gb": 2},
}


async def timed(coro: Any) -> tuple[float, list[GenerationOutput]]:
    start = time.perf_counter()
    result = await coro
    outputs = result if isinstance(result, list) else [result]
    return time.perf_counter() - start, outputs


async def bench_backend(kind: str, n: int, max_tokens: int, repeats: int) -> list[tuple[str, ...]]:
    backend: GenerationBackend = build_backend(CONFIGS[kind])
    start = time.perf_counter()
    await backend.start()
    load = time.perf_counter() - start
    rows = [(kind, "start (load model / engine)", f"{load:.2f}", "", "", "")]

    def params(seed: int | None) -> SamplingParams:
        return SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=seed)

    await backend.generate(PROMPT, 2, params(0))  # warm-up
    modes = {
        f"one request, n={n}": lambda: backend.generate(PROMPT, n, params(1)),
        # unseeded: the transformers backend runs a seeded request alone, unseeded ones share a batch
        f"{n} concurrent requests, n=1, no seed": lambda: asyncio.gather(
            *(backend.generate(PROMPT, 1, params(None)) for _ in range(n))),
        f"{n} sequential requests, n=1": lambda: sequential(backend, n, params),
    }
    for mode, make in modes.items():
        best: tuple[float, list[GenerationOutput]] | None = None
        for _ in range(repeats):
            result = await timed(make())
            if best is None or result[0] < best[0]:
                best = result
        assert best is not None
        wall, outputs = best
        returned = sum(o.returned for o in outputs)
        tokens = sum(c.completion_tokens for o in outputs for c in o.candidates)
        rows.append((kind, mode, f"{wall:.2f}", str(returned), str(tokens), f"{tokens / wall:.1f}"))
        print(f"  measured: {' | '.join(rows[-1])}", file=sys.stderr, flush=True)
    await backend.close()
    return rows


async def sequential(backend: GenerationBackend, n: int, params: Any) -> list[GenerationOutput]:
    return [await backend.generate(PROMPT, 1, params(200 + i)) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["transformers", "vllm", "both"], default="both")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    kinds = ["transformers", "vllm"] if args.backend == "both" else [args.backend]
    if "vllm" in kinds and importlib.util.find_spec("vllm") is None:
        print("vllm is not installed (pip install '.[vllm]'); skipping it", file=sys.stderr)
        kinds.remove("vllm")
    rows: list[tuple[str, ...]] = []
    for kind in kinds:
        rows += asyncio.run(bench_backend(kind, args.n, args.max_tokens, args.repeats))
    header = ("backend", "mode", "wall s", "samples", "tokens", "tokens/s")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"SmolLM2-135M-Instruct, n={args.n}, max_tokens={args.max_tokens}, best of {args.repeats}")
    for row in [header, *rows]:
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells))


if __name__ == "__main__":
    main()
