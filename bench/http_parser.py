"""HTTP-layer cost of the header limits: /healthz throughput of the gateway under uvicorn with httptools
(no header-size cap, uvicorn's default) versus h11 with our header deadline (what ``weaver serve`` runs).

    python bench/http_parser.py [--seconds 5] [--clients 8]

Prints one table row per parser. The app is the real gateway with a fake worker, so only HTTP parsing,
routing and middleware are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "service"))

from gateway_fakes import FakeWorker  # noqa: E402

from service.app import create_app  # noqa: E402
from service.cli.serve import http_limits  # noqa: E402
from service.settings import Settings  # noqa: E402


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _load(url: str, seconds: float, clients: int) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url) as http:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await http.get("/healthz")
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies), latencies


def run(parser: str, seconds: float, clients: int) -> tuple[float, float]:
    settings = Settings()
    options = http_limits(settings) if parser == "h11+deadline" else {"http": "httptools"}
    port = _port()
    config = uvicorn.Config(create_app(settings, worker=FakeWorker()), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        count, latencies = asyncio.run(_load(f"http://127.0.0.1:{port}", seconds, clients))
    finally:
        server.should_exit = True
        thread.join(30)
    latencies.sort()
    return count / seconds, latencies[int(0.95 * (len(latencies) - 1))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    print("| parser | req/s | p95 ms |")
    print("|---|---|---|")
    for name in ("httptools", "h11+deadline"):
        rate, p95 = run(name, args.seconds, args.clients)
        print(f"| {name} | {rate:.0f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
