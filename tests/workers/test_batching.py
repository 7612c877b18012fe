"""The dynamic batcher: ordering, coalescing, dedupe, failure isolation, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence

import pytest

from workers.batching import VerifierBatcher
from workers.cache import MemoryScoreCache
from workers.verifiers.base import GroupItem, Item, PairItem, Score, Scored, Verifier


class LengthVerifier(Verifier):
    """Scores a candidate by its length; records every batch it was given (a real, deterministic verifier)."""

    kind = "length"

    def __init__(self, name: str = "length", delay_s: float = 0.0, **batching: float) -> None:
        super().__init__(name, **batching)  # type: ignore[arg-type]
        self.delay_s = delay_s
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        self.threads.add(threading.current_thread().name)
        texts = [i.candidate for i in items if isinstance(i, PairItem)]
        self.batches.append(texts)
        if any(t == "boom" for t in texts):
            raise RuntimeError("cannot score 'boom'")
        if any(t == "hang" for t in texts):
            time.sleep(1.0)
        time.sleep(self.delay_s)
        return [float(len(t)) for t in texts]


class GroupSizeVerifier(Verifier):
    kind = "group_size"
    granularity = "group"

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        return [[float(len(c)) / 10 for c in i.candidates] for i in items if isinstance(i, GroupItem)]


def pairs(*texts: str) -> list[PairItem]:
    return [PairItem("prompt", t) for t in texts]


async def test_results_come_back_in_order() -> None:
    batcher = VerifierBatcher(LengthVerifier(max_batch_size=4, max_wait_ms=5))
    outcomes = await batcher.submit(pairs("a", "bbb", "cc", "dddddd", "e", "ffff"))
    assert [o.value for o in outcomes] == [1.0, 3.0, 2.0, 6.0, 1.0, 4.0]
    assert all(o.error is None for o in outcomes)
    await batcher.close()


async def test_concurrent_requests_are_coalesced_and_run_off_the_loop() -> None:
    verifier = LengthVerifier(max_batch_size=16, max_wait_ms=20)
    batcher = VerifierBatcher(verifier)
    jobs = [batcher.submit(pairs(f"job{j}-a", f"job{j}-bb")) for j in range(16)]
    results = await asyncio.gather(*jobs)
    for j, outcomes in enumerate(results):
        assert [o.value for o in outcomes] == [len(f"job{j}-a"), len(f"job{j}-bb")]
    assert sum(len(b) for b in verifier.batches) == 32
    assert len(verifier.batches) <= 3  # 32 items, batches of up to 16: coalesced across jobs
    assert max(len(b) for b in verifier.batches) == 16
    assert verifier.threads and threading.main_thread().name not in verifier.threads
    await batcher.close()


async def test_identical_items_are_scored_once() -> None:
    verifier = LengthVerifier(max_batch_size=64, max_wait_ms=10)
    batcher = VerifierBatcher(verifier)
    first, second = await asyncio.gather(batcher.submit(pairs("same", "other")), batcher.submit(pairs("same")))
    assert first[0].value == second[0].value == 4.0
    scored = [t for b in verifier.batches for t in b]
    assert sorted(scored) == ["other", "same"]
    assert batcher.stats.deduped == 1
    await batcher.close()


async def test_cache_hits_skip_the_verifier() -> None:
    verifier = LengthVerifier(max_wait_ms=0)
    cache = MemoryScoreCache()
    batcher = VerifierBatcher(verifier, cache)
    await batcher.submit(pairs("xyz"))
    again = await batcher.submit(pairs("xyz"))
    assert again[0].value == 3.0 and again[0].cached
    assert len(verifier.batches) == 1
    await batcher.close()


async def test_a_failing_item_does_not_poison_its_batch() -> None:
    verifier = LengthVerifier(max_batch_size=8, max_wait_ms=10)
    batcher = VerifierBatcher(verifier)
    outcomes = await batcher.submit(pairs("ok", "boom", "fine"))
    assert outcomes[0].value == 2.0 and outcomes[2].value == 4.0
    assert outcomes[1].value is None and "cannot score 'boom'" in (outcomes[1].error or "")
    assert math.isnan(outcomes[1].as_floats(1)[0])
    await batcher.close()


async def test_timeout_yields_nan_and_an_error_and_the_next_batch_is_unaffected() -> None:
    verifier = LengthVerifier(max_batch_size=8, max_wait_ms=0, timeout_s=0.2)
    batcher = VerifierBatcher(verifier)
    timed_out = await batcher.submit(pairs("hang"))
    assert timed_out[0].value is None and (timed_out[0].error or "").startswith("timeout after 0.2s")
    later = await batcher.submit(pairs("quick"))  # waits for the stuck thread, then gets its own 0.2 s
    assert later[0].value == 5.0
    assert batcher.stats.timeouts == 1
    await batcher.close()


async def test_cancelled_callers_are_dropped_before_their_batch_runs() -> None:
    verifier = LengthVerifier(max_batch_size=1, max_wait_ms=0, delay_s=0.3)
    batcher = VerifierBatcher(verifier)
    running = asyncio.create_task(batcher.submit(pairs("first")))
    await asyncio.sleep(0.05)  # "first" is executing; the next one queues behind it
    doomed = asyncio.create_task(batcher.submit(pairs("cancel-me")))
    await asyncio.sleep(0.05)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert (await running)[0].value == 5.0
    after = await batcher.submit(pairs("after"))
    assert after[0].value == 5.0
    assert ["cancel-me"] not in verifier.batches
    assert batcher.stats.dropped_cancelled == 1
    await batcher.close()


class SlowAsyncVerifier(Verifier):
    """An async verifier (like a sandbox or a remote call) that records whether its call was cancelled."""

    kind = "slow-async"

    def __init__(self) -> None:
        super().__init__("slow-async", max_batch_size=4, max_wait_ms=0, timeout_s=30)
        self.started = asyncio.Event()
        self.cancelled = False

    async def score(self, items: Sequence[Item], executor: object = None) -> list[Score | Scored]:
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return [1.0 for _ in items]


async def test_a_running_batch_whose_callers_all_left_is_cancelled() -> None:
    verifier = SlowAsyncVerifier()
    batcher = VerifierBatcher(verifier)
    first = asyncio.create_task(batcher.submit(pairs("a", "b")))
    second = asyncio.create_task(batcher.submit(pairs("c")))
    await asyncio.wait_for(verifier.started.wait(), 5)
    first.cancel()
    await asyncio.sleep(0.05)
    assert not verifier.cancelled  # "c" still has a caller: the batch keeps running
    second.cancel()
    for _ in range(100):
        if verifier.cancelled:
            break
        await asyncio.sleep(0.01)
    assert verifier.cancelled and batcher.stats.cancelled_batches == 1
    await batcher.close()


async def test_group_verifiers_get_whole_groups() -> None:
    batcher = VerifierBatcher(GroupSizeVerifier("group", max_wait_ms=5))
    a, b = await asyncio.gather(batcher.submit([GroupItem("p", ("a", "bb"))]),
                                batcher.submit([GroupItem("q", ("ccc",))]))
    assert a[0].value == [0.1, 0.2] and b[0].value == [0.3]
    assert a[0].as_floats(2) == [0.1, 0.2]
    await batcher.close()


async def test_wrong_shaped_output_is_an_error_not_a_crash() -> None:
    class Broken(LengthVerifier):
        def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
            return [1.0]  # one score for any batch

    batcher = VerifierBatcher(Broken(max_batch_size=8, max_wait_ms=10))
    outcomes = await batcher.submit(pairs("a", "b"))
    assert [o.value for o in outcomes] == [1.0, 1.0]  # isolated retries of single items succeed
    broken_group = VerifierBatcher(GroupSizeVerifier("g"))
    broken_group.verifier.score_sync = lambda items: [[1.0]]  # type: ignore[method-assign]
    out = await broken_group.submit([GroupItem("p", ("a", "b"))])
    assert out[0].value is None and "group of 2" in (out[0].error or "")
    await batcher.close()
    await broken_group.close()
