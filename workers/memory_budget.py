"""The accelerator memory plan of one worker: every vLLM engine's share against the worker's budget.

vLLM's ``gpu_memory_utilization`` is a per-engine fraction of the device's total memory, so engines on one
GPU fit only while their fractions add up to what the operator grants the worker (``gpu_memory_budget``,
leaving the rest to CUDA contexts and transformers-based verifiers). vLLM itself only notices an overcommit
when the late engine fails to allocate, minutes into start-up, with an allocator error that names no
verifier; this check runs first, from the config alone, and names the one that does not fit. Engines that
do not state a share take vLLM's default (0.9), which is what they would really claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

VLLM_DEFAULT_SHARE = 0.9
ENGINE_VERIFIER_TYPES = frozenset({"vllm_reward", "vllm_judge"})  # verifier types that start their own vLLM engine


@dataclass(frozen=True)
class MemoryPlan:
    """Which engines fit (generator first, then verifiers in config order) and which do not, with why."""

    budget: float
    granted: dict[str, float] = field(default_factory=dict)  # "generation" or "verifier:<name>" -> share
    refused: dict[str, str] = field(default_factory=dict)  # same keys -> reason

    @property
    def used(self) -> float:
        return sum(self.granted.values())

    def describe(self) -> dict[str, Any]:
        return {"budget": self.budget, "used": round(self.used, 4), "granted": dict(self.granted),
                "refused": dict(self.refused)}


def engine_shares(generation: dict[str, Any] | None, verifiers: list[Any]) -> list[tuple[str, float]]:
    """(key, share) for every vLLM engine the config starts: the generator first (it serves every generate
    job), then the engine-backed verifiers in config order."""
    shares: list[tuple[str, float]] = []
    if generation is not None and generation.get("backend") == "vllm":
        share = generation.get("gpu_memory_utilization")
        shares.append(("generation", VLLM_DEFAULT_SHARE if share is None else float(share)))
    for spec in verifiers:
        if spec.type in ENGINE_VERIFIER_TYPES:
            share = spec.params.get("gpu_memory_utilization")
            shares.append((f"verifier:{spec.name}", VLLM_DEFAULT_SHARE if share is None else float(share)))
    return shares


def plan_memory(budget: float, generation: dict[str, Any] | None, verifiers: list[Any]) -> MemoryPlan:
    """Grant shares in that order while they fit; an engine that would overrun the budget is refused."""
    plan = MemoryPlan(budget)
    for key, share in engine_shares(generation, verifiers):
        left = budget - plan.used
        if share <= left + 1e-9:
            plan.granted[key] = share
            continue
        taken = ", ".join(f"{k.removeprefix('verifier:')} {v:g}" for k, v in plan.granted.items()) or "nothing"
        plan.refused[key] = (f"does not fit the GPU memory budget: needs gpu_memory_utilization {share:g}, "
                             f"{max(left, 0.0):.2f} of the worker's gpu_memory_budget {budget:g} is left "
                             f"(already granted: {taken})")
    return plan
