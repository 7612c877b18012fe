"""HTTP for /v1/feedback (labels, for evaluation only) and /v1/online (learner status)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from service.api.feedback.protocol import FeedbackRequest, FeedbackResponse, OnlineStatus
from service.deps import StateDep, require_api_key
from service.errors import ERROR_RESPONSES, APIError, invalid
from service.state import GatewayState
from workers.online.runtime import OnlineRuntime

router = APIRouter(prefix="/v1", tags=["online learning"], dependencies=[Depends(require_api_key)])


def _online(state: GatewayState) -> OnlineRuntime:
    online = getattr(state, "online", None)
    if online is None:
        raise APIError(404, "online learning is disabled on this gateway (online.enabled: false)",
                       type="not_found_error", code="online_disabled")
    return online


@router.post("/feedback", response_model=FeedbackResponse, responses=ERROR_RESPONSES,
             summary="Label one candidate of an earlier request (used to measure accuracy, never to fit)")
async def post_feedback(body: FeedbackRequest, state: StateDep) -> FeedbackResponse:
    from models.online.feedback import CandidateOutOfRange

    online = _online(state)
    try:
        # on the traffic thread: after the observation of the request it labels, however recent
        result = await online.traffic.call(online.feedback, body.request_id, body.candidate_index, body.correct)
    except CandidateOutOfRange as exc:
        raise invalid(str(exc), "candidate_index", "candidate_out_of_range") from None
    if not result.known:
        raise APIError(404, f"no request {body.request_id!r} is known (unknown id, or its selections expired)",
                       type="not_found_error", param="request_id", code="request_not_found")
    return FeedbackResponse(request_id=body.request_id, candidate_index=body.candidate_index,
                            duplicate=result.duplicate, credited=list(result.credited))


@router.get("/online", response_model=OnlineStatus, responses=ERROR_RESPONSES,
            summary="The served label-model version, cold-start state and online accuracy per aggregator")
async def online_status(state: StateDep) -> OnlineStatus:
    online = _online(state)
    status = await asyncio.to_thread(online.status)
    versions = await asyncio.to_thread(lambda: [i.to_json() for i in online.store.versions()[-10:]])
    return OnlineStatus(**status, versions=versions)
