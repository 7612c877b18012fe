"""Real servers for the job-lifecycle tests: ``weaver serve`` (embedded) or ``weaver serve --redis-url`` plus a
``weaver worker`` process, both generating with a tiny random Llama (only the code path matters) and the cheap
verifiers. The CPU time of the process that generates is read from /proc, so "stopped working" is measured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from tests.support import ROOT, wait_until

CHEAP = ["answer_agreement", "math_check"]
TICKS = os.sysconf("SC_CLK_TCK")


def worker_config(path: Path, model_dir: Path) -> Path:
    from workers.config import WorkerConfig

    config = WorkerConfig.default().model_dump()
    config.update(
        generation={"backend": "transformers", "model": str(model_dir), "device": "cpu", "max_batch_size": 32},
        profiles={"cheap": CHEAP},
        default_profile="cheap",
    )
    config["verifiers"] = [v for v in config["verifiers"] if v["name"] in CHEAP]
    path.write_text(yaml.safe_dump(config))
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus exposition text (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@dataclass
class Deployment:
    mode: str
    url: str
    gateway: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes] | None
    redis_url: str | None
    prefix: str

    @property
    def generating_pid(self) -> int:
        """The process whose CPU the generation uses: the embedded server, or the Redis worker."""
        return (self.worker or self.gateway).pid

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def idle_cpu(self, seconds: float = 2.0) -> float:
        """CPU seconds the generating process burns over ``seconds`` of wall time."""
        before = cpu_seconds(self.generating_pid)
        time.sleep(seconds)
        return cpu_seconds(self.generating_pid) - before


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env, stdout=out, stderr=out)


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    wait_until(lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, timeout_s, f"{url}/readyz",
               ignore=(httpx.HTTPError,), interval=0.2)


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 30.0) -> int | None:
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@contextmanager
def deployment(
    mode: str, config: Path, port: int, tmp: Path, *, redis_url: str | None, prefix: str, **env_extra: str
) -> Iterator[Deployment]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "WEAVER_LOG_LEVEL": "warning",
        "WEAVER_QUEUE__PREFIX": prefix,
        "OMP_NUM_THREADS": "1",
        "WEAVER_LIMITS__MAX_TOKENS": "4096",
        **env_extra,
    }
    worker = None
    if mode == "redis":
        assert redis_url is not None
        gateway = _spawn(["serve", "--port", str(port), "--redis-url", redis_url], env, tmp / "gateway.log")
        worker = _spawn(
            ["worker", "--redis-url", redis_url, "--worker-config", str(config), "--concurrency", "8"],
            env,
            tmp / "worker.log",
        )
    else:
        gateway = _spawn(["serve", "--port", str(port), "--worker-config", str(config)], env, tmp / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield Deployment(mode, url, gateway, worker, redis_url, prefix)
    finally:
        stop(worker)
        stop(gateway)
