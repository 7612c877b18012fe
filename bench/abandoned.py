"""Abandoned work: 50 clients give up at random times while 50 others wait for their answers.

One real embedded server (uvicorn on a local port, the in-process worker with the default SmolLM2
generator, or with ``--generator tiny`` a tiny random Llama whose short jobs allow many rounds, and the
cheap verifiers). Runs with the same patient requests and arrival schedule:

- baseline: the 50 patient requests alone;
- mixed:    the same 50 plus 50 impatient ones, interleaved, each hanging up (closing its connection)
            after a uniform random 0.2-3 s (``--give-up-max-s``).

``--rounds R`` alternates baseline and mixed R times (baseline first in odd rounds, mixed first in even
ones), so slow drifts of a shared machine hit both alike; the latency ratio is reported per round and as
the median over rounds.

Reported: the decode compute (row-steps: one candidate row through one forward pass) spent on the jobs
that were abandoned, as a share of all decode compute in the mixed run, split into before and after the
client hung up (after = waste the service controls); tokens generated for cancelled jobs; and the
patient requests' latency in the mixed run against the baseline.

    PYTHONPATH=. python bench/abandoned.py [--patient 50 --impatient 50 --max-tokens 32 --n-candidates 2]
                                           [--give-up-max-s 3 --spacing-s 0.1 --concurrency 8]
                                           [--generator smollm2|tiny] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import uvicorn  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import QueueSettings, Settings  # noqa: E402
from workers.cancellation import CANCELLED_TOKENS, JOBS_CANCELLED  # noqa: E402

CHEAP = ["answer_agreement", "math_check"]
QUESTIONS = [f"Tom has {a} apples and buys {b} more. How many apples does he have?" for a in range(3, 60)
             for b in range(2, 5)]  # fmt: skip


def worker_config(tiny_model: Path | None = None) -> Any:
    from workers.config import WorkerConfig
    from workers.serve import load_worker_config

    config = load_worker_config(None).model_dump()
    if tiny_model is not None:
        config["generation"] = {**config["generation"], "model": str(tiny_model)}
    config["verifiers"] = [v for v in config["verifiers"] if v["name"] in CHEAP]
    config.update(profiles={"cheap": CHEAP}, default_profile="cheap", cache={"memory_size": 0})
    return WorkerConfig.model_validate(config)


@dataclass
class Run:
    patient_latency_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one(client: httpx.AsyncClient, i: int, args: argparse.Namespace, give_up_s: float | None, run: Run) -> None:
    body = {
        "model": "weaver",
        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        "max_tokens": args.max_tokens,
        "verification": {"n_candidates": args.n_candidates, "profile": "cheap"},
    }
    started = time.perf_counter()
    try:
        if give_up_s is None:
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                run.errors.append(f"{response.status_code}: {response.text[:200]}")
            run.patient_latency_s.append(time.perf_counter() - started)
        else:
            # cancelling the request closes its connection: the server sees the disconnect
            await asyncio.wait_for(client.post("/v1/chat/completions", json=body), give_up_s)
    except TimeoutError:
        pass


async def drive(url: str, args: argparse.Namespace, impatient: bool, seed: int) -> Run:
    rng = random.Random(seed)
    run = Run()
    limits = httpx.Limits(max_connections=args.patient + args.impatient + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        tasks = []
        started = time.perf_counter()
        for i in range(args.patient):
            arrival = i * args.spacing_s
            tasks.append(asyncio.create_task(later(arrival, one(client, i, args, None, run))))
            if impatient and i < args.impatient:
                give_up = rng.uniform(0.2, args.give_up_max_s)
                tasks.append(asyncio.create_task(later(arrival, one(client, 1000 + i, args, give_up, run))))
        await asyncio.gather(*tasks)
        run.wall_s = time.perf_counter() - started
    return run


async def later(delay_s: float, work: Any) -> None:
    await asyncio.sleep(delay_s)
    await work


@dataclass
class Usage:
    row_steps: int = 0
    cancelled_steps: int = 0
    after_steps: int = 0
    tokens: float = 0.0
    cancelled: dict[str, float] = field(default_factory=lambda: {"disconnect": 0.0, "deadline": 0.0})


async def measured_mixed(url: str, args: argparse.Namespace, backend: Any, seed: int, usage: Usage) -> Run:
    """One mixed run, adding its decode accounting to ``usage``."""
    before = (backend.usage.row_steps, backend.usage.cancelled_row_steps, backend.usage.after_cancel_row_steps)
    tokens_before = CANCELLED_TOKENS._value.get()  # noqa: SLF001
    cancelled_before = {r: JOBS_CANCELLED.labels(r)._value.get() for r in usage.cancelled}  # noqa: SLF001
    mixed = await drive(url, args, True, seed)
    await asyncio.sleep(1.0)  # let the last abandoned batch notice
    usage.row_steps += backend.usage.row_steps - before[0]
    usage.cancelled_steps += backend.usage.cancelled_row_steps - before[1]
    usage.after_steps += backend.usage.after_cancel_row_steps - before[2]
    usage.tokens += CANCELLED_TOKENS._value.get() - tokens_before  # noqa: SLF001
    for reason, value in cancelled_before.items():
        usage.cancelled[reason] += JOBS_CANCELLED.labels(reason)._value.get() - value  # noqa: SLF001
    return mixed


async def main_async(args: argparse.Namespace) -> None:
    from workers.entry import Worker

    tiny_dir = None
    if args.generator == "tiny":
        from bench.tiny_checkpoints import build_generator

        tiny_dir = tempfile.TemporaryDirectory(prefix="weaver-abandoned-")
        tiny_model = build_generator(Path(tiny_dir.name) / "generator")
    worker = Worker.from_config(worker_config(tiny_model if tiny_dir else None))
    await worker.start()
    backend = worker._generator  # noqa: SLF001 - the benchmark reads the backend's decode accounting
    settings = Settings(request_timeout_s=600, queue=QueueSettings(max_depth=512, concurrency=args.concurrency))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, worker=worker), port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    await drive(url, argparse.Namespace(**{**vars(args), "patient": 4}), False, 0)  # warm-up
    usage = Usage()
    rounds: list[tuple[Run, Run]] = []
    for r in range(args.rounds):
        if r % 2 == 0:
            baseline = await drive(url, args, False, 1)
            mixed = await measured_mixed(url, args, backend, 1, usage)
        else:
            mixed = await measured_mixed(url, args, backend, 1, usage)
            baseline = await drive(url, args, False, 1)
        rounds.append((baseline, mixed))
    server.should_exit = True
    await serving
    await worker.close()
    if tiny_dir is not None:
        tiny_dir.cleanup()
    report(args, usage, rounds)


def report(args: argparse.Namespace, usage: Usage, rounds: list[tuple[Run, Run]]) -> None:
    generator = "tiny random Llama" if args.generator == "tiny" else "SmolLM2-135M"
    print(f"{args.patient} patient + {args.impatient} impatient chat requests (give up after U(0.2, "
          f"{args.give_up_max_s:g}) s), "
          f"arrivals every {args.spacing_s} s, {args.n_candidates} candidates x max_tokens {args.max_tokens}, "
          f"queue.concurrency {args.concurrency}, generator {generator}, {len(rounds)} round(s)\n")  # fmt: skip
    print("| measure | value |\n|---|---:|")
    print(f"| jobs cancelled (disconnect / deadline) | {usage.cancelled['disconnect']:.0f} / "
          f"{usage.cancelled['deadline']:.0f} |")  # fmt: skip
    print(f"| decode row-steps, mixed runs | {usage.row_steps} |")
    share_all = usage.cancelled_steps / usage.row_steps if usage.row_steps else 0.0
    share_after = usage.after_steps / usage.row_steps if usage.row_steps else 0.0
    print(f"| spent on abandoned jobs, in all | {share_all:.1%} |")
    print(f"| spent on abandoned jobs after the client hung up (waste) | {share_after:.1%} |")
    print(f"| tokens generated for cancelled jobs | {usage.tokens:.0f} |")
    medians, means = [], []
    for i, (baseline, mixed) in enumerate(rounds, 1):
        for name, run in (("baseline", baseline), ("mixed", mixed)):
            lat = sorted(run.patient_latency_s)
            print(f"| round {i}, patient latency {name}: median / mean / p95 s | {statistics.median(lat):.2f} / "
                  f"{statistics.fmean(lat):.2f} / {lat[int(len(lat) * 0.95)]:.2f} |")  # fmt: skip
            if run.errors:
                print(f"| round {i}, errors in {name} | {len(run.errors)}: {run.errors[0]} |")
        medians.append(statistics.median(mixed.patient_latency_s) / statistics.median(baseline.patient_latency_s) - 1)
        means.append(statistics.fmean(mixed.patient_latency_s) / statistics.fmean(baseline.patient_latency_s) - 1)
        print(f"| round {i}, patient latency mixed vs baseline (median / mean) | {medians[-1]:+.1%} / "
              f"{means[-1]:+.1%} |")  # fmt: skip
    print(f"| patient latency mixed vs baseline, median over rounds (of the medians / of the means) | "
          f"{statistics.median(medians):+.1%} / {statistics.median(means):+.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patient", type=int, default=50)
    parser.add_argument("--impatient", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--n-candidates", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--spacing-s", type=float, default=0.1, help="time between arrivals (of each kind)")
    parser.add_argument("--give-up-max-s", type=float, default=3.0, help="impatient clients hang up after U(0.2, this)")
    parser.add_argument("--generator", choices=["smollm2", "tiny"], default="smollm2",
                        help="tiny: a random 2-layer Llama (only the code path matters; short jobs, many rounds)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating baseline/mixed pairs")
    args = parser.parse_args()
    args.impatient = min(args.impatient, args.patient)  # one impatient request arrives with each patient one
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
