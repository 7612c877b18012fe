"""HTTP for chat completions: resolve dependencies, call the service, shape JSON or SSE."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from service.api.chat.protocol import ChatCompletionRequest, ChatCompletionResponse
from service.api.chat.service import create_chat_completion, stream_chunks
from service.api.verification import verification_header
from service.deps import StateDep, require_api_key
from service.errors import ERROR_RESPONSES
from service.jobs import require_loaded

router = APIRouter(prefix="/v1", tags=["chat"], dependencies=[Depends(require_api_key), Depends(require_loaded)])


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
    summary="Sample N candidates, verify them, return the top n (OpenAI-compatible)",
)
async def chat_completions(
    body: ChatCompletionRequest, state: StateDep, request: Request, http: Response
) -> ChatCompletionResponse | StreamingResponse:
    request.state.aggregator = body.verification.aggregator if body.verification else "weaver"
    response = await create_chat_completion(body, state, request)
    headers = verification_header(response.verification)
    if body.stream:
        return StreamingResponse(stream_chunks(body, response), media_type="text/event-stream", headers=headers)
    http.headers.update(headers)
    return response
