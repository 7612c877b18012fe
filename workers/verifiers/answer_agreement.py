"""Self-consistency as a verifier: the share of siblings whose final answer is equivalent.

Runs in a child process (math-verify's sympy work is CPU-heavy and can be made to run for minutes):
the serving interpreter stays free and the verifier's timeout kills the comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.answers import agreement_shares, extract_answer
from workers.verifiers.base import GroupItem, Item, Score, Scored
from workers.verifiers.process_pool import ProcessPoolVerifier


class AnswerAgreementVerifier(ProcessPoolVerifier):
    kind = "answer_agreement"
    expected_cost_s = 1e-05
    granularity = "group"
    default_max_batch_size = 64
    default_max_wait_ms = 0.0
    default_timeout_s = 30.0

    def version_params(self) -> dict[str, object]:
        return {"shares": "siblings"}

    def score_sync(self, items: Sequence[Item]) -> list[Score | Scored]:
        out: list[Score | Scored] = []
        for item in items:
            assert isinstance(item, GroupItem)
            out.append(agreement_shares([extract_answer(c) for c in item.candidates]))
        return out
