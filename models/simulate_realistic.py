"""A realistic simulator: the regime where majority vote, the naive mean and label models part ways.

``models.simulate`` draws conditionally independent binary votes on answer-less candidates; every
sensible aggregator reaches the oracle there. Real candidate sets differ in ways this module draws:

* per-query difficulty: each query has its own solve rate (a U-shaped Beta), so many queries have
  no correct candidate and some have only correct ones;
* final answers: correct candidates share the reference answer; wrong ones mostly repeat a few
  recurring wrong answers (Dirichlet weights), so on hard queries a wrong answer can win the vote;
  some are scattered one-offs and a few have no final answer at all;
* verifiers of mixed strength with continuous scores (reward-model logits with their own offset and
  scale, probabilities, verdicts), per-query offsets (scores drift by prompt), per-answer effects
  (a judge fooled by one wrong answer is fooled on every candidate that gives it), a correlated
  pair, an adversarial verifier, a no-signal verifier, abstentions;
* ``answer_agreement`` computed from the answers with the service's own function, and an
  embedding-style consistency score that follows the agreement (a dependency, not independent
  evidence).

The truth (labels, the latent parameters, per-verifier AUROC) is written beside the data, with two
ceilings: any-correct (the oracle pick) and an oracle-informed rule that knows the generative
parameters and the per-query offsets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.answers import agreement_shares
from models.data import Candidate, CandidateSet
from models.metrics import auroc

Emit = Literal["logit", "probability", "verdict"]


@dataclass(frozen=True)
class LatentVerifier:
    """score = strength * y + query offset + answer effect + noise, emitted in one guise."""

    name: str
    emit: Emit
    strength: float  # mean shift of the latent score for a correct candidate (noise sd = 1)
    query_sd: float = 0.0  # per-query offset (drift by prompt)
    answer_sd: float = 0.0  # per-(query, answer) effect shared by every candidate giving that answer
    twin_of: str | None = None  # shares this verifier's noise with correlation ``twin_corr``
    twin_corr: float = 0.0
    abstain: float = 0.0  # probability of no score


DEFAULT_VERIFIERS: tuple[LatentVerifier, ...] = (
    LatentVerifier("rm_large", "logit", 1.6, query_sd=0.8, answer_sd=0.3, abstain=0.02),
    LatentVerifier("rm_medium", "logit", 1.0, query_sd=0.6, answer_sd=0.3),
    LatentVerifier("rm_medium_ft", "logit", 1.0, query_sd=0.6, answer_sd=0.3, twin_of="rm_medium", twin_corr=0.8),
    LatentVerifier("judge_large", "verdict", 1.3, answer_sd=0.6, abstain=0.05),
    LatentVerifier("judge_small", "verdict", 0.6, answer_sd=0.4, abstain=0.05),
    LatentVerifier("prm", "probability", 0.8, query_sd=0.4, abstain=0.03),
    LatentVerifier("math_check", "probability", 0.9, abstain=0.3),
    LatentVerifier("rm_small", "logit", 0.4, query_sd=0.5),
    LatentVerifier("length_bias", "logit", -0.5, query_sd=0.3),  # adversarial: prefers wrong candidates
    LatentVerifier("no_signal", "probability", 0.0),
)


@dataclass(frozen=True)
class RealisticConfig:
    n_queries: int = 400
    n_samples: int = 32
    mean_solve_rate: float = 0.4
    solve_concentration: float = 1.0  # Beta(a, b) with a + b = this: U-shaped for <= 2
    wrong_answers: float = 2.0  # mean number of recurring wrong answers per query (1 + Poisson)
    wrong_concentration: float = 0.7  # Dirichlet concentration of their weights (small = one dominates)
    scattered: float = 0.2  # share of wrong candidates with a one-off answer
    no_answer: float = 0.03  # share of wrong candidates with no final answer
    consistency_noise: float = 0.15
    seed: int = 0


@dataclass(frozen=True)
class RealisticSimulation:
    sets: list[CandidateSet]
    verifier_names: tuple[str, ...]
    verifiers: tuple[LatentVerifier, ...]
    config: RealisticConfig
    solve_rate: np.ndarray  # per query
    labels: list[np.ndarray]
    answers: list[tuple[str | None, ...]]
    oracle_llr: list[np.ndarray]  # per candidate: the oracle-informed rule's pooled evidence

    def any_correct(self) -> float:
        return float(np.mean([y.max() for y in self.labels]))

    def oracle_informed_accuracy(self) -> float:
        return float(np.mean([y[int(np.argmax(s))] for s, y in zip(self.oracle_llr, self.labels, strict=True)]))

    def truth_json(self) -> dict[str, Any]:
        matrix = np.vstack([cs.score_matrix(self.verifier_names) for cs in self.sets])
        y = np.concatenate(self.labels)
        return {
            "regime": "realistic",
            "config": asdict(self.config),
            "verifier_names": list(self.verifier_names),
            "latent": [asdict(v) for v in self.verifiers],
            "auroc": {n: auroc(matrix[:, j], y) for j, n in enumerate(self.verifier_names)},
            "class_balance": float(y.mean()),
            "any_correct_accuracy": self.any_correct(),
            "oracle_informed_accuracy": self.oracle_informed_accuracy(),
            "labels": [y_q.astype(int).tolist() for y_q in self.labels],
        }


def simulate_realistic(config: RealisticConfig | None = None,
                       verifiers: tuple[LatentVerifier, ...] = DEFAULT_VERIFIERS) -> RealisticSimulation:
    config = config or RealisticConfig()
    rng = np.random.default_rng(config.seed)
    index = {v.name: j for j, v in enumerate(verifiers)}
    names = ("answer_agreement", "consistency", *(v.name for v in verifiers))
    offsets = rng.normal(0.0, 2.0, len(verifiers))
    scales = rng.uniform(0.5, 4.0, len(verifiers))
    a = config.mean_solve_rate * config.solve_concentration
    solve = rng.beta(a, config.solve_concentration - a, config.n_queries)
    sets, labels, all_answers, oracle = [], [], [], []
    for q in range(config.n_queries):
        n = config.n_samples
        y = (rng.random(n) < solve[q]).astype(float)
        answers, groups = _draw_answers(y, config, rng)
        n_groups = max(groups) + 1
        latent = np.empty((n, len(verifiers)))
        drift = np.empty(len(verifiers))
        noise = rng.normal(size=(n, len(verifiers)))
        for j, v in enumerate(verifiers):
            e = noise[:, j]
            if v.twin_of is not None:
                e = v.twin_corr * noise[:, index[v.twin_of]] + np.sqrt(1 - v.twin_corr ** 2) * e
            answer_effect = rng.normal(0.0, v.answer_sd, n_groups + 1)[groups]  # index -1: no-answer group
            drift[j] = rng.normal(0.0, v.query_sd)
            latent[:, j] = v.strength * y + drift[j] + answer_effect + e
        scores = np.column_stack([_emit(latent[:, j], v, offsets[j], scales[j], rng) for j, v in enumerate(verifiers)])
        for j, v in enumerate(verifiers):
            scores[rng.random(n) < v.abstain, j] = np.nan
        shares = np.array(agreement_shares(answers), dtype=float)
        consistency = 1 / (1 + np.exp(-(4 * (np.nan_to_num(shares, nan=0.0) - 0.3)
                                         + rng.normal(0.0, config.consistency_noise / 0.25, n))))
        full = np.column_stack([shares, consistency, scores])
        oracle.append(_oracle_llr(latent - drift, y, groups, verifiers, rng))
        candidates = tuple(
            Candidate(text=f"synthetic solution {_letters(i)}" + (f"\nA: {answers[i]}" if answers[i] else ""),
                      correct=bool(y[i]),
                      scores={names[j]: float(full[i, j]) for j in range(len(names)) if not np.isnan(full[i, j])})
            for i in range(n)
        )
        sets.append(CandidateSet(id=f"simr-{q:05d}", prompt=f"synthetic query {q}", candidates=candidates,
                                 reference=answers[int(np.argmax(y))] if y.any() else None))
        labels.append(y)
        all_answers.append(tuple(answers))
    return RealisticSimulation(sets, names, verifiers, config, solve, labels, all_answers, oracle)


def _draw_answers(y: np.ndarray, config: RealisticConfig,
                  rng: np.random.Generator) -> tuple[list[str | None], list[int]]:
    """Final answers: the reference for correct candidates; recurring, scattered or none for wrong ones."""
    correct = str(int(rng.integers(10, 100_000)))
    k = 1 + int(rng.poisson(config.wrong_answers))
    recurring = [str(int(correct) + int(d)) for d in rng.choice(np.arange(1, 5000), size=k, replace=False)]
    weights = rng.dirichlet(np.full(k, config.wrong_concentration))
    answers: list[str | None] = []
    for yi in y:
        if yi:
            answers.append(correct)
        elif rng.random() < config.no_answer:
            answers.append(None)
        elif rng.random() < config.scattered:
            answers.append(f"{int(correct) + int(rng.integers(5000, 10**6))}")
        else:
            answers.append(recurring[int(rng.choice(k, p=weights))])
    keys: dict[str, int] = {}
    groups = [-1 if a is None else keys.setdefault(a, len(keys)) for a in answers]
    return answers, groups


def _emit(latent: np.ndarray, v: LatentVerifier, offset: float, scale: float, rng: np.random.Generator) -> np.ndarray:
    centre = latent - max(v.strength, 0.0) / 2
    if v.emit == "logit":
        return offset + scale * latent
    if v.emit == "probability":
        return 1 / (1 + np.exp(-centre))
    return (centre > 0).astype(float)


def _oracle_llr(latent: np.ndarray, y: np.ndarray, groups: list[int], verifiers: tuple[LatentVerifier, ...],
                rng: np.random.Generator) -> np.ndarray:
    """Evidence of a rule that knows each verifier's strength and the query offsets (not the labels).

    Per candidate, the Gaussian log-likelihood ratio of each latent score with the query offset
    removed (twins count once, the adversary with its true sign), summed over the members of the
    answer group; the pick is the group with the most evidence (ties at random).
    """
    g = np.array(groups)
    llr = np.zeros(len(y))
    for j, v in enumerate(verifiers):
        if v.twin_of is not None or v.strength == 0:
            continue
        var = 1.0 + v.answer_sd ** 2
        llr += v.strength * (latent[:, j] - v.strength / 2) / var
    pooled = llr.copy()
    for gid in set(groups):
        if gid >= 0:
            pooled[g == gid] = llr[g == gid].sum()
    return pooled + 1e-9 * rng.random(len(y))


def _letters(i: int) -> str:
    return "".join(chr(ord("a") + int(d)) for d in str(i))


def write_realistic(sim: RealisticSimulation, path: str | Path) -> Path:
    """Write the candidate sets (JSON Lines) and the truth beside them (``<path>.truth.json``)."""
    from models.data import write_candidate_sets

    path = Path(path)
    write_candidate_sets(path, sim.sets)
    truth = path.with_suffix(path.suffix + ".truth.json")
    truth.write_text(json.dumps(sim.truth_json(), indent=2) + "\n")
    return truth
