"""Synthetic candidate sets in the paper's regime, with the true parameters known.

Each query has its own difficulty (class balance drawn from a Beta distribution); each verifier
votes conditionally independently given correctness, with its own true/false-positive rates, and
emits that vote in one of three guises, so the pipeline's normalization and thresholds are
exercised too: a judge verdict in {0, 1}, a probability in [0, 1], or an unbounded reward-model
logit with its own offset and scale. Some scores are missing (abstentions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data import Candidate, CandidateSet
from models.label_model import LabelModelFit, posterior_log_odds

KINDS = ("verdict", "probability", "logit")


@dataclass(frozen=True)
class Simulation:
    sets: list[CandidateSet]
    verifier_names: tuple[str, ...]
    kinds: tuple[str, ...]
    tpr: np.ndarray
    fpr: np.ndarray
    abstain_rate: np.ndarray
    query_balance: np.ndarray  # true P(correct) per query
    labels: list[np.ndarray]
    votes: list[np.ndarray]  # latent votes (-1 abstain), before they were turned into scores

    def bayes_optimal_accuracy(self) -> float:
        """Selection accuracy of the rule that knows the true rates (argmax of the true posterior)."""
        overall = float(np.mean(np.concatenate(self.labels)))
        fit = LabelModelFit(overall, self.tpr, self.fpr, 0, True, 0.0, 0.0, True, False)
        hits = []
        for votes, y in zip(self.votes, self.labels, strict=True):
            log_odds = posterior_log_odds(votes, fit)
            hits.append(float(y[int(np.argmax(log_odds))] == 1))
        return float(np.mean(hits))

    def truth_json(self) -> dict[str, Any]:
        return {
            "verifier_names": list(self.verifier_names),
            "kinds": list(self.kinds),
            "tpr": self.tpr.tolist(),
            "fpr": self.fpr.tolist(),
            "abstain_rate": self.abstain_rate.tolist(),
            "class_balance": float(np.mean(np.concatenate(self.labels))),
            "bayes_optimal_accuracy": self.bayes_optimal_accuracy(),
        }


def simulate(
    n_queries: int = 500,
    n_samples: int = 100,
    n_verifiers: int = 30,
    *,
    mean_balance: float = 0.35,
    balance_concentration: float = 2.0,
    max_abstain: float = 0.1,
    seed: int = 0,
) -> Simulation:
    rng = np.random.default_rng(seed)
    names = tuple(f"v{j:02d}" for j in range(n_verifiers))
    kinds = tuple(KINDS[j % len(KINDS)] for j in range(n_verifiers))
    # unequal, mostly weak verifiers: accuracy from barely-better-than-chance to good
    tpr = rng.uniform(0.55, 0.92, n_verifiers)
    fpr = rng.uniform(0.08, 0.45, n_verifiers)
    abstain = rng.uniform(0.0, max_abstain, n_verifiers)
    offsets = rng.normal(0.0, 3.0, n_verifiers)
    scales = rng.uniform(0.5, 5.0, n_verifiers)
    a = mean_balance * balance_concentration
    b = (1 - mean_balance) * balance_concentration
    balance = rng.beta(a, b, n_queries)

    sets, labels, all_votes = [], [], []
    for q in range(n_queries):
        y = (rng.random(n_samples) < balance[q]).astype(float)
        p_yes = np.where(y[:, None] == 1, tpr[None, :], fpr[None, :])
        votes = (rng.random((n_samples, n_verifiers)) < p_yes).astype(np.int8)
        votes[rng.random((n_samples, n_verifiers)) < abstain[None, :]] = -1
        scores = _emit(votes, kinds, offsets, scales, rng)
        candidates = tuple(
            Candidate(text=f"synthetic candidate {_letters(i)}", correct=bool(y[i]),
                      scores={names[j]: float(scores[i, j]) for j in range(n_verifiers)})
            for i in range(n_samples)
        )
        sets.append(CandidateSet(id=f"sim-{q:05d}", prompt=f"synthetic query {q}", candidates=candidates))
        labels.append(y)
        all_votes.append(votes)
    return Simulation(sets, names, kinds, tpr, fpr, abstain, balance, labels, all_votes)


def _letters(i: int) -> str:
    """A digit-free id, so answer extraction finds no spurious final answer in synthetic text."""
    return "".join(chr(ord("a") + int(d)) for d in str(i))


def _emit(votes: np.ndarray, kinds: tuple[str, ...], offsets: np.ndarray, scales: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """Turn latent votes into scores of each verifier's guise; abstentions become NaN."""
    n, m = votes.shape
    yes = votes == 1
    out = np.empty((n, m))
    for j, kind in enumerate(kinds):
        u = rng.random(n)
        if kind == "verdict":
            out[:, j] = yes[:, j].astype(float)
        elif kind == "probability":
            out[:, j] = np.where(yes[:, j], 0.55 + 0.45 * u, 0.45 * u)
        else:
            out[:, j] = offsets[j] + scales[j] * np.where(yes[:, j], 0.3 + u, -0.3 - u)
    out[votes < 0] = np.nan
    return out


def write_simulation(sim: Simulation, path: str | Path) -> Path:
    """Write the candidate sets (JSON Lines) and the truth beside them (``<path>.truth.json``)."""
    from models.data import write_candidate_sets

    path = Path(path)
    write_candidate_sets(path, sim.sets)
    truth = path.with_suffix(path.suffix + ".truth.json")
    truth.write_text(json.dumps(sim.truth_json(), indent=2) + "\n")
    return truth
