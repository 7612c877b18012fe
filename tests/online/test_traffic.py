"""Online learning logs each answer off the request's path, yet feedback right after an answer finds it."""

from __future__ import annotations

import threading
import time

from service.settings import Settings
from tests.service.gateway_fakes import FakeWorker
from tests.service.gateway_support import app_client
from workers.contract import Job, JobResult
from workers.online.traffic import OBSERVATIONS_DROPPED, TrafficLog


def dropped() -> float:
    return OBSERVATIONS_DROPPED._value.get()  # noqa: SLF001


async def test_an_observation_does_not_hold_the_caller_and_later_calls_run_after_it() -> None:
    release = threading.Event()
    order: list[str] = []

    def slow_sink(batch: list[str]) -> None:
        release.wait(10)
        order.extend(batch)

    traffic: TrafficLog[str] = TrafficLog(slow_sink)
    assert traffic.observe("observed")  # returns while the sink is still blocked
    assert order == []
    release.set()
    assert await traffic.call(lambda: order.append("feedback") or len(order)) == 2
    assert order == ["observed", "feedback"]
    traffic.close()


async def test_what_queues_up_while_the_thread_is_busy_is_logged_as_one_batch() -> None:
    release = threading.Event()
    batches: list[list[int]] = []

    def sink(batch: list[int]) -> None:
        release.wait(10)
        batches.append(batch)

    traffic: TrafficLog[int] = TrafficLog(sink)
    for i in range(10):
        traffic.observe(i)
    release.set()
    await traffic.call(lambda: None)
    assert [i for batch in batches for i in batch] == list(range(10))
    assert len(batches) <= 2  # the first item alone at most, then the nine that queued behind it together
    traffic.close()


async def test_the_backlog_is_bounded_and_what_it_drops_is_counted() -> None:
    release = threading.Event()
    logged: list[int] = []

    def blocked_sink(batch: list[int]) -> None:
        release.wait(10)
        logged.extend(batch)

    traffic: TrafficLog[int] = TrafficLog(blocked_sink, max_pending=2)
    before = dropped()
    accepted = [traffic.observe(i) for i in range(5)]
    assert accepted == [True, True, False, False, False]
    assert dropped() == before + 3
    release.set()
    traffic.close()  # logs what was accepted
    assert logged == [0, 1]
    assert not traffic.observe(9)  # closed: refused, counted
    assert dropped() == before + 4


async def test_a_failing_sink_is_logged_and_the_thread_goes_on() -> None:
    def broken(batch: list[int]) -> None:
        raise RuntimeError("boom")

    traffic: TrafficLog[int] = TrafficLog(broken)
    assert traffic.observe(1)
    assert await traffic.call(lambda: "still running") == "still running"
    assert traffic.observe(2)  # its slot came back
    traffic.close()


class ScoringWorker(FakeWorker):
    """The fake worker plus a score matrix, so its answers are logged for online learning."""

    async def run(self, job: Job) -> JobResult:
        result = await super().run(job)
        by_index = sorted(result.candidates, key=lambda c: c.index)
        result.scores = [[c.score] for c in by_index]
        return result


async def test_feedback_sent_right_after_the_answer_finds_the_request() -> None:
    async with app_client(Settings(), worker=ScoringWorker()) as client:
        online = client._transport.app.state.gateway.online  # type: ignore[attr-defined]  # noqa: SLF001
        sink = online.traffic.sink

        def slow_sink(batch: list[tuple[Job | None, JobResult]]) -> None:
            time.sleep(0.05)  # the log lags behind the answers
            sink(batch)

        online.traffic.sink = slow_sink
        for _ in range(5):
            answer = await client.post("/v1/rerank", json={"query": "q", "documents": ["a", "bb", "ccc"]})
            assert answer.status_code == 200, answer.text
            job_id = answer.json()["verification"]["job_id"]
            feedback = await client.post("/v1/feedback", json={"request_id": job_id, "candidate_index": 0,
                                                               "correct": True})
            assert feedback.status_code == 200, feedback.text
