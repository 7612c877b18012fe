"""Run locust headless against weaver-rerank for a fixed time and print rate, latency percentiles and errors.

    python -m loadtests.run                                  # local embedded service, rerank, 30 s
    python -m loadtests.run --scenario chat --users 2 --run-time 60s
    python -m loadtests.run --users 1,2,4,8 --user-rps 2     # step the load to find the sustainable rate
    python -m loadtests.run --host http://gateway:8000       # an already running service

Without ``--host`` it starts ``weaver serve`` (embedded, CPU) on a free local port, waits for /readyz,
and stops it afterwards. Exit status 1 if any request failed (HTTP error or a failed body check).
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SCENARIOS = {"rerank": ["RerankUser"], "chat": ["ChatUser"], "mixed": ["RerankUser", "ChatUser"]}


@dataclass
class EndpointStats:
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class LoadResult:
    users: int
    run_time: str
    endpoints: list[EndpointStats]
    total: EndpointStats
    failure_messages: list[str]
    locust_exit_code: int

    @property
    def ok(self) -> bool:
        return self.total.requests > 0 and self.total.failures == 0 and self.locust_exit_code == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_service(
    env: dict[str, str] | None = None, worker_config: Path | None = None, ready_timeout_s: float = 300.0
) -> Iterator[str]:
    """``weaver serve`` (embedded) on a free port; yields its base URL once /readyz answers 200.

    The embedded app loads its models before it accepts connections, so a 503 from /readyz means a
    component failed to load: that is reported at once instead of waiting out the timeout.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    log = tempfile.NamedTemporaryFile(prefix="weaver-serve-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if worker_config is not None:
        cmd += ["--worker-config", str(worker_config)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weaver serve exited with {proc.returncode}; log: {log.name}")
            try:
                response = httpx.get(f"{base}/readyz", timeout=2.0)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                break
            if time.monotonic() > deadline:  # the port opens at once; /readyz is 503 while models load
                said = f": {response.text}" if response is not None else ""
                raise TimeoutError(f"service not ready after {ready_timeout_s:.0f} s{said}; log: {log.name}")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _stats_row(row: dict[str, str]) -> EndpointStats:
    def num(key: str) -> float:
        value = row.get(key, "")
        return float(value) if value not in ("", "N/A") else float("nan")

    return EndpointStats(
        name=row["Name"],
        requests=int(row["Request Count"]),
        failures=int(row["Failure Count"]),
        rps=num("Requests/s"),
        p50_ms=num("50%"),
        p95_ms=num("95%"),
        p99_ms=num("99%"),
        max_ms=num("Max Response Time"),
    )


def run_locust(
    host: str,
    scenario: str,
    users: int,
    run_time: str,
    spawn_rate: float,
    env: dict[str, str] | None = None,
    stop_timeout_s: int = 120,
) -> LoadResult:
    """One headless locust run; statistics come from locust's own CSV output. Requests still running at
    the end get ``stop_timeout_s`` to finish and are counted (a slow CPU generation is not dropped)."""
    with tempfile.TemporaryDirectory(prefix="weaver-locust-") as tmp:
        prefix = str(Path(tmp) / "run")
        cmd = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
            "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", run_time,
            "--stop-timeout", str(stop_timeout_s), "--csv", prefix, "--only-summary", "--loglevel", "WARNING",
            *SCENARIOS[scenario],
        ]
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
        stats_path = Path(f"{prefix}_stats.csv")
        if not stats_path.exists():
            raise RuntimeError(f"locust wrote no statistics (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        with stats_path.open() as handle:
            rows = [_stats_row(r) for r in csv.DictReader(handle)]
        with Path(f"{prefix}_failures.csv").open() as handle:
            failures = [f"{r['Occurrences']}x {r['Name']}: {r['Error']}" for r in csv.DictReader(handle)]
    total = next(r for r in rows if r.name == "Aggregated")
    endpoints = [r for r in rows if r.name != "Aggregated"]
    return LoadResult(users, run_time, endpoints, total, failures, proc.returncode)


def format_results(results: list[LoadResult]) -> str:
    header = f"{'users':>5}  {'endpoint':<22} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} " \
             f"{'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    lines = [header, "-" * len(header)]
    for result in results:
        for s in [*result.endpoints, result.total] if len(result.endpoints) > 1 else result.endpoints:
            lines.append(
                f"{result.users:>5}  {s.name:<22} {s.requests:>8} {s.failures:>6} {s.rps:>7.2f} {s.p50_ms:>8.0f} "
                f"{s.p95_ms:>8.0f} {s.p99_ms:>8.0f} {s.max_ms:>8.0f}"
            )
        lines.extend(f"       failure: {message}" for message in result.failure_messages)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="rerank")
    parser.add_argument("--users", default="4", help="concurrent users; a comma list steps the load (1,2,4,8)")
    parser.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second")
    parser.add_argument("--run-time", default="30s", help="duration of each step (locust syntax: 30s, 2m)")
    parser.add_argument("--user-rps", type=float, default=None, help="pace each user to this rate (else 0.5-1.5 s)")
    parser.add_argument("--host", default=None, help="base URL of a running service; default: start one locally")
    parser.add_argument("--worker-config", type=Path, default=None,
                        help="worker YAML for the local service (default: the embedded CPU set)")
    parser.add_argument("--omp-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the local service (1 on a shared, oversubscribed CPU)")
    args = parser.parse_args(argv)

    env = {"WEAVER_LOADTEST_USER_RPS": str(args.user_rps)} if args.user_rps else {}
    steps = [int(u) for u in args.users.split(",")]

    def run_steps(host: str) -> list[LoadResult]:
        results = []
        for users in steps:
            result = run_locust(host, args.scenario, users, args.run_time, args.spawn_rate, env)
            print(format_results([result]), flush=True)
            results.append(result)
        return results

    if args.host:
        results = run_steps(args.host)
    else:
        service_env = {"OMP_NUM_THREADS": str(args.omp_threads)} if args.omp_threads else {}
        with local_service(service_env, worker_config=args.worker_config) as host:
            print(f"started embedded service at {host}", flush=True)
            results = run_steps(host)
    print()
    print(format_results(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
