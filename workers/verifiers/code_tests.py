"""Execute a candidate program against tests from the job context, in the sandbox; score = pass rate.

``job.context["tests"]`` is a list whose items are either Python source appended after the program
(e.g. ``"assert add(2, 3) == 5"``) or ``{"input": "...", "output": "..."}`` stdin/stdout cases. Each
test runs in its own sandboxed process, so a program cannot fake a pass by tampering with a shared
harness. The code is the first fenced ``python`` block when the candidate has one, else all of it.

The verifier refuses to load when the OS sandbox (bubblewrap) is not usable on this host, unless the
operator sets ``allow_unisolated: true``; readiness then carries the reason. Runs are awaited on the
event loop, so a timed-out or cancelled batch kills its sandboxes at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from prometheus_client import Gauge

from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier
from workers.verifiers.isolation import isolation_status
from workers.verifiers.sandbox import SandboxLimits, SandboxResult, clean_stale_workdirs, run_python_async

log = logging.getLogger(__name__)

_GAUGE: list[Gauge] = []


def sandbox_gauge() -> Gauge:
    """``weaver_sandbox_available``, registered when a code_tests verifier first loads: a process without
    code_tests exports no sample (an unlabelled gauge would read 0 and fire the sandbox alert for nothing)."""
    if not _GAUGE:
        _GAUGE.append(Gauge("weaver_sandbox_available",
                            "1 when the OS sandbox (bubblewrap) works for code_tests on this worker, else 0",
                            multiprocess_mode="min"))
    return _GAUGE[0]

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(candidate: str) -> str:
    blocks = _FENCE.findall(candidate)
    return blocks[0] if blocks else candidate


class CodeTestsVerifier(Verifier):
    kind = "code_tests"
    expected_cost_s = 0.5
    uses_context = True
    default_max_batch_size = 8
    default_max_wait_ms = 2.0
    default_timeout_s = 120.0

    def __init__(self, name: str, test_timeout_s: float = 5.0, memory_mb: int = 256, parallelism: int = 2,
                 max_tests: int = 50, max_output_bytes: int = 1 << 20, allow_unisolated: bool = False,
                 **batching: Any) -> None:
        super().__init__(name, **batching)
        self.limits = SandboxLimits(timeout_s=test_timeout_s, cpu_s=max(1, math.ceil(test_timeout_s)),
                                    memory_mb=memory_mb, max_output_bytes=max_output_bytes)
        self.parallelism = parallelism
        self.max_tests = max_tests
        self.allow_unisolated = allow_unisolated
        self.isolated = True
        self.isolation = "not probed yet"

    def version_params(self) -> dict[str, object]:
        return {"timeout_s": self.limits.timeout_s, "memory_mb": self.limits.memory_mb}

    def load(self) -> None:
        """Remove dead workers' sandbox directories; refuse to serve without the OS boundary unless allowed."""
        removed = clean_stale_workdirs()
        if removed:
            log.info("removed %d stale sandbox directories", len(removed))
        status = isolation_status()
        sandbox_gauge().set(1 if status.available else 0)
        self.isolation = f"{status.tool}: {status.reason}" if status.available else f"unavailable: {status.reason}"
        if status.available:
            self.isolated = True
            return
        if not self.allow_unisolated:
            raise RuntimeError(f"no OS sandbox: {status.reason}; code_tests will not run candidate code "
                               "without one (set allow_unisolated: true to accept rlimits and an audit hook only)")
        log.warning("code_tests runs WITHOUT an OS sandbox (allow_unisolated): %s", status.reason)
        self.isolated = False

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "isolated": self.isolated, "isolation": self.isolation}

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        return asyncio.run(self._score_all(items))

    async def score(self, items: Sequence[Item], executor: Executor | None = None) -> list[Score | Scored]:
        """On the event loop (the sandboxes are subprocesses): cancelling this kills every running one."""
        return await self._score_all(items)

    async def _score_all(self, items: Sequence[Item]) -> list[Score | Scored]:
        slots = asyncio.Semaphore(self.parallelism)
        return list(await asyncio.gather(*(self._score_one(item, slots) for item in items)))

    async def _score_one(self, item: Item, slots: asyncio.Semaphore) -> Scored:
        assert isinstance(item, PairItem)
        tests = item.context.get("tests")
        if not isinstance(tests, list) or not tests:
            return Scored(math.nan, "no tests in the job context (context.tests)")
        tests = tests[: self.max_tests]
        program = extract_program(item.candidate)
        passed, reasons = 0, []
        for test in tests:
            async with slots:
                ok, reason = await self._run_test(program, test)
            passed += ok
            if not ok and reason not in reasons:
                reasons.append(reason)
        note = f"{passed}/{len(tests)} tests passed" + (f"; {'; '.join(reasons[:3])}" if reasons else "")
        return Scored(passed / len(tests), note)

    async def _run(self, source: str, stdin: str = "") -> SandboxResult:
        return await run_python_async(source, stdin, self.limits, isolated=self.isolated)

    async def _run_test(self, program: str, test: Any) -> tuple[bool, str]:
        if isinstance(test, str):
            result = await self._run(f"{program}\n\n{test}\n")
            return result.ok, _reason(result)
        if isinstance(test, Mapping) and "output" in test:
            result = await self._run(program, stdin=str(test.get("input", "")))
            if not result.ok:
                return False, _reason(result)
            if result.stdout.strip() != str(test["output"]).strip():
                return False, "wrong output"
            return True, ""
        return False, f"unsupported test {type(test).__name__}: use source text or {{input, output}}"


def _reason(result: SandboxResult) -> str:
    reason = result.reason()
    if "MemoryError" in reason:
        return "memory limit exceeded (MemoryError)"
    return reason
