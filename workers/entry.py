"""The worker entry: a Job in, a JobResult out (generate or take candidates, verify, aggregate).

Verifier failures never fail a job: the affected scores are NaN and the diagnostics say why. Only
job-level problems (unknown verifier or aggregator, generation failure, deadline passed) answer
``JobResult(status="error")``. No web code here: the gateway wraps this behind its queue.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import label_models
from models.adaptive import Decision
from models.aggregators import QueryScores, Ranking
from models.answers import extract_answer, group_answers
from models.label_models import LabelModel
from models.lookahead import change_probability
from workers.adaptive_job import Candidates, ComputeLoop, Policy
from workers.aggregation import AggregatorRegistry, RankFunction, ScoringPlan, UnknownAggregator
from workers.batching import Outcome, VerifierBatcher
from workers.cache import ScoreCache, build_cache
from workers.config import WorkerConfig
from workers.contract import (
    CandidateResult,
    ChatMessage,
    GenerationInfo,
    Job,
    JobResult,
)
from workers.diagnostics import Column, finite, verifier_diagnostics
from workers.generation.errors import PromptTooLongError
from workers.verifiers import GroupItem, PairItem, Verifier, build_verifier

log = logging.getLogger(__name__)

__all__ = ["JobError", "RankFunction", "ScoringPlan", "Worker"]


class JobError(Exception):
    """A job-level failure, reported as JobResult(status="error")."""

    def __init__(self, message: str, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.error_type = error_type


class Worker:
    """Loads a generator and verifiers once, then serves jobs concurrently (one event loop)."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.name = f"{config.name}@{socket.gethostname()}:{os.getpid()}"
        self._verifiers: dict[str, Verifier] = {}
        self._batchers: dict[str, VerifierBatcher] = {}
        self._errors: dict[str, str] = {}
        self._cache: ScoreCache | None = None
        self._generator: Any = None
        self.aggregators = AggregatorRegistry(config.aggregation.cold_start)
        self.memory_plan: Any = None  # workers.memory_budget.MemoryPlan when gpu_memory_budget is set
        self._started = False
        self._loading: list[str] = []  # components still loading while start() runs (named by /readyz)

    @classmethod
    def from_config(cls, config: WorkerConfig) -> Worker:
        return cls(config)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the generator, every verifier and the Weaver model; failures go to readiness_errors."""
        cache = self.config.cache
        self._cache = build_cache(cache.memory_size, cache.redis_url, cache.redis_prefix, cache.redis_ttl_s)
        refused = self._plan_memory()
        self._loading = [f"verifier:{spec.name}" for spec in self.config.verifiers
                         if f"verifier:{spec.name}" not in refused]
        if self.config.generation is not None and "generation" not in refused:
            self._loading.append("generation")
        for spec in self.config.verifiers:
            if f"verifier:{spec.name}" in refused:
                continue
            try:
                verifier = build_verifier(spec)
                await asyncio.to_thread(verifier.load)
            except Exception as exc:  # noqa: BLE001 - one broken verifier must not stop the worker
                log.exception("verifier %s failed to load", spec.name)
                self._errors[f"verifier:{spec.name}"] = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                self._loading.remove(f"verifier:{spec.name}")
            self._verifiers[spec.name] = verifier
            concurrency = spec.max_concurrency or verifier.default_max_concurrency
            self._batchers[spec.name] = VerifierBatcher(verifier, self._cache, max_concurrency=concurrency)
        from workers.distilled import install as install_distilled

        install_distilled(self)  # cross_encoder / cascade aggregators when a cross-encoder verifier loaded
        path = self.config.aggregation.weaver_model
        if path:
            try:
                self.aggregators.model = await asyncio.to_thread(label_models.load, Path(path))
            except Exception as exc:  # noqa: BLE001
                self._errors["aggregation"] = f"cannot load Weaver model {path}: {exc}"
        if self.config.generation is not None and "generation" not in refused:
            try:
                from workers.generation import build_backend

                self._generator = build_backend(dict(self.config.generation))
                await self._generator.start()
            except Exception as exc:  # noqa: BLE001
                log.exception("generation backend failed to start")
                self._generator = None
                self._errors["generation"] = f"{type(exc).__name__}: {exc}"
            finally:
                self._loading.remove("generation")
        self._started = True

    def _plan_memory(self) -> set[str]:
        """Check the vLLM engines' memory shares against ``gpu_memory_budget`` before any engine starts."""
        budget = self.config.gpu_memory_budget
        if budget is None:
            return set()
        from workers.memory_budget import plan_memory

        self.memory_plan = plan_memory(budget, self.config.generation, self.config.verifiers)
        for key, reason in self.memory_plan.refused.items():
            log.error("%s %s", key, reason)
            self._errors[key] = reason
        return set(self.memory_plan.refused)

    def ready(self) -> bool:
        """Started, every configured verifier loaded, and the generator (when configured) up."""
        if not self._started or not self._verifiers or "generation" in self._errors:
            return False
        if any(key.startswith("verifier:") for key in self._errors):  # a broken verifier keeps the pod out
            return False
        return self._generator is None or bool(self._generator.ready())

    def readiness_errors(self) -> dict[str, str]:
        errors = dict(self._errors)
        if not self._started:
            errors.update({component: "loading" for component in self._loading})
            errors["worker"] = "loading models" if self._loading else "not started"
        elif not self._verifiers:
            errors.setdefault("verifiers", "no verifier loaded")
        return errors

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        for verifier in self._verifiers.values():
            await verifier.aclose()
        if self._generator is not None:
            await self._generator.close()
        if self._cache is not None:
            await self._cache.close()
        self._started = False

    # -- introspection ------------------------------------------------------------------------
    def describe_verifiers(self) -> list[dict[str, Any]]:
        out = []
        served = self.aggregators.model
        accuracy = served.accuracy() if served is not None else None
        for spec in self.config.verifiers:
            verifier = self._verifiers.get(spec.name)
            entry: dict[str, Any] = verifier.describe() if verifier else {"name": spec.name, "kind": spec.type}
            entry["ready"] = verifier is not None
            entry["error"] = self._errors.get(f"verifier:{spec.name}")
            entry["profiles"] = [p for p, members in self.config.profiles.items() if spec.name in members]
            if accuracy is not None and served is not None and spec.name in served.verifier_names:
                j = served.verifier_names.index(spec.name)
                entry["estimated_accuracy"] = float(accuracy[j])
                entry["kept"] = bool(served.kept[j])
            if verifier is not None:
                stats = self._batchers[spec.name].stats
                entry["stats"] = {"items": stats.items, "cache_hits": stats.cache_hits, "deduped": stats.deduped,
                                  "batches": stats.batches, "errors": stats.errors, "timeouts": stats.timeouts}
                entry["cost_s_per_candidate"] = self._batchers[spec.name].cost_s
                entry["cost_measured"] = stats.seconds_per_candidate is not None
            out.append(entry)
        return out

    def verifier_costs(self) -> dict[str, float]:
        """Seconds per candidate of every loaded verifier (measured, or the type's prior until measured)."""
        return {name: batcher.cost_s for name, batcher in self._batchers.items()}

    def available_verifiers(self) -> list[str]:
        return [spec.name for spec in self.config.verifiers if spec.name in self._verifiers]

    def describe_generation(self) -> dict[str, str] | None:
        """The generator behind chat (``/v1/models`` lists its model id), or None without one."""
        if self._generator is None:
            return None
        return {"backend": str(getattr(self._generator, "name", "unknown")),
                "model": str(getattr(self._generator, "model", "") or "")}

    def profiles(self) -> dict[str, list[str]]:
        return {name: list(members) for name, members in self.config.profiles.items()}

    # -- aggregation hooks ---------------------------------------------------------------------
    def set_weaver_model(self, model: LabelModel, task: str | None = None) -> None:
        """Atomically swap the label model (online refits). With ``task``, replace that task's model only."""
        self.aggregators.set_model(model, task)

    def register_aggregator(self, name: str, rank: RankFunction, plan: ScoringPlan | None = None) -> None:
        """Plug in an aggregator (e.g. the distilled ``cross_encoder`` or a ``cascade``).

        ``plan`` (optional) chooses which verifier columns to score, possibly in stages; by default
        every requested verifier is scored concurrently.
        """
        self.aggregators.register(name, rank, plan)

    @property
    def weaver_model(self) -> LabelModel | None:
        return self.aggregators.model

    def set_cold_start(self, name: str) -> None:
        """The aggregator "weaver" falls back to before a model exists. Online learning sets it from
        ``online.cold_start`` when attached, so one setting decides what responses and /v1/online say."""
        self.aggregators.set_cold_start(name)

    @property
    def cold_start(self) -> str:
        return self.aggregators.cold_start

    def cold_start_rank(self, query: QueryScores) -> Ranking:
        return self.aggregators.cold_start_rank(query)

    # -- the job --------------------------------------------------------------------------------
    async def run(self, job: Job) -> JobResult:
        start = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            if time.time() > job.deadline:
                raise JobError("the job's deadline passed before it started", "timeout_error")
            names = self._resolve_verifiers(job)
            try:
                self.aggregators.check(job.aggregator)
            except UnknownAggregator as exc:
                raise JobError(str(exc), "invalid_request_error") from exc
            own_plan = self.aggregators.plan(job.aggregator)  # the distilled cascade: our cascade stays out
            if own_plan is not None:
                t = time.perf_counter()
                candidates = await self._candidates(job, 0, self._requested(job))
                timings["generation"] = time.perf_counter() - t
                t = time.perf_counter()
                names, columns = await own_plan(names, lambda name: self._score_column(name, job, candidates.texts))
                timings["verification"] = time.perf_counter() - t
                compute, skipped = None, {}
            else:
                policy = Policy.resolve(job, self.config.adaptive)
                outcome = await self._compute_loop(job, names, policy).run(self._requested(job))
                candidates, columns, compute, skipped = (outcome.candidates, outcome.columns, outcome.compute,
                                                         outcome.skipped)
                timings["generation"] = outcome.generation_s
                timings["verification"] = outcome.verification_s
            t = time.perf_counter()
            result = self._aggregate(job, names, candidates, list(columns), skipped)
            result.compute = compute
            timings["aggregation"] = time.perf_counter() - t
        except JobError as exc:
            result = JobResult(id=job.id, status="error", error=str(exc), error_type=exc.error_type)
        except Exception as exc:  # noqa: BLE001 - a job never takes the worker down
            log.exception("job %s failed", job.id)
            result = JobResult(id=job.id, status="error", error=f"{type(exc).__name__}: {exc}",
                               error_type="internal_error")
        timings["total"] = time.perf_counter() - start
        result.timings = timings
        result.worker = self.name
        return result

    def _resolve_verifiers(self, job: Job) -> list[str]:
        if job.verifiers is not None and job.profile is not None:
            raise JobError("give either verifiers or profile, not both")
        if job.profile is not None:
            if job.profile not in self.config.profiles:
                raise JobError(f"unknown verifier profile {job.profile!r} (known: "
                               f"{', '.join(sorted(self.config.profiles)) or 'none'})")
            names = list(self.config.profiles[job.profile])
        elif job.verifiers is not None:
            names = list(dict.fromkeys(job.verifiers))
        else:
            names = self.config.default_verifiers()
        configured = {spec.name for spec in self.config.verifiers}
        unknown = [n for n in names if n not in configured]
        if unknown:
            raise JobError(f"unknown verifiers: {', '.join(unknown)} (configured: {', '.join(sorted(configured))})")
        if not names:
            raise JobError("no verifiers selected")
        return names

    @staticmethod
    def _requested(job: Job) -> int:
        return len(job.candidates or []) if job.kind == "rerank" else job.n_candidates

    async def _candidates(self, job: Job, start: int, count: int) -> Candidates:
        """Candidates ``start`` .. ``start + count`` of the job: the given ones (rerank) or a sampling round."""
        if job.kind == "rerank":
            texts = list(job.candidates or [])[start:start + count]
            return Candidates(texts, [None] * len(texts), [0] * len(texts), None)
        if self._generator is None:
            why = self._errors.get("generation", "no generation backend configured")
            raise JobError(f"this worker cannot generate: {why}", "service_unavailable")
        messages = job.messages or [ChatMessage(role="user", content=job.prompt)]
        sampling = job.sampling
        if start and sampling.seed is not None:  # a later round: its own seeds, or it repeats the first round
            sampling = sampling.model_copy(update={"seed": sampling.seed + start})
        t = time.perf_counter()
        try:
            output = await self._generator.generate(messages, count, sampling)
        except PromptTooLongError as exc:  # the client's input, not a server fault: answer 400, not 500
            raise JobError(str(exc), "invalid_request_error") from exc
        latency = time.perf_counter() - t
        texts = [c.text for c in output.candidates]
        reason = output.reason
        if len(texts) != count and not reason:
            reason = f"backend returned {len(texts)} of {count} candidates without saying why"
        info = GenerationInfo(backend=getattr(self._generator, "name", "unknown"),
                              model=getattr(self._generator, "model", ""), requested=job.n_candidates,
                              returned=len(texts), reason=reason, prompt_tokens=output.prompt_tokens,
                              completion_tokens=sum(c.completion_tokens for c in output.candidates),
                              latency_s=latency)
        if not texts and not start:
            raise JobError(f"generation returned no candidates: {reason}", "generation_error")
        return Candidates(texts, [c.finish_reason for c in output.candidates],
                          [c.completion_tokens for c in output.candidates], info)

    def _compute_loop(self, job: Job, names: list[str], policy: Policy) -> ComputeLoop:
        costs = {name: self._batchers[name].cost_s for name in names if name in self._batchers}
        group_verifiers = {name for name in names
                           if name in self._verifiers and self._verifiers[name].granularity == "group"}

        def decide(ran: list[str], columns: list[Column], texts: Sequence[str],
                   rest: list[str]) -> tuple[Decision, bool]:
            query = self._query(job, ran, texts, columns)
            ranking, _, model = self.aggregators.rank(job.aggregator, job.task, query)
            groups = group_answers(query.answers or ())
            change = None
            if ranking.is_probability and rest and policy.rule.max_change is not None:
                change = change_probability(model, query.matrix, ran, groups, job.task, rest)
            return policy.rule.decide(ranking.scores, groups, ranking.is_probability, change), ranking.is_probability

        return ComputeLoop(policy, names, costs, group_verifiers,
                           lambda start, count: self._candidates(job, start, count),
                           lambda name, texts: self._score_column(name, job, texts), decide,
                           posterior=job.aggregator == "weaver" and self.aggregators.model is not None)

    @staticmethod
    def _query(job: Job, names: list[str], texts: Sequence[str], columns: list[Column]) -> QueryScores:
        matrix = np.array([c.values for c in columns], dtype=float).T.reshape(len(texts), len(names))
        answers = tuple(extract_answer(t) for t in texts)
        return QueryScores(matrix=matrix, verifier_names=tuple(names), answers=answers, task=job.task)

    async def _score_column(self, name: str, job: Job, texts: Sequence[str]) -> Column:
        verifier = self._verifiers.get(name)
        n = len(texts)
        if verifier is None:
            why = self._errors.get(f"verifier:{name}", "not loaded")
            return Column(name, [math.nan] * n, 0.0, f"verifier unavailable: {why}", None)
        batcher = self._batchers[name]
        t = time.perf_counter()
        outcomes: list[Outcome]
        if verifier.granularity == "group":
            outcomes = await batcher.submit([GroupItem(job.prompt, tuple(texts), job.context)])
            values = outcomes[0].as_floats(n)
            notes = None
        else:
            outcomes = await batcher.submit([PairItem(job.prompt, text, job.context) for text in texts])
            values = [o.as_floats(1)[0] for o in outcomes]
            notes = [o.note for o in outcomes] if any(o.note for o in outcomes) else None
        errors = [o.error for o in outcomes if o.error]
        error = None
        if errors:
            error = errors[0] if len(errors) == 1 else f"{errors[0]} ({len(errors)} items failed)"
        return Column(name, values, time.perf_counter() - t, error, notes)

    def _aggregate(self, job: Job, names: list[str], given: Candidates, columns: list[Column],
                   skipped: dict[str, str]) -> JobResult:
        texts = given.texts
        query = self._query(job, names, texts, columns)
        matrix, answers = query.matrix, query.answers or ()
        ranking, note, model = self.aggregators.rank(job.aggregator, job.task, query)
        diagnostics = verifier_diagnostics(columns, matrix, names, model, ranking.aggregator, self._verifiers)
        for row in diagnostics:
            row.skipped = skipped.get(row.name)
        ranks = np.empty(len(texts), dtype=int)
        ranks[ranking.order] = np.arange(len(texts))
        candidates = [
            CandidateResult(index=i, text=text, score=finite(ranking.scores[i]) or 0.0, rank=int(ranks[i]),
                            answer=answers[i], finish_reason=given.finish_reasons[i],
                            completion_tokens=given.completion_tokens[i])
            for i, text in enumerate(texts)
        ]
        selected = ranking.selected
        return JobResult(
            id=job.id, candidates=candidates, selected_index=selected,
            confidence=finite(ranking.scores[selected]) if ranking.is_probability else None,
            margin=finite(ranking.margin), aggregator=ranking.aggregator, aggregator_version=ranking.version,
            aggregator_note=note, verifier_names=list(names), generation=given.generation,
            scores=[[finite(v) for v in row] for row in matrix], diagnostics=diagnostics)
