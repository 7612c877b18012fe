"""A small stand-in for ``workers.entry.Worker``, used ONLY for queue and error-path tests.

It scores candidates by length so results are deterministic and instant; acceptance tests use the real worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from workers.cancellation import JOBS_CANCELLED
from workers.contract import CandidateResult, GenerationInfo, Job, JobResult, VerifierDiagnostics


class FakeWorker:
    def __init__(self, delay_s: float = 0.0, ready: bool = True, errors: dict[str, str] | None = None) -> None:
        self.delay_s = delay_s
        self._ready = ready
        self._errors = errors or {}
        self.runs: list[str] = []

    def ready(self) -> bool:
        return self._ready

    def readiness_errors(self) -> dict[str, str]:
        return self._errors

    def describe_verifiers(self) -> list[dict[str, Any]]:
        stats = {"items": 7, "cache_hits": 2, "deduped": 1, "batches": 3, "errors": 0, "timeouts": 0}
        return [{"name": "length", "type": "fake", "stats": stats}, {"name": "echo", "type": "fake"}]

    def available_verifiers(self) -> list[str]:
        return ["length", "echo"]

    def profiles(self) -> dict[str, list[str]]:
        return {"cheap": ["length"]}

    async def pause(self) -> None:
        """The job's work: ``delay_s`` of waiting that a cancellation interrupts at once."""
        if self.delay_s:
            await asyncio.sleep(self.delay_s)

    async def run(self, job: Job) -> JobResult:
        self.runs.append(job.id)
        await self.pause()
        texts = job.candidates or [f"answer {i}" * (i + 1) for i in range(job.n_candidates)]
        scores = [len(t) / (1 + max(len(x) for x in texts)) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        candidates = [
            CandidateResult(index=i, text=t, score=scores[i], rank=order.index(i), completion_tokens=3)
            for i, t in enumerate(texts)
        ]
        generation = None
        if job.kind == "generate":
            generation = GenerationInfo(
                backend="fake",
                model="fake",
                requested=job.n_candidates,
                returned=len(texts),
                prompt_tokens=5,
                completion_tokens=3 * len(texts),
            )
        return JobResult(
            id=job.id,
            candidates=candidates,
            selected_index=order[0],
            confidence=scores[order[0]],
            margin=scores[order[0]] - scores[order[1]] if len(order) > 1 else None,
            aggregator=job.aggregator,
            verifier_names=["length"],
            diagnostics=[
                VerifierDiagnostics(
                    name="length",
                    kind="fake",
                    version="1",
                    raw=scores,
                    normalized=scores,
                    vote=[int(s > 0.5) for s in scores],
                    estimated_accuracy=None,
                    kept=True,
                    latency_s=0.001,
                )
            ],
            generation=generation,
            timings={"total": 0.001},
            worker=f"fake@{time.time():.0f}",
        )

    async def close(self) -> None:
        return None


class RecordingWorker(FakeWorker):
    """The fake worker, noting which runs were cancelled (and so stopped working)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.cancelled: list[str] = []

    async def run(self, job: Job) -> JobResult:
        try:
            return await super().run(job)
        except asyncio.CancelledError:
            self.cancelled.append(job.id)
            raise


def cancelled_count(reason: str) -> float:
    """``weaver_jobs_cancelled_total{reason}`` as this process counts it."""
    return JOBS_CANCELLED.labels(reason)._value.get()  # noqa: SLF001
