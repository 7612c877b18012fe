"""What a batch row costs while decoding, against re-encoding a prefix: why cancelled rows stay in a batch.

A cancelled caller's rows in a shared transformers batch are marked finished but ride along until the batch
ends (``generate`` cannot drop rows). Dropping them would mean stopping the batch and re-encoding the live
rows' prompt plus what they generated (vLLM's preemption by recompute). This prints, for the packaged
SmolLM2-135M on this CPU, the time of one decode step for B rows and of a prefill of L tokens for B rows, and
the break-even: how many decode steps a dropped row must save to pay for re-encoding one live row.

    PYTHONPATH=. python bench/decode_costs.py [--rows 4,8,16] [--prefix 150] [--threads 1] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="4,8,16")
    parser.add_argument("--prefix", type=int, default=150, help="prompt + generated tokens to re-encode per row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the embedded default uses 1)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from workers.generation.model_cache import DEFAULT_MODEL, resolve_model

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(str(resolve_model(DEFAULT_MODEL).path)).eval()
    generator = torch.Generator().manual_seed(0)

    def prefill(rows: int) -> tuple[float, object]:
        ids = torch.randint(100, 1000, (rows, args.prefix), generator=generator)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model(ids, use_cache=True)
        return time.perf_counter() - start, out.past_key_values

    def decode_step(rows: int) -> float:
        _, cache = prefill(rows)
        ids = torch.randint(100, 1000, (rows, 1), generator=generator)
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(args.steps):
                cache = model(ids, past_key_values=cache, use_cache=True).past_key_values
        return (time.perf_counter() - start) / args.steps

    sizes = [int(r) for r in args.rows.split(",")]
    steps = {rows: decode_step(rows) for rows in sizes}
    fills = {rows: prefill(rows)[0] for rows in sizes}
    per_row = (steps[sizes[-1]] - steps[sizes[0]]) / (sizes[-1] - sizes[0])
    print(f"SmolLM2-135M, {args.threads} torch thread(s), prefix {args.prefix} tokens\n")
    print("| rows | decode step ms | prefill ms | prefill per row ms |")
    print("|---:|---:|---:|---:|")
    for rows in sizes:
        print(f"| {rows} | {steps[rows] * 1000:.1f} | {fills[rows] * 1000:.0f} | {fills[rows] * 1000 / rows:.0f} |")
    refill = fills[sizes[-1]] / sizes[-1]
    print(f"\none more row in a decode step: {per_row * 1000:.1f} ms; re-encoding one live row: {refill * 1000:.0f} ms;"
          f" a dropped row must save {refill / per_row:.0f} decode steps per live row re-encoded to pay for it")


if __name__ == "__main__":
    main()
