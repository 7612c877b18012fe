"""Chat completions: one generate job (sample N, verify, aggregate), answered as the top n choices."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request

from service.api.chat.protocol import (
    AssistantMessage,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    Delta,
    Usage,
)
from service.api.chat.unsupported import refuse_unsupported
from service.api.model_names import check_model
from service.api.verification import (
    ChatVerification,
    check_chars,
    check_selection,
    deadline,
    raise_for_job_error,
    ranked,
    report,
    selection_confidence,
)
from service.errors import invalid
from service.jobs import apply_idempotency_key, submit_while_connected
from service.metrics import observe_result
from service.state import GatewayState
from workers.contract import MAX_STOP_CHARS, MAX_STOP_STRINGS, ChatMessage, Job, JobResult, SamplingParams

STREAM_PIECE_CHARS = 24  # the selected answer is streamed in pieces of about this size


async def build_job(request: ChatCompletionRequest, state: GatewayState) -> Job:
    """Validate the request against the limits and the worker catalogue, then turn it into a Job."""
    settings = state.settings
    options = request.verification or ChatVerification()
    await check_model(request.model, state)
    refuse_unsupported(request)
    limit = settings.limits.max_candidates
    n_candidates = options.n_candidates or min(settings.default_n_candidates, limit)
    if n_candidates > limit:
        raise invalid(
            f"n_candidates={n_candidates} exceeds the limit of {limit}", "verification.n_candidates", "limit_exceeded"
        )
    if request.n > n_candidates:
        source = "" if options.n_candidates else " (the default)"
        raise invalid(
            f"n={request.n} exceeds n_candidates={n_candidates}{source}: choices are the top n of the sampled "
            f"candidates; set verification.n_candidates >= n (limit {limit})",
            "n",
        )
    max_tokens = request.max_completion_tokens or request.max_tokens
    if max_tokens is not None and max_tokens > settings.limits.max_tokens:
        raise invalid(
            f"max_tokens={max_tokens} exceeds the limit of {settings.limits.max_tokens}", "max_tokens", "limit_exceeded"
        )
    if max_tokens is None:  # an omitted max_tokens must respect the limit too
        max_tokens = min(settings.default_max_tokens, settings.limits.max_tokens)
    stop = request.stop_list()
    check_stop(stop)
    check_chars(sum(len(m.text()) for m in request.messages), settings, "messages")
    check_selection(options, await state.queue.catalog(), settings)
    sampling = SamplingParams(
        **{
            k: v
            for k, v in {
                "temperature": request.temperature,
                "top_p": request.top_p,
                "max_tokens": max_tokens,
                "seed": request.seed,
                "stop": stop,
            }.items()
            if v is not None
        }
    )
    return Job(
        kind="generate",
        prompt=request.last_user_text(),
        messages=[ChatMessage(role=m.role, content=m.text()) for m in request.messages],
        n_candidates=n_candidates,
        sampling=sampling,
        verifiers=options.verifiers,
        profile=options.profile,
        aggregator=options.aggregator,
        task=options.task,
        context=options.context,
        cascade=options.cascade,
        budget_s=options.budget,
        adaptive_n=options.adaptive_n,
        deadline=deadline(settings),
    )


def check_stop(stop: list[str] | None) -> None:
    """At most 16 stop sequences of at most 64 characters: the generator checks each at every token."""
    if not stop:
        return
    if len(stop) > MAX_STOP_STRINGS:
        raise invalid(f"stop has {len(stop)} sequences; the limit is {MAX_STOP_STRINGS}", "stop", "limit_exceeded")
    longest = max(len(s) for s in stop)
    if longest > MAX_STOP_CHARS:
        raise invalid(
            f"a stop sequence has {longest} characters; the limit is {MAX_STOP_CHARS}", "stop", "limit_exceeded"
        )


def abstention_text(result: JobResult, min_confidence: float) -> str:
    """Why the answer was withheld, naming the number that was compared: the aggregator's confidence when it
    gives one, else (cold start, non-probabilistic aggregators) the selected candidate's score."""
    if result.confidence is not None:
        return f"abstained: confidence {result.confidence:.3f} is below min_confidence {min_confidence}"
    score = selection_confidence(result)
    if score is None:
        return f"abstained: the aggregator gave no confidence or score to compare with min_confidence {min_confidence}"
    return (
        f"abstained: the aggregator gave no calibrated confidence ({result.aggregator_note or result.aggregator}); "
        f"the selected answer's score {score:.3f} is below min_confidence {min_confidence}"
    )


def build_response(request: ChatCompletionRequest, result: JobResult) -> ChatCompletionResponse:
    options = request.verification or ChatVerification()
    verification = report(result, options.min_confidence, with_candidates=options.return_candidates)
    choices = []
    for i, candidate in enumerate(ranked(result)[: request.n]):
        if verification.abstained and options.min_confidence is not None:
            refusal = abstention_text(result, options.min_confidence)
            message = AssistantMessage(content=None, refusal=refusal)
        else:
            message = AssistantMessage(content=candidate.text)
        choices.append(Choice(index=i, message=message, finish_reason=candidate.finish_reason or "stop"))
    generation = result.generation
    prompt_tokens = generation.prompt_tokens if generation else 0
    completion_tokens = (
        generation.completion_tokens if generation else sum(c.completion_tokens for c in result.candidates)
    )
    return ChatCompletionResponse(
        model=request.model,
        choices=choices,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        verification=verification,
    )


async def create_chat_completion(
    request: ChatCompletionRequest, state: GatewayState, http: Request
) -> ChatCompletionResponse:
    """Build the job, run it while the client stays connected (Idempotency-Key retries attach), answer."""
    job = await build_job(request, state)
    apply_idempotency_key(job, http, "chat")
    result = await submit_while_connected(state.queue, job, http)
    raise_for_job_error(result)
    response = build_response(request, result)
    observe_result("chat", result, response.verification.abstained)
    return response


async def stream_chunks(request: ChatCompletionRequest, response: ChatCompletionResponse) -> AsyncIterator[str]:
    """SSE for an already selected answer: role, content pieces, finish (+ verification), usage, [DONE]."""

    def chunk(choices: list[ChunkChoice], **extra: object) -> str:
        return ChatCompletionChunk(
            id=response.id, created=response.created, model=response.model, choices=choices, **extra
        ).sse()

    for choice in response.choices:
        yield chunk([ChunkChoice(index=choice.index, delta=Delta(role="assistant", content=""))])
        text = choice.message.content
        if text is None:
            yield chunk([ChunkChoice(index=choice.index, delta=Delta(refusal=choice.message.refusal))])
        else:
            for start in range(0, len(text), STREAM_PIECE_CHARS):
                piece = text[start : start + STREAM_PIECE_CHARS]
                yield chunk([ChunkChoice(index=choice.index, delta=Delta(content=piece))])
    finals = [ChunkChoice(index=c.index, delta=Delta(), finish_reason=c.finish_reason) for c in response.choices]
    yield chunk(finals, verification=response.verification)
    if request.stream_options is not None and request.stream_options.include_usage:
        yield chunk([], usage=response.usage)
    yield "data: [DONE]\n\n"
