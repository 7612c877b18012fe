"""Execute a candidate program against tests from the job context, in the sandbox; score = pass rate.

``job.context["tests"]`` is a list whose items are either Python source appended after the program
(e.g. ``"assert add(2, 3) == 5"``) or ``{"input": "...", "output": "..."}`` stdin/stdout cases. Each
test runs in its own sandboxed process, so a program cannot fake a pass by tampering with a shared
harness. The code is the first fenced ``python`` block when the candidate has one, else all of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workers.verifiers.base import Item, PairItem, Score, Scored, Verifier
from workers.verifiers.sandbox import SandboxLimits, SandboxResult, run_python

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(candidate: str) -> str:
    blocks = _FENCE.findall(candidate)
    return blocks[0] if blocks else candidate


class CodeTestsVerifier(Verifier):
    kind = "code_tests"
    uses_context = True
    default_max_batch_size = 8
    default_max_wait_ms = 2.0
    default_timeout_s = 120.0

    def __init__(self, name: str, test_timeout_s: float = 5.0, memory_mb: int = 256, parallelism: int = 2,
                 max_tests: int = 50, **batching: Any) -> None:
        super().__init__(name, **batching)
        self.limits = SandboxLimits(timeout_s=test_timeout_s, cpu_s=max(1, math.ceil(test_timeout_s)),
                                    memory_mb=memory_mb)
        self.parallelism = parallelism
        self.max_tests = max_tests

    def version_params(self) -> dict[str, object]:
        return {"timeout_s": self.limits.timeout_s, "memory_mb": self.limits.memory_mb}

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            return list(pool.map(self._score_one, items))

    def _score_one(self, item: Item) -> Scored:
        assert isinstance(item, PairItem)
        tests = item.context.get("tests")
        if not isinstance(tests, list) or not tests:
            return Scored(math.nan, "no tests in the job context (context.tests)")
        tests = tests[: self.max_tests]
        program = extract_program(item.candidate)
        passed, reasons = 0, []
        for test in tests:
            ok, reason = self._run_test(program, test)
            passed += ok
            if not ok and reason not in reasons:
                reasons.append(reason)
        note = f"{passed}/{len(tests)} tests passed" + (f"; {'; '.join(reasons[:3])}" if reasons else "")
        return Scored(passed / len(tests), note)

    def _run_test(self, program: str, test: Any) -> tuple[bool, str]:
        if isinstance(test, str):
            result = run_python(f"{program}\n\n{test}\n", limits=self.limits)
            return result.ok, _reason(result)
        if isinstance(test, Mapping) and "output" in test:
            result = run_python(program, stdin=str(test.get("input", "")), limits=self.limits)
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
