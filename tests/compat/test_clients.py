"""Every stock client in the compatibility table of docs/clients.md, run against a real ``weaver serve``.

The table is the contract: each row names a check below by id; the table and ``CHECKS`` must list the
same ids, and every row the table marks "works" is run here. Clients without a Python SDK on the
package index (TEI, Jina) are checked against the response schema their servers document.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable

import httpx
import jsonschema
import pytest

from tests.compat.compat_server import Server
from tests.support import ROOT

pytestmark = pytest.mark.slow
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not fetch its price list

DOCS = ROOT / "docs" / "clients.md"
QUERY = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in total?"
DOCUMENTS = ["48 + 24 = 72. The answer is 72.", "She sold 48 + 96 = 144. The answer is 144.",
             "Half of 48 is 24, so 48 + 24 = 72. The answer is 72."]
MESSAGES = [{"role": "user", "content": "What is 12 + 30?"}]


def _openai(server: Server, key: str | None = None):  # noqa: ANN202 - the client type is the SDK's
    import openai

    return openai.OpenAI(base_url=server.v1, api_key=key or server.key, max_retries=0, timeout=120)


def _check_ranked(indices: list[int], scores: list[float], n: int) -> None:
    assert len(indices) == n and len(set(indices)) == n and all(0 <= i < len(DOCUMENTS) for i in indices)
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)


def openai_chat(server: Server) -> None:
    completion = _openai(server).chat.completions.create(
        model="weaver", messages=MESSAGES, max_tokens=16, n=2, extra_body={"verification": {"n_candidates": 2}})
    assert len(completion.choices) == 2 and all(isinstance(c.message.content, str) for c in completion.choices)
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.model_extra["verification"]["selected_index"] in (0, 1)


def openai_stream(server: Server) -> None:
    chunks = list(_openai(server).chat.completions.create(
        model="weaver", messages=MESSAGES, max_tokens=16, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert isinstance(text, str)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0 and chunks[-1].choices == []
    assert any((c.model_extra or {}).get("verification") for c in chunks)


def openai_models_list(server: Server) -> None:
    ids = [m.id for m in _openai(server).models.list().data]
    assert ids[0] == "weaver" and server.generator in ids


def openai_models_retrieve(server: Server) -> None:
    import openai

    client = _openai(server)
    assert client.models.retrieve("weaver").id == "weaver"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.code == "model_not_found"


def openai_errors(server: Server) -> None:
    import openai

    client = _openai(server)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="weaver", messages=MESSAGES, tools=[tool])
    assert refused.value.param == "tools" and refused.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="weaver", messages=MESSAGES, n=3)  # default n_candidates is 2
    assert too_many.value.param == "n"
    with pytest.raises(openai.AuthenticationError):
        _openai(server, key="wrong-key").models.list()


def cohere_v2(server: Server) -> None:
    import cohere

    response = cohere.ClientV2(api_key=server.key, base_url=server.root).rerank(
        model="weaver", query=QUERY, documents=DOCUMENTS, top_n=2)
    _check_ranked([r.index for r in response.results], [r.relevance_score for r in response.results], 2)
    assert response.meta is not None and response.meta.billed_units.search_units == 1
    assert response.verification["selected_index"] == response.results[0].index  # the extension, kept as extra


def cohere_v1(server: Server) -> None:
    import cohere

    response = cohere.Client(api_key=server.key, base_url=server.root).rerank(
        model="weaver", query=QUERY, documents=DOCUMENTS, top_n=3, return_documents=True)
    _check_ranked([r.index for r in response.results], [r.relevance_score for r in response.results], 3)
    assert [r.document.text for r in response.results] == [DOCUMENTS[r.index] for r in response.results]


def litellm_cohere(server: Server) -> None:
    import litellm

    response = litellm.rerank(model="cohere/weaver", query=QUERY, documents=DOCUMENTS, top_n=2,
                              api_base=server.root, api_key=server.key)
    _check_ranked([r["index"] for r in response.results], [r["relevance_score"] for r in response.results], 2)


def litellm_infinity(server: Server) -> None:
    import litellm

    response = litellm.rerank(model="infinity/weaver", query=QUERY, documents=DOCUMENTS, return_documents=True,
                              api_base=server.root, api_key=server.key)
    results = response.results
    _check_ranked([r["index"] for r in results], [r["relevance_score"] for r in results], 3)
    assert [r["document"]["text"] for r in results] == [DOCUMENTS[r["index"]] for r in results]


# TEI's and Jina's documented response bodies (no SDK on the package index to run instead)
TEI_SCHEMA = {
    "type": "array", "minItems": 1,
    "items": {"type": "object", "required": ["index", "score"], "additionalProperties": False,
              "properties": {"index": {"type": "integer", "minimum": 0}, "score": {"type": "number"},
                             "text": {"type": "string"}}},
}
JINA_SCHEMA = {
    "type": "object", "required": ["model", "usage", "results"],
    "properties": {
        "model": {"type": "string"},
        "usage": {"type": "object", "required": ["total_tokens"],
                  "properties": {"total_tokens": {"type": "integer", "minimum": 1}}},
        "results": {"type": "array", "items": {
            "type": "object", "required": ["index", "relevance_score", "document"],
            "properties": {"index": {"type": "integer"}, "relevance_score": {"type": "number"},
                           "document": {"type": "object", "required": ["text"],
                                        "properties": {"text": {"type": "string"}}}}}},
    },
}


def _auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}"}


def tei_rerank(server: Server) -> None:
    body = {"query": QUERY, "texts": DOCUMENTS, "raw_scores": False, "return_text": True, "truncate": True}
    response = httpx.post(f"{server.root}/rerank", json=body, headers=_auth(server), timeout=120)
    assert response.status_code == 200, response.text
    ranks = response.json()
    jsonschema.validate(ranks, TEI_SCHEMA)
    _check_ranked([r["index"] for r in ranks], [r["score"] for r in ranks], 3)
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in ranks)
    summary = json.loads(response.headers["x-weaver-verification"])
    assert summary["selected_index"] == ranks[0]["index"]


def jina_rerank(server: Server) -> None:
    body = {"model": "weaver", "query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": True}
    response = httpx.post(f"{server.v1}/rerank", json=body, headers=_auth(server), timeout=120)
    assert response.status_code == 200, response.text
    data = response.json()
    jsonschema.validate(data, JINA_SCHEMA)
    _check_ranked([r["index"] for r in data["results"]], [r["relevance_score"] for r in data["results"]], 2)


def _chat_model(server: Server):  # noqa: ANN202
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="weaver", base_url=server.v1, api_key=server.key, max_tokens=16, max_retries=0,
                      include_response_headers=True, extra_body={"verification": {"n_candidates": 2}})


def langchain_chat(server: Server) -> None:
    llm = _chat_model(server)
    message = llm.invoke("What is 12 + 30?")
    assert isinstance(message.content, str) and message.usage_metadata["output_tokens"] > 0
    streamed = list(llm.stream("What is 12 + 30?"))
    assert streamed and all(isinstance(c.content, str) for c in streamed)
    batch = llm.batch(["What is 1 + 1?", "What is 2 + 2?"])
    assert len(batch) == 2 and all(isinstance(m.content, str) for m in batch)


def langchain_verification(server: Server) -> None:
    llm = _chat_model(server)
    message = llm.invoke("What is 12 + 30?")
    verification = json.loads(message.response_metadata["headers"]["x-weaver-verification"])
    assert verification["selected_index"] in (0, 1) and verification["aggregator"]  # cold start: "mean"
    assert {v["name"] for v in verification["verifiers"]} == {"answer_agreement", "math_check"}
    streamed = None
    for chunk in llm.stream("What is 12 + 30?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None
    assert json.loads(streamed.response_metadata["headers"]["x-weaver-verification"])["job_id"]
    strict = _chat_model(server).bind(extra_body={"verification": {"n_candidates": 2, "min_confidence": 1.0}})
    message = strict.invoke("What is 12 + 30?")
    verification = json.loads(message.response_metadata["headers"]["x-weaver-verification"])
    assert verification["min_confidence"] == 1.0
    assert ("refusal" in message.additional_kwargs) == verification["abstained"]  # an abstention keeps its reason


CHECKS: dict[str, Callable[[Server], None]] = {
    "openai-chat": openai_chat,
    "openai-stream": openai_stream,
    "openai-models-list": openai_models_list,
    "openai-models-retrieve": openai_models_retrieve,
    "openai-errors": openai_errors,
    "cohere-v2": cohere_v2,
    "cohere-v1": cohere_v1,
    "litellm-cohere": litellm_cohere,
    "litellm-infinity": litellm_infinity,
    "tei": tei_rerank,
    "jina": jina_rerank,
    "langchain-chat": langchain_chat,
    "langchain-verification": langchain_verification,
}


def table_rows() -> list[dict[str, str]]:
    """The rows of the table between the compat-table markers in docs/clients.md."""
    text = DOCS.read_text()
    body = text.split("<!-- compat-table:start -->")[1].split("<!-- compat-table:end -->")[0]
    lines = [line.strip() for line in body.strip().splitlines() if line.strip().startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def _check_id(row: dict[str, str]) -> str:
    match = re.fullmatch(r"`([a-z0-9-]+)`", row["test"])
    assert match, f"test cell must be a backticked check id: {row}"
    return match.group(1)


def test_the_table_and_the_checks_agree() -> None:
    rows = table_rows()
    ids = [_check_id(row) for row in rows]
    assert sorted(ids) == sorted(CHECKS), "docs/clients.md and CHECKS must list the same checks"
    assert all(row["status"] == "works" for row in rows), [r for r in rows if r["status"] != "works"]


@pytest.mark.parametrize("check_id", list(CHECKS))
def test_client(check_id: str, server: Server) -> None:
    CHECKS[check_id](server)
