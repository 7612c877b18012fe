"""Fresh samples for distillation: new candidates for new prompts, verified and scored by Weaver.

Each round takes prompts the student has not seen, asks the Worker to generate N candidates per
prompt and score them with the verifier profile (the same path a ``generate`` request takes), and
turns the raw scores into teacher probabilities with the fitted Weaver model. Labels, when the
prompt file has reference answers (GSM8K ``#### 72``), are attached for monitoring only.
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.answers import answers_equivalent, extract_answer
from models.distill.dataset import DistillQuery, prompt_key
from models.weaver import WeaverModel
from workers.config import WorkerConfig
from workers.contract import ChatMessage, Job, SamplingParams
from workers.entry import Worker

INSTRUCTION = "Solve the problem step by step. End with a last line of the form 'A: <number>'."
_REFERENCE = re.compile(r"####\s*(.+?)\s*$")


@dataclass(frozen=True)
class PromptRow:
    id: str
    prompt: str
    reference: str | None


def read_prompts(path: str | Path, exclude: Iterable[str] = ()) -> list[PromptRow]:
    """GSM8K rows ({"question", "answer": "...#### 72"}) or candidate-set rows ({"prompt", "reference"})."""
    excluded = {prompt_key(p) for p in exclude}
    rows = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if not line.strip():
                continue
            obj = json.loads(line)
            prompt = obj.get("question", obj.get("prompt"))
            if not isinstance(prompt, str) or prompt_key(prompt) in excluded:
                continue
            reference = obj.get("reference")
            if reference is None and isinstance(obj.get("answer"), str):
                match = _REFERENCE.search(obj["answer"])
                reference = match.group(1) if match else None
            rows.append(PromptRow(str(obj.get("id", f"{Path(path).stem}-{number}")), prompt,
                                  None if reference is None else str(reference)))
    return rows


class FreshSampleCollector:
    """Generates and scores fresh queries round by round on one long-lived Worker (own event loop)."""

    def __init__(self, worker: Worker, prompts: Sequence[PromptRow], teacher: WeaverModel, profile: str | None,
                 candidates: int = 4, sampling: SamplingParams | None = None, seed: int = 0,
                 seed_jobs: bool = True) -> None:
        self.worker = worker
        self.teacher = teacher
        self.profile = profile
        self.candidates = candidates
        self.sampling = sampling or SamplingParams(temperature=0.8, max_tokens=256)
        # Seeded jobs are reproducible but decode alone (the backend never mixes RNG streams); unseeded
        # jobs with equal sampling parameters are coalesced into one batch: several times the throughput.
        self.seed_jobs = seed_jobs
        order = np.random.default_rng(seed).permutation(len(prompts))
        self._queue = [prompts[i] for i in order]
        self._loop = asyncio.new_event_loop()
        self.stats = {"prompts": 0, "candidates": 0, "failed_prompts": 0, "generation_s": 0.0, "verification_s": 0.0}

    @classmethod
    def from_files(cls, prompts: str | Path, worker_config: str | Path | None, teacher: WeaverModel,
                   verifiers: str | None = None, candidates: int = 4, seed: int = 0,
                   exclude_prompts: Iterable[str] = ()) -> FreshSampleCollector:
        config = WorkerConfig.from_yaml(worker_config) if worker_config else WorkerConfig.default()
        collector = cls(Worker.from_config(config), read_prompts(prompts, exclude_prompts), teacher, verifiers,
                        candidates, seed=seed)
        collector.start()
        return collector

    def start(self) -> None:
        self._loop.run_until_complete(self.worker.start())
        if not self.worker.ready():
            raise RuntimeError(f"worker not ready: {self.worker.readiness_errors()}")

    def close(self) -> None:
        self._loop.run_until_complete(self.worker.close())
        self._loop.close()

    def collect(self, round_index: int, n_prompts: int) -> list[DistillQuery]:
        """``n_prompts`` fresh prompts (never reused), generated and scored concurrently."""
        batch, self._queue = self._queue[:n_prompts], self._queue[n_prompts:]
        return self._loop.run_until_complete(self._collect(round_index, batch))

    async def _collect(self, round_index: int, rows: Sequence[PromptRow]) -> list[DistillQuery]:
        jobs = [
            Job(kind="generate", prompt=row.prompt, n_candidates=self.candidates, profile=self.profile,
                aggregator="mean", messages=[ChatMessage(role="system", content=INSTRUCTION),
                                             ChatMessage(role="user", content=row.prompt)],
                sampling=self.sampling.model_copy(update={"seed": zlib.crc32(f"{round_index}:{row.id}".encode())})
                if self.seed_jobs else self.sampling)
            for row in rows
        ]
        results = await asyncio.gather(*(self.worker.run(job) for job in jobs))
        out = []
        for row, result in zip(rows, results, strict=True):
            if result.status != "ok" or not result.candidates:
                self.stats["failed_prompts"] += 1
                continue
            texts = tuple(c.text for c in sorted(result.candidates, key=lambda c: c.index))
            matrix = np.array([[np.nan if v is None else v for v in r] for r in result.scores], dtype=float)
            model = self.teacher
            posterior, _ = model.score(model.align(matrix, result.verifier_names))
            labels = None
            if row.reference is not None:
                labels = np.array([float(answers_equivalent(extract_answer(t), row.reference)) for t in texts])
            out.append(DistillQuery(f"fresh-{round_index}-{row.id}", row.prompt, texts, posterior, labels))
            self.stats["prompts"] += 1
            self.stats["candidates"] += len(texts)
            self.stats["generation_s"] += result.timings.get("generation", 0.0)
            self.stats["verification_s"] += result.timings.get("verification", 0.0)
        return out
