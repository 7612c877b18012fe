"""Wire shapes of the client-compatibility faces (rerank faces, /v1/models/{id}, refused chat parameters,
malformed JSON), checked field by field against the shapes the stock servers answer.

The fake worker scores by length (deterministic, instant): these tests pin the gateway's shapes and
checks; tests/service/test_client_compat.py drives the real client libraries against a real server.
"""

from __future__ import annotations

import math

from service.settings import Settings
from tests.service.gateway_fakes import FakeWorker
from tests.service.gateway_support import app_client, assert_error

DOCS = ["4", "four, since 2+2=4", "5"]  # the fake scores by length: index 1, then 0 and 2 tied
QUERY = "What is 2+2?"


class GeneratingWorker(FakeWorker):
    """The fake worker plus a generator description, as the real worker gives when generation is configured."""

    def describe_generation(self) -> dict[str, str]:
        return {"backend": "fake", "model": "org/tiny-gen"}


async def test_cohere_v1_jina_shape() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        body = {"model": "weaver", "query": QUERY, "documents": [DOCS[0], {"text": DOCS[1]}, DOCS[2]],
                "top_n": 2, "return_documents": True}
        response = await client.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == {"id", "model", "results", "meta", "usage", "verification"}
    assert data["model"] == "weaver"
    assert [r["index"] for r in data["results"]] == [1, 0]
    assert data["results"][0]["document"] == {"text": DOCS[1]}
    scores = [r["relevance_score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert data["meta"] == {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}}
    # word pieces: "What is 2+2?" = What, is, 2, +, 2, ? (6); docs: 1 + (four , since 2 + 2 = 4 = 8) + 1
    assert data["usage"] == {"prompt_tokens": 16, "total_tokens": 16}
    assert data["verification"]["selected_index"] == 1


async def test_documents_are_left_out_unless_asked() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        data = (await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})).json()
    assert all(set(r) == {"index", "relevance_score"} for r in data["results"])
    assert len(data["results"]) == 3


async def test_cohere_v2_shape() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        body = {"model": "weaver", "query": QUERY, "documents": DOCS, "top_n": 1, "priority": 0}
        response = await client.post("/v2/rerank", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == {"id", "model", "results", "meta", "verification"}
    assert data["results"] == [{"index": 1, "relevance_score": data["results"][0]["relevance_score"]}]
    assert data["meta"]["api_version"] == {"version": "2"}


async def test_tei_shape_with_raw_scores_and_text() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        plain = (await client.post("/rerank", json={"query": QUERY, "texts": DOCS})).json()
        raw = (await client.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True,
                                                  "return_text": True, "truncate": True,
                                                  "truncation_direction": "Right"})).json()
    assert isinstance(plain, list) and [set(r) for r in plain] == [{"index", "score"}] * 3
    assert plain[0]["index"] == 1
    by_index = {r["index"]: r for r in raw}
    for r in plain:  # raw = log-odds of the probability
        p = r["score"]
        assert math.isclose(by_index[r["index"]]["score"], math.log(p / (1 - p)), rel_tol=1e-9)
        assert by_index[r["index"]]["text"] == DOCS[r["index"]]


async def test_infinity_shape_has_string_documents() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        body = {"model": "weaver", "query": QUERY, "documents": DOCS, "return_documents": True}
        data = (await client.post("/rerank", json=body)).json()
    assert data["object"] == "rerank" and set(data["usage"]) == {"prompt_tokens", "total_tokens"}
    assert data["results"][0] == {"index": 1, "relevance_score": data["results"][0]["relevance_score"],
                                  "document": DOCS[1]}


async def test_rerank_refuses_unknown_model_and_unsupported_parameters() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        for path in ("/v1/rerank", "/v2/rerank", "/rerank"):
            error = assert_error(await client.post(path, json={"model": "rerank-v3.5", "query": QUERY,
                                                               "documents": DOCS}), 404, "model_not_found")
            assert error["param"] == "model" and "available: weaver" in error["message"]
        for path, name, value in [("/v1/rerank", "rank_fields", ["title"]), ("/v2/rerank", "max_tokens_per_doc", 512),
                                  ("/v1/rerank", "max_chunks_per_doc", 4)]:
            body = {"query": QUERY, "documents": DOCS, name: value}
            error = assert_error(await client.post(path, json=body), 400, "unsupported_parameter")
            assert error["param"] == name
        error = assert_error(await client.post("/v1/rerank", json={"query": QUERY, "documents": ["a", {"title": "b"}]}),
                             400, "invalid_value")
        assert error["param"] == "documents" and "documents[1] must be a string or an object" in error["message"]
        error = assert_error(await client.post("/rerank", json={"query": QUERY, "texts": []}), 400)
        assert error["param"] == "texts"
        error = assert_error(await client.post("/rerank", json={"query": QUERY}), 400)
        assert error["param"] == "documents" and error["message"] == "documents: Field required"


async def test_models_list_and_retrieve_include_the_generator() -> None:
    async with app_client(Settings(), worker=GeneratingWorker()) as client:
        listed = (await client.get("/v1/models")).json()
        assert [m["id"] for m in listed["data"]] == ["weaver", "org/tiny-gen"]
        card = await client.get("/v1/models/weaver")
        assert card.status_code == 200 and card.json()["id"] == "weaver" and card.json()["object"] == "model"
        assert (await client.get("/v1/models/org/tiny-gen")).json()["id"] == "org/tiny-gen"
        error = assert_error(await client.get("/v1/models/gpt-9"), 404, "model_not_found")
        assert error["param"] == "model"
        # chat and rerank accept the same names
        chat = {"model": "org/tiny-gen", "messages": [{"role": "user", "content": QUERY}]}
        assert (await client.post("/v1/chat/completions", json=chat)).status_code == 200
        rerank = {"model": "org/tiny-gen", "query": QUERY, "documents": DOCS}
        assert (await client.post("/v1/rerank", json=rerank)).json()["model"] == "org/tiny-gen"


CHAT = {"model": "weaver", "messages": [{"role": "user", "content": QUERY}]}


async def test_chat_refuses_tools_and_json_mode_naming_the_parameter() -> None:
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    async with app_client(Settings(), worker=FakeWorker()) as client:
        for name, value in [("tools", [tool]), ("tool_choice", "required"), ("functions", [tool["function"]]),
                            ("response_format", {"type": "json_object"}), ("logprobs", True)]:
            error = assert_error(await client.post("/v1/chat/completions", json={**CHAT, name: value}), 400,
                                 "unsupported_parameter")
            assert error["param"] == name and name in error["message"]
        # what stock clients send by default is harmless and accepted
        harmless = {**CHAT, "tools": [], "tool_choice": "none", "response_format": {"type": "text"},
                    "logprobs": False, "parallel_tool_calls": True}
        assert (await client.post("/v1/chat/completions", json=harmless)).status_code == 200


async def test_n_above_the_default_n_candidates_is_400() -> None:
    worker = FakeWorker()
    async with app_client(Settings(default_n_candidates=4), worker=worker) as client:
        error = assert_error(await client.post("/v1/chat/completions", json={**CHAT, "n": 5}), 400, "invalid_value")
        assert error["param"] == "n" and "n_candidates=4 (the default)" in error["message"]
        ok = await client.post("/v1/chat/completions", json={**CHAT, "n": 5, "verification": {"n_candidates": 5}})
        assert ok.status_code == 200 and len(ok.json()["choices"]) == 5
        assert len((await client.post("/v1/chat/completions", json={**CHAT, "n": 4})).json()["choices"]) == 4
    assert len(worker.runs) == 2  # the refused request never reached the worker


async def test_malformed_json_says_where_and_what() -> None:
    async with app_client(Settings(), worker=FakeWorker()) as client:
        broken = b'{"model": "weaver",\n  "messages": [}'
        response = await client.post("/v1/chat/completions", content=broken,
                                     headers={"content-type": "application/json"})
        error = assert_error(response, 400, "invalid_json")
        assert error["param"] is None
        assert error["message"].startswith("request body is not valid JSON: ")
        assert "line 2, column 16" in error["message"], error["message"]
        empty = await client.post("/v1/rerank", content=b"", headers={"content-type": "application/json"})
        assert "empty" in assert_error(empty, 400, "invalid_json")["message"]


async def test_cold_start_refusal_names_the_score_it_compared() -> None:
    from service.api.chat.service import abstention_text
    from workers.contract import CandidateResult, JobResult

    cold = JobResult(id="j", candidates=[CandidateResult(index=0, text="a", score=0.5, rank=0)], selected_index=0,
                     confidence=None, aggregator="weaver", aggregator_note="cold start: no fitted model")
    text = abstention_text(cold, 0.99)
    assert "no calibrated confidence" in text and "score 0.500" in text and "confidence 0.500" not in text
    warm = cold.model_copy(update={"confidence": 0.42})
    assert abstention_text(warm, 0.99) == "abstained: confidence 0.420 is below min_confidence 0.99"


async def test_verification_summary_header_on_every_face() -> None:
    """Clients that drop unknown body fields (LangChain) or have no room for them (TEI) read the header."""
    import json

    async with app_client(Settings(), worker=FakeWorker()) as client:
        responses = [
            await client.post("/v1/chat/completions", json=CHAT),
            await client.post("/v1/chat/completions", json={**CHAT, "stream": True}),
            await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}),
            await client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS}),
            await client.post("/rerank", json={"query": QUERY, "texts": DOCS}),
        ]
    for response in responses:
        assert response.status_code == 200, response.text
        summary = json.loads(response.headers["x-weaver-verification"])
        assert summary["job_id"] and summary["aggregator"] == "weaver"
        assert summary["verifiers"] == [{"name": "length", "kept": True, "estimated_accuracy": None, "error": None}]
    tei = json.loads(responses[-1].headers["x-weaver-verification"])
    assert tei["selected_index"] == responses[-1].json()[0]["index"]
