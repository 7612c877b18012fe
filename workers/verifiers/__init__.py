"""Verifiers and the registry that builds them from config (``VerifierSpec``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.config import VerifierSpec
from workers.verifiers.base import GroupItem, Item, PairItem, Scored, Verifier

VerifierFactory = Callable[..., Verifier]


def _builtin_types() -> dict[str, VerifierFactory]:
    # imported lazily so that configuring a worker does not import torch or httpx until needed
    from workers.verifiers.answer_agreement import AnswerAgreementVerifier
    from workers.verifiers.code_tests import CodeTestsVerifier
    from workers.verifiers.cross_encoder import CrossEncoderVerifier
    from workers.verifiers.embedding_consistency import EmbeddingConsistencyVerifier
    from workers.verifiers.lm_judge import LMJudgeVerifier
    from workers.verifiers.math_check import MathCheckVerifier
    from workers.verifiers.remote import RemoteVerifier
    from workers.verifiers.reward_model import RewardModelVerifier
    from workers.verifiers.vllm_judge import VLLMJudgeVerifier
    from workers.verifiers.vllm_reward import VLLMRewardVerifier

    return {cls.kind: cls for cls in (AnswerAgreementVerifier, CodeTestsVerifier, CrossEncoderVerifier,
                                      EmbeddingConsistencyVerifier,
                                      LMJudgeVerifier, MathCheckVerifier, RemoteVerifier, RewardModelVerifier,
                                      VLLMJudgeVerifier, VLLMRewardVerifier)}


_EXTRA_TYPES: dict[str, VerifierFactory] = {}


def register_verifier_type(kind: str, factory: VerifierFactory) -> None:
    """Add a verifier type usable from config (``type: <kind>``), e.g. a distilled cross-encoder."""
    _EXTRA_TYPES[kind] = factory


def verifier_types() -> dict[str, VerifierFactory]:
    return {**_builtin_types(), **_EXTRA_TYPES}


def build_verifier(spec: VerifierSpec) -> Verifier:
    """Instantiate one verifier from its spec (does not load weights: ``Verifier.load`` does)."""
    types = verifier_types()
    if spec.type not in types:
        raise ValueError(f"unknown verifier type {spec.type!r} (known: {', '.join(sorted(types))})")
    batching: dict[str, Any] = {k: v for k, v in (("max_batch_size", spec.max_batch_size),
                                                  ("max_wait_ms", spec.max_wait_ms),
                                                  ("timeout_s", spec.timeout_s)) if v is not None}
    overlap = {"max_batch_size", "max_wait_ms", "timeout_s"} & set(spec.params)
    if overlap:
        raise ValueError(f"verifier {spec.name}: set {', '.join(sorted(overlap))} at the spec level, not in params")
    return types[spec.type](spec.name, **spec.params, **batching)


__all__ = ["GroupItem", "Item", "PairItem", "Scored", "Verifier", "build_verifier", "register_verifier_type",
           "verifier_types"]
