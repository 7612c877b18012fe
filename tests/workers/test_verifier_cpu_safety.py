"""Regex-based verifiers are linear time (finding 2), run off the serving interpreter with a timeout that
holds (finding 2), and math-verify answers the same from any thread, never caching a failure (finding 7)."""

from __future__ import annotations

import asyncio
import gc
import re
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import answers
from models.answers import answers_equivalent, extract_answer
from workers.batching import VerifierBatcher
from workers.verifiers.base import Item, PairItem, Score, Scored
from workers.verifiers.math_check import MathCheckVerifier, consistency_score, equations
from workers.verifiers.process_pool import ProcessPoolVerifier

# fragments that made the old backtracking patterns quadratic, and ordinary solution text
FRAGMENTS = ["1+", "1 + ", "\n", " ", "\\boxed{", "#### ", "answer is ", "A: ", "<<", "<<1+1=", "1,", "- ", "$ ",
             "=", "1.", "2x", "%", "<<3*4=12>>12", "So 3 + 4 = 7.", "abc", "{", "}", "9", "-"]
BUDGET_S_PER_10KB = 0.050


def _cpu_seconds(function: Callable[[], object], calls: int = 3) -> float:
    """CPU time of this thread for one call, the least of ``calls`` (other load on the machine does not
    count), with the cyclic garbage collector paused: a full collection of the test process's heap is not
    the verifier's cost. The least, as timeit reports it: noise only adds time, and a backtracking pattern
    is slow on every call (one full-suite run saw a single 0.09 s call that the next call did not repeat).
    No ``gc.collect()`` first: pausing is enough, and in a full run, with torch and vLLM on the heap, one
    collection per measurement made this file's Hypothesis test take 85 s instead of 6."""
    gc.disable()
    try:
        best = float("inf")
        for _ in range(calls):
            start = time.thread_time()
            function()
            best = min(best, time.thread_time() - start)
        return best
    finally:
        gc.enable()


def _adversarial(pieces: list[str], repeat: int) -> str:
    text = "".join(pieces) * repeat
    return text[:12_000] if len(text) > 12_000 else text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4), repeat=st.integers(500, 6000),
       prompt=st.sampled_from([None, "Tom has 3 apples and buys 4 more. " * 20]))
def test_regex_verifiers_stay_linear_on_long_adversarial_text(pieces: list[str], repeat: int,
                                                              prompt: str | None) -> None:
    text = _adversarial(pieces, repeat)
    budget = BUDGET_S_PER_10KB * max(1.0, len(text) / 10_000)
    for function in (lambda: consistency_score(text, prompt), lambda: extract_answer(text)):
        assert _cpu_seconds(function) < budget, (pieces, repeat, len(text))


@pytest.mark.parametrize("document", ["1+" * 15900 + "1", "\n" * 30000, "\\boxed{" * 4500, " " * 30000 + "x",
                                      "<<1=1>>" * 4500, "answer is " * 3000])
def test_the_red_team_documents_score_within_budget(document: str) -> None:
    assert _cpu_seconds(lambda: consistency_score(document, "p")) < BUDGET_S_PER_10KB * len(document) / 10_000


_NUM = r"\$?\d[\d,]*(?:\.\d+)?%?"
_BACKTRACKING = re.compile(rf"(?<![\w.=])({_NUM}(?:\s*[-+*/×÷xX]\s*{_NUM})+)\s*=\s*(-?{_NUM})(?![\d.]*\d)")


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(list("0123456789+-*/x=. ,$%ab\n") + [" = ", "12", "3.5", " + "]), max_size=40))
def test_the_linear_equation_scan_finds_what_the_old_regex_found(parts: list[str]) -> None:
    text = "".join(parts)
    assert equations(text) == _BACKTRACKING.findall(text)


class SpinVerifier(ProcessPoolVerifier):
    """Pure-Python busy work for a minute: what a pathological input does to a CPU-bound verifier."""

    kind = "spin"

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        deadline = time.monotonic() + (60 if items else 0)
        while time.monotonic() < deadline:
            sum(range(1000))
        return [0.0 for _ in items]


async def test_a_cpu_bound_verifier_times_out_within_ten_percent_and_the_loop_stays_free() -> None:
    verifier = SpinVerifier("spin", timeout_s=1.0)
    await asyncio.to_thread(verifier.load)
    batcher = VerifierBatcher(verifier)
    try:
        ticks: list[float] = []

        async def heartbeat() -> None:
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        start = time.perf_counter()
        outcome = (await batcher.submit([PairItem("p", "c")]))[0]
        elapsed = time.perf_counter() - start
        beat.cancel()
        assert outcome.error and outcome.error.startswith("timeout")
        assert 1.0 <= elapsed <= 1.1, elapsed  # the verifier timeout holds within 10 %
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert max(gaps) < 0.1, max(gaps)  # the event loop kept running while the verifier spun
        again = (await batcher.submit([PairItem("p", "other")]))[0]  # the pool replaced the killed process
        assert again.error and again.error.startswith("timeout")
    finally:
        await batcher.close()
        await verifier.aclose()


async def test_math_check_scores_in_a_child_process() -> None:
    verifier = MathCheckVerifier("math")
    await asyncio.to_thread(verifier.load)
    try:
        text = "3 + 4 = 7 and 2 * 5 = 11"
        scores = await verifier.score([PairItem("p", text)])
        assert scores == [consistency_score(text, "p")] and scores[0] < 1  # one broken equation found
    finally:
        await verifier.aclose()


def test_math_verify_agrees_from_a_worker_thread() -> None:
    answers._math_verify_cached.cache_clear()
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(answers_equivalent(r"\frac{2}{4}", "0.5")))
    thread.start()
    thread.join(60)
    assert seen == [True]  # used to be False: math-verify's signal.alarm raised in a thread
    assert answers_equivalent(r"\frac{2}{4}", "0.5") is True
    assert answers_equivalent(r"\frac{1}{3}", "0.5") is False


def test_a_math_verify_failure_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify

    answers._math_verify_cached.cache_clear()
    real_parse = math_verify.parse
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("simulated math-verify timeout")
        return real_parse(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(math_verify, "parse", flaky)
    assert answers_equivalent(r"\frac{3}{6}", "0.5") is False  # undecided reads as "not equal" once ...
    assert answers_equivalent(r"\frac{3}{6}", "0.5") is True  # ... and is computed again, not cached


def test_a_math_verify_timeout_is_not_equal_and_never_escapes() -> None:
    """math-verify's TimeoutException is a BaseException: it must read as "not equal", not crash the caller."""
    answers._math_verify_cached.cache_clear()
    assert answers_equivalent("10^{10^{10}}!", "2") is False


def test_grouping_hostile_answers_stays_within_the_math_verify_budget() -> None:
    hostile = [f"y_{{{i}}} + 10^{{10^{{10}}}}!" for i in range(16)]  # each comparison runs to its timeout
    answers._math_verify_cached.cache_clear()
    start = time.perf_counter()
    groups = answers.group_answers(hostile)
    elapsed = time.perf_counter() - start
    assert groups == list(range(16))
    # the budget, plus at most one comparison in flight when it ran out (two parses and a verify)
    assert elapsed < answers.MATH_VERIFY_BUDGET_S + 3 * answers.MATH_VERIFY_TIMEOUT_S + 1.0, elapsed
