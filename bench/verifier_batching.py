"""Dynamic-batching efficiency: verifier throughput under 32 concurrent requests vs one offline batch.

The same items (32 requests x 4 candidates of GSM8K dev text, or synthetic text when the data is
absent) are scored (a) by one direct ``score_sync`` call over all of them (the offline ideal: one
full batch, sorted by length) and (b) by 32 concurrent ``submit`` calls through the dynamic batcher
(coalescing, off-loop execution, routing back). Repeats alternate the two modes and report medians;
the ratio (b)/(a) is the share of offline throughput the online path keeps. No score cache is used.

    PYTHONPATH=. python bench/verifier_batching.py [--requests 32] [--candidates 4] [--repeats 3]

The verifier is a reward_model with a randomly initialised BERT of all-MiniLM-L6-v2's shape
(6 layers, 384 hidden; the MiniLM tokenizer): real transformer compute, no download.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workers.batching import VerifierBatcher  # noqa: E402
from workers.model_paths import MINILM_DIR, resolve_model_path  # noqa: E402
from workers.verifiers.base import PairItem  # noqa: E402
from workers.verifiers.reward_model import RewardModelVerifier  # noqa: E402


def build_model(directory: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM_DIR))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def load_requests(n_requests: int, n_candidates: int) -> list[list[PairItem]]:
    data = Path(os.environ.get("WEAVER_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = data / "gsm8k_gpt3_dev.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.open()][:n_requests]
        return [[PairItem(r["prompt"], c["text"]) for c in r["candidates"][:n_candidates]] for r in rows]
    return [[PairItem(f"question {i}: what is {i} + {j}?", f"{i} + {j} = {i + j}. " * (5 + (i * j) % 20))
             for j in range(n_candidates)] for i in range(n_requests)]


async def concurrent_pass(verifier: RewardModelVerifier, requests: list[list[PairItem]]) -> tuple[float, int]:
    batcher = VerifierBatcher(verifier, cache=None)
    start = time.perf_counter()
    results = await asyncio.gather(*(batcher.submit(items) for items in requests))
    elapsed = time.perf_counter() - start
    batches = batcher.stats.batches
    await batcher.close()
    assert all(o.error is None for r in results for o in r)
    return elapsed, batches


def offline_pass(verifier: RewardModelVerifier, requests: list[list[PairItem]]) -> float:
    items = [item for r in requests for item in r]
    start = time.perf_counter()
    verifier.score_sync(items)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=64, help="batcher max items per batch")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--forward-batch-size", type=int, default=32, help="sequences per forward pass")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    requests = load_requests(args.requests, args.candidates)
    n_items = sum(len(r) for r in requests)
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp))
        verifier = RewardModelVerifier("bench_rm", model=tmp, forward_batch_size=args.forward_batch_size,
                                       max_length=512, max_batch_size=args.max_batch_size,
                                       max_wait_ms=args.max_wait_ms, timeout_s=600)
        verifier.load()
        offline_pass(verifier, requests[:2])  # warm-up
        offline, online, batches = [], [], []
        for _ in range(args.repeats):
            offline.append(offline_pass(verifier, requests))
            elapsed, count = asyncio.run(concurrent_pass(verifier, requests))
            online.append(elapsed)
            batches.append(count)
    off, on = statistics.median(offline), statistics.median(online)
    table = Table(title=f"Verifier throughput: {args.requests} concurrent requests x {args.candidates} candidates "
                        f"vs one offline batch (reward_model, BERT 6x384, torch {torch.__version__}, "
                        f"{torch.get_num_threads()} threads, median of {args.repeats})")
    for col in ("mode", "items", "batches", "seconds", "items/s", "ratio"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    table.add_row("offline: one full batch", str(n_items), "1", f"{off:.2f}", f"{n_items / off:.1f}", "1.00")
    table.add_row(f"online: {args.requests} concurrent submits", str(n_items), f"{statistics.median(batches):.0f}",
                  f"{on:.2f}", f"{n_items / on:.1f}", f"{off / on:.2f}")
    Console().print(table)
    Console().print(f"runs (s): offline {', '.join(f'{x:.2f}' for x in offline)}; "
                    f"online {', '.join(f'{x:.2f}' for x in online)}")


if __name__ == "__main__":
    main()
