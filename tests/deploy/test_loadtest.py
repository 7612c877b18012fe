"""Locust load tests: the body checks, and short headless runs against a locally started service.

The rerank run (30 s, cheap verifiers) is the CI smoke load test: any failed request (HTTP error or a
response whose body fails the checks in loadtests/locustfile.py) fails it. Rates and latencies are
printed, never asserted (they belong to the measured figures in docs/deployment.md).
"""

from __future__ import annotations

import pytest

from loadtests.payloads import diagnostics_problems, rerank_payloads
from loadtests.run import ROOT, format_results, local_service, run_locust

CHEAP_CONFIG = ROOT / "loadtests" / "worker-rerank-cheap.yaml"


def diag(name: str, n: int, error: str | None = None) -> dict[str, object]:
    return {"name": name, "raw": [0.5] * n, "normalized": [0.5] * n, "error": error}


def test_body_checks_accept_complete_diagnostics() -> None:
    assert diagnostics_problems({"verifiers": [diag("math_check", 4), diag("answer_agreement", 4)]}, 4) == []


def test_body_checks_catch_missing_failed_or_partial_diagnostics() -> None:
    assert diagnostics_problems({}, 4) == ["no verifier diagnostics"]
    assert diagnostics_problems({"verifiers": [diag("math_check", 4, "timeout after 5s")]}, 4) == [
        "verifier math_check failed: timeout after 5s"
    ]
    assert diagnostics_problems({"verifiers": [diag("math_check", 3)]}, 4) == [
        "verifier math_check scored 3 of 4 candidates"
    ]


def test_rerank_payloads_are_real_candidate_sets(dev_set_path: object) -> None:
    payloads = rerank_payloads()
    assert len(payloads) == 319
    assert all(len(p["documents"]) == 4 and p["query"] for p in payloads)
    assert {p["verification"]["profile"] for p in payloads} == {"cheap"}


@pytest.mark.slow
def test_rerank_load_30s_has_no_errors(dev_set_path: object) -> None:
    with local_service(worker_config=CHEAP_CONFIG, ready_timeout_s=120) as host:
        result = run_locust(host, "rerank", users=4, run_time="30s", spawn_rate=4)
    print("\n" + format_results([result]))
    assert result.failure_messages == []
    assert result.total.failures == 0
    assert result.total.requests >= 30, "a 30 s run at 4 users should complete dozens of requests"
    assert [e.name for e in result.endpoints] == ["/v1/rerank"]
    assert result.locust_exit_code == 0


@pytest.mark.slow
def test_chat_load_has_no_errors(dev_set_path: object) -> None:
    """Generation through the default embedded service (SmolLM2-135M on CPU): 1 user, 2 candidates."""
    import workers.generation

    if not hasattr(workers.generation, "build_backend"):
        pytest.skip("workers.generation.build_backend lands with the generation branch")
    env = {"WEAVER_LOADTEST_MAX_TOKENS": "32", "WEAVER_LOADTEST_CANDIDATES": "2"}
    # One OpenMP thread: on an oversubscribed 2-core box torch's spinning threads made 2 x 32 tokens take
    # 113 s instead of 10 s (measured with the transformers backend, load average ~10).
    with local_service({"OMP_NUM_THREADS": "1"}, ready_timeout_s=240) as host:
        result = run_locust(host, "chat", users=1, run_time="30s", spawn_rate=1, env=env)
    print("\n" + format_results([result]))
    assert result.failure_messages == []
    assert result.total.failures == 0 and result.total.requests >= 1
