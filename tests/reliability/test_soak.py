"""Soak: minutes of steady rerank load (locust, the loadtests/ runner) on a real ``weaver serve`` process.

Promise: zero failed requests (HTTP errors or failed body checks), the offered rate is really served, and
the service's resident memory after the run is within ``max(16 MiB, 10 %)`` of its value after warm-up. The
online learner's bounded books are set small enough to be full after the warm-up, so that growth is what a leak
adds (at their defaults they fill for minutes: a 180 s run grew 19 MiB, a 420 s one 30 MiB, on 2026-11-30).
RSS is read from the service's own ``/metrics`` (``process_resident_memory_bytes``, prometheus_client's
process collector), as an operator would watch it.

Deselected by default (``-m "not soak"`` in pyproject); ``.ci/run`` runs it as its own step:
``pytest -m soak tests/reliability/test_soak.py``. Duration and rate come from the environment:
WEAVER_SOAK_SECONDS (default 180), WEAVER_SOAK_USERS (23) x WEAVER_SOAK_USER_RPS (5.0) = 115 requests/s, the
sustainable rerank rate (cheap profile) docs/deployment.md measured on the 2-core box.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.soak, pytest.mark.slow]
MIB = 1024 * 1024


def resident_bytes(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    match = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, "the service does not export process_resident_memory_bytes"
    return float(match.group(1))


def test_soak_zero_errors_and_bounded_memory(dev_set_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("locust") is None:  # not imported here: its gevent patching breaks ssl/httpx
        pytest.skip("locust is not installed (dev extra)")
    from loadtests.run import local_service, run_locust

    seconds = int(os.environ.get("WEAVER_SOAK_SECONDS", "180"))
    users = int(os.environ.get("WEAVER_SOAK_USERS", "23"))
    user_rps = float(os.environ.get("WEAVER_SOAK_USER_RPS", "5.0"))
    monkeypatch.setenv("WEAVER_DATA_DIR", str(dev_set_path.parent))
    pace = {"WEAVER_LOADTEST_USER_RPS": str(user_rps), "WEAVER_DATA_DIR": str(dev_set_path.parent)}
    # the online learner's bounded books (score ring, feedback selections) fill during the warm-up, so the growth
    # measured below is what a leak would add, not a book filling up to its cap (bench/online.py: ~0.4 kB a request)
    books = {"WEAVER_ONLINE__RING_CAPACITY": "1000", "WEAVER_ONLINE__FEEDBACK_CAPACITY": "1000"}
    with local_service(env=books, worker_config=ROOT / "loadtests" / "worker-rerank-cheap.yaml") as url:
        warm = run_locust(url, "rerank", users, "20s", spawn_rate=users, env=pace)
        assert warm.ok, warm.failure_messages  # warm-up: caches, allocator arenas, lazy imports settle
        before = resident_bytes(url)
        soak = run_locust(url, "rerank", users, f"{seconds}s", spawn_rate=users, env=pace)
        after = resident_bytes(url)
    growth = after - before
    print(f"\nsoak: {soak.total.requests} requests in {seconds} s ({soak.total.rps:.2f} req/s), "
          f"{soak.total.failures} failures, p95 {soak.total.p95_ms:.0f} ms, "
          f"RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB ({growth / MIB:+.1f} MiB)")
    assert soak.ok and soak.total.failures == 0, soak.failure_messages
    assert soak.total.requests >= 0.8 * users * user_rps * seconds, "the offered rate was not served"
    assert growth <= max(16 * MIB, 0.10 * before), f"RSS grew by {growth / MIB:.1f} MiB"
