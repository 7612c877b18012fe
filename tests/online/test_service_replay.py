"""Acceptance, through the running service: the dev set streamed as /v1/rerank requests (random
order, one at a time) into an embedded gateway with the real CPU worker. The gateway logs every
score matrix, refits every 50 queries in its background thread and swaps the worker's model.

Verifiers: the worker's cheap CPU set (answer agreement, math check) by default, so the test takes
seconds; ``WEAVER_REPLAY_VERIFIERS=answer_agreement,math_check,embedding_consistency`` adds MiniLM
(minutes on a loaded 2-core machine). Feedback labels every candidate afterwards:
every aggregator's online accuracy is then exact, and none of it reached the fits."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.aggregators import QueryScores, WeaverAggregator
from models.data import load_candidate_sets
from models.online.replay import selection_accuracy
from models.weaver import WeaverModel
from service.settings import Settings
from tests.support import wait_until_async
from workers.config import VerifierSpec, WorkerConfig
from workers.online.settings import OnlineSettings

pytestmark = pytest.mark.slow
os.environ.setdefault("HF_HUB_OFFLINE", "1")
VERIFIERS = os.environ.get("WEAVER_REPLAY_VERIFIERS", "answer_agreement,math_check").split(",")


@asynccontextmanager
async def app_client(settings: Settings, **app_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, behind an in-memory httpx client."""
    from service.app import create_app

    app = create_app(settings, **app_kwargs)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://g") as client:
        client.app = app  # type: ignore[attr-defined]
        yield client




async def test_replay_through_the_running_service(dev_set_path: Path) -> None:
    from workers.entry import Worker

    sets = load_candidate_sets(dev_set_path)
    worker = Worker.from_config(WorkerConfig(
        name="replay", generation=None,
        verifiers=[VerifierSpec(name=name, type=name) for name in VERIFIERS],
        profiles={"replay": VERIFIERS}, default_profile="replay",
    ))
    await worker.start()
    assert worker.ready(), worker.readiness_errors()
    settings = Settings(online=OnlineSettings(refit_every_queries=50, refit_every_seconds=3600, window=1000,
                                              by_task=False, poll_s=0.05))
    order = np.random.default_rng(0).permutation(len(sets))
    matrices: dict[int, np.ndarray] = {}
    served: dict[int, int] = {}
    job_ids: dict[int, str] = {}
    notes: list[str] = []
    try:
        async with app_client(settings, worker=worker) as client:
            online = client.app.state.gateway.online  # type: ignore[attr-defined]
            for q in order.tolist():
                cs = sets[q]
                response = await client.post("/v1/rerank", json={
                    "query": cs.prompt, "documents": [c.text for c in cs.candidates],
                    "verification": {"aggregator": "weaver"}})
                assert response.status_code == 200, response.text
                report = response.json()["verification"]
                by_name = {d["name"]: d["raw"] for d in report["verifiers"]}
                matrices[q] = np.array([[np.nan if by_name[n][i] is None else by_name[n][i] for n in VERIFIERS]
                                        for i in range(len(cs.candidates))], dtype=float)
                served[q], job_ids[q] = report["selected_index"], report["job_id"]
                notes.append(report["note"])
            await wait_until_async(lambda: len(online.learner.history) == 6, 30, "refits after 50, 100, ..., 300")
            assert [o.published for o in online.learner.history] == [True] * 6, \
                [o.reasons for o in online.learner.history]
            online_model: WeaverModel = online.holder.model

            # the worker serves the online model: a new request reports its version
            probe = await client.post("/v1/rerank", json={"query": sets[0].prompt,
                                                          "documents": [c.text for c in sets[0].candidates]})
            assert probe.json()["verification"]["aggregator_version"] == online_model.version
            assert notes[0].startswith("cold start")  # before the first refit the diagnostics say so
            assert any(online_model.version in note or "global model" in note for note in notes[-10:])

            # feedback: every candidate of every request labelled
            for q in order.tolist():
                for index, candidate in enumerate(sets[q].candidates):
                    fb = await client.post("/v1/feedback", json={"request_id": job_ids[q], "candidate_index": index,
                                                                 "correct": bool(candidate.correct)})
                    assert fb.status_code == 200, fb.text
            status = (await client.get("/v1/online")).json()
            unknown = await client.post("/v1/feedback", json={"request_id": "nope", "candidate_index": 0,
                                                              "correct": True})
            assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "request_not_found"
            bad = await client.post("/v1/feedback", json={"request_id": job_ids[0], "candidate_index": 9,
                                                          "correct": True})
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "candidate_index"
            assert online.holder.model.version == online_model.version  # labels changed nothing
    finally:
        await worker.close()

    queries = [QueryScores(matrices[q], tuple(VERIFIERS)) for q in range(len(sets))]
    labels = [cs.labels for cs in sets]
    offline = WeaverModel.fit([m.matrix for m in queries], VERIFIERS)
    online_acc = selection_accuracy(WeaverAggregator(online_model), queries, labels)
    offline_acc = selection_accuracy(WeaverAggregator(offline), queries, labels)
    print(f"\nservice replay: online model {100 * online_acc:.1f}% vs offline fit {100 * offline_acc:.1f}% "
          f"on {len(sets)} queries; online accuracy book: {status['accuracy']}")
    assert abs(online_acc - offline_acc) <= 0.01
    first_acc = float(np.mean([y[0] == 1 for y in labels]))
    assert status["accuracy"]["first"]["labelled"] == len(sets)
    assert status["accuracy"]["first"]["accuracy"] == pytest.approx(first_acc)
    served_acc = float(np.mean([labels[q][served[q]] == 1 for q in range(len(sets))]))
    fitted_runs = sum(not note.startswith("cold start") for note in notes)
    assert fitted_runs <= status["accuracy"]["weaver"]["labelled"] <= len(sets)  # none before the first fit
    assert {"first", "mean", "majority", "weaver"} <= set(status["accuracy"])
    print(f"served (prequential) accuracy {100 * served_acc:.1f}%; verifiers {VERIFIERS}")
