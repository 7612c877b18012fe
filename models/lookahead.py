"""Would the verifiers not yet run change the choice? The label model's own prediction, by simulation.

The verifier cascade asks this after each stage. Under the fitted v2 label model, the answer is a
preposterior computation: draw which answer group is right (or none) from the current posterior, draw every
remaining verifier's score bin from its fitted class-conditional histogram, recompute the posterior, and
count how often the top group changes. The cascade stops when that probability is small: the rest of the
ensemble is then unlikely to change the answer, which is what "settled" means.

It reads nothing but the model and the scores observed so far (label-free), and it is only as right as the
model: where the posterior is over-confident (small candidate sets, see docs/label-model.md) it
under-estimates the chance of a change. Verifier abstentions are not simulated (every remaining verifier is
assumed to answer), which over-estimates it slightly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import expit

from models.answers import group_answers
from models.weaver_v2 import WeaverV2Model

# simulated futures per decision; the served threshold 0.01 then means "none of the 64 changed the answer"
# (zero of 64 bounds the true probability below 4.6% with 95% confidence)
LOOKAHEAD_SAMPLES = 64
LOOKAHEAD_SEED = 0  # fixed: the same scores always give the same decision


def change_probability(model: object, matrix: np.ndarray, names: Sequence[str], answers: Sequence[str | None] | None,
                       task: str | None, remaining: Sequence[str], samples: int = LOOKAHEAD_SAMPLES,
                       seed: int = LOOKAHEAD_SEED) -> float | None:
    """P(the top answer group changes if every verifier in ``remaining`` ran), under ``model``.

    ``matrix`` holds the scores observed so far (columns ``names``; unrun verifiers NaN or absent). None when
    the model cannot say (not a v2 model); 0 when no remaining verifier carries evidence in the model.
    """
    if not isinstance(model, WeaverV2Model):
        return None
    aligned = model.align(matrix, names)
    index = {name: j for j, name in enumerate(model.verifier_names)}
    tables = [(index[name], model.bin_distributions(index[name])) for name in remaining if name in index]
    simulated = [(j, t) for j, t in tables if t is not None]
    if not simulated:
        return 0.0
    rng = np.random.default_rng(seed)
    evidence = model.evidence(aligned)
    n = evidence.shape[0]
    grouped = answers is not None and any(a is not None for a in answers) and model.config.answer_groups
    if grouped:
        groups = group_answers(answers or ())
        unique = model.answers_unique(task)
        post, none = model.group_posterior(evidence, groups, unique)
        group_of = _group_index(groups)
        right = _draw_groups(rng, post[0], float(none[0]) if unique else None, samples)[:, group_of]  # (S, n)
    else:
        post = expit(np.log(model.pi / (1 - model.pi)) + evidence @ model.weight)[None, :]
        right = rng.random((samples, n)) < post  # candidates independent
    future = np.repeat(evidence[None], samples, axis=0)
    for j, (p1, p0, llr) in simulated:
        u = rng.random((samples, n))
        b1 = np.minimum(np.searchsorted(np.cumsum(p1), u), p1.size - 1)
        b0 = np.minimum(np.searchsorted(np.cumsum(p0), u), p0.size - 1)
        future[:, :, j] = np.where(right, llr[b1], llr[b0])
    if grouped:
        new, _ = model.group_posterior(future.reshape(samples * n, -1), groups, unique, copies=samples)
    else:
        new = expit(np.log(model.pi / (1 - model.pi)) + future @ model.weight)
    current = int(np.argmax(post[0]))
    return float(np.mean(np.argmax(new, axis=1) != current))


def _group_index(groups: Sequence[int]) -> np.ndarray:
    """Candidate -> group column, numbered as ``build_layout`` numbers them (answerless candidates last)."""
    g = np.asarray(groups, dtype=np.int64).copy()
    loners = g < 0
    g[loners] = g.max(initial=-1) + 1 + np.arange(int(loners.sum()))
    _, local = np.unique(g, return_inverse=True)
    out: np.ndarray = local.ravel()
    return out


def _draw_groups(rng: np.random.Generator, post: np.ndarray, none: float | None, samples: int) -> np.ndarray:
    """(S, G) bool: which groups are right in each simulated future (at most one when ``none`` is given)."""
    if none is None:
        out: np.ndarray = rng.random((samples, post.size)) < post
        return out
    probs = np.append(post, none)
    picks = rng.choice(probs.size, size=samples, p=probs / probs.sum())
    return picks[:, None] == np.arange(post.size)[None, :]
