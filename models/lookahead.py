"""Would the verifiers not yet run change the choice? The label model's own prediction, by simulation.

The verifier cascade asks this after each stage. Under the fitted v2 label model, the answer is a
preposterior computation: draw which answer group is right (or none) from the current posterior, draw every
remaining verifier's score bin from its fitted class-conditional histogram (or, for a verifier the model scores
by its within-query contrast, its score from the fitted contrast model), recompute the posterior, and count
how often the top group changes. The cascade stops when that probability is small: the rest of the
ensemble is then unlikely to change the answer, which is what "settled" means.

It reads nothing but the model and the scores observed so far (label-free), and it is only as right as the
model: where the posterior is over-confident (small candidate sets, see docs/label-model.md) it
under-estimates the chance of a change. Verifier abstentions are not simulated (every remaining verifier is
assumed to answer), which over-estimates it slightly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.weaver_v2 import WeaverV2Model
from models.within_query import ContrastFit, contrast_evidence, contrasts

# simulated futures per decision; the served threshold 0.01 then means "none of the 64 changed the answer"
# (zero of 64 bounds the true probability below 4.6% with 95% confidence)
LOOKAHEAD_SAMPLES = 64
LOOKAHEAD_SEED = 0  # fixed: the same scores always give the same decision


def change_probability(model: object, matrix: np.ndarray, names: Sequence[str], groups: Sequence[int] | None,
                       task: str | None, remaining: Sequence[str], samples: int = LOOKAHEAD_SAMPLES,
                       seed: int = LOOKAHEAD_SEED) -> float | None:
    """P(the top answer group changes if every verifier in ``remaining`` ran), under ``model``.

    ``matrix`` holds the scores observed so far (columns ``names``; unrun verifiers NaN or absent); ``groups``
    are the candidates' answer groups (``group_answers``; None: no answers). None when the model cannot say
    (not a v2 model); 0 when no remaining verifier carries evidence in the model.
    """
    if not isinstance(model, WeaverV2Model):
        return None
    index = {name: j for j, name in enumerate(model.verifier_names)}
    grouped = groups is not None and any(g >= 0 for g in groups) and model.config.answer_groups
    unique = grouped and model.answers_unique(task)
    within = grouped and model.scores_within(unique)
    wanted = [index[name] for name in remaining if name in index]
    by_contrast = [j for j in wanted if within and model.grouped is not None and model.grouped.columns[j]]
    tables = [(j, model.bin_distributions(j, within)) for j in wanted if j not in by_contrast]
    simulated = [(j, t) for j, t in tables if t is not None]
    if not simulated and not by_contrast:
        return 0.0
    rng = np.random.default_rng(seed)
    evidence = model.evidence(model.align(matrix, names), groups if grouped else None, unique)
    n = evidence.shape[0]
    if grouped:
        assert groups is not None
        post, none, group_of = model.group_posterior(evidence, groups, unique)
        right = _draw_groups(rng, post[0], float(none[0]) if unique else None, samples)[:, group_of]  # (S, n)
        current = post[0]
    else:
        current = model.independent_posterior(evidence)
        right = rng.random((samples, n)) < current  # candidates independent
    future = np.repeat(evidence[None], samples, axis=0)
    for j, (p1, p0, llr) in simulated:
        u = rng.random((samples, n))
        b1 = np.minimum(np.searchsorted(np.cumsum(p1), u), p1.size - 1)
        b0 = np.minimum(np.searchsorted(np.cumsum(p0), u), p0.size - 1)
        future[:, :, j] = np.where(right, llr[b1], llr[b0])
    if by_contrast:
        future[:, :, by_contrast] = _simulated_contrasts(model, right, group_of, by_contrast, rng)
    if grouped:
        assert groups is not None
        new, _, _ = model.group_posterior(future.reshape(samples * n, -1), groups, unique, copies=samples)
    else:
        new = model.independent_posterior(future)
    return float(np.mean(np.argmax(new, axis=1) != int(np.argmax(current))))


def _draw_groups(rng: np.random.Generator, post: np.ndarray, none: float | None, samples: int) -> np.ndarray:
    """(S, G) bool: which groups are right in each simulated future (at most one when ``none`` is given)."""
    if none is None:
        out: np.ndarray = rng.random((samples, post.size)) < post
        return out
    probs = np.append(post, none)
    picks = rng.choice(probs.size, size=samples, p=probs / probs.sum())
    return picks[:, None] == np.arange(post.size)[None, :]


def _simulated_contrasts(model: WeaverV2Model, right: np.ndarray, group_of: np.ndarray, columns: list[int],
                         rng: np.random.Generator) -> np.ndarray:
    """(S, n, len(columns)) contrast evidence of scores drawn from the fitted contrast model given ``right``."""
    assert model.grouped is not None
    g = model.grouped
    samples, n = right.shape
    share = np.bincount(group_of)[group_of] / n
    cols = np.array(columns)
    noise = rng.standard_normal((samples, n, cols.size)) * np.sqrt(g.var[cols])
    scores = g.delta[cols] * right[:, :, None] + g.gamma[cols] * share[None, :, None] + noise
    stacked_groups = (group_of[None, :] + (group_of.max() + 1) * np.arange(samples)[:, None]).ravel()
    terms = contrasts(scores.reshape(samples * n, cols.size), stacked_groups, np.repeat(np.arange(samples), n),
                      samples)
    fit = ContrastFit(g.delta[cols], g.gamma[cols], g.var[cols])
    out: np.ndarray = contrast_evidence(terms, fit, np.ones(cols.size, dtype=bool)).reshape(samples, n, cols.size)
    return out
