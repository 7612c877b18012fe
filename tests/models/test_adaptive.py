"""models/adaptive (settle rule, stages, cascade stops, sampling rounds) and its offline replay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.adaptive import (
    MARGIN_OFF,
    STOP_BUDGET,
    STOP_EXHAUSTED,
    STOP_SETTLED,
    Cascade,
    Decision,
    SettleRule,
    plan_stages,
    sample_rounds,
    stage_cost,
    vote_lead_probability,
)
from models.aggregators import QueryScores, WeaverAggregator
from models.cascade_replay import (
    SIMULATED_COSTS,
    ReplayTable,
    best_within,
    build_table,
    fit_label_model,
    replay_cascade,
    replay_fixed,
    sweep,
)
from models.simulate_realistic import RealisticConfig, simulate_realistic

NEVER = SettleRule(confidence=1.5, margin=MARGIN_OFF, vote_confidence=1.5, max_change=None)
ALWAYS = SettleRule(confidence=0.0, margin=0.0, vote_confidence=0.0, max_change=None)
UNSETTLED = Decision(False, "", 0.5, 0.0)


# -- the settle rule ---------------------------------------------------------------------------


def test_posterior_rule_settles_on_confidence_or_margin() -> None:
    rule = SettleRule(confidence=0.9, margin=0.5)
    confident = rule.decide(np.array([0.95, 0.2, 0.1]), [0, 1, 2], True)
    assert confident.settled and confident.top == pytest.approx(0.95)
    leading = rule.decide(np.array([0.8, 0.2, 0.1]), [0, 1, 2], True)
    assert leading.settled and leading.margin == pytest.approx(0.6)
    close = rule.decide(np.array([0.6, 0.5, 0.1]), [0, 1, 2], True)
    assert not close.settled and close.margin == pytest.approx(0.1)


def test_posterior_rule_compares_with_the_best_candidate_outside_the_top_group() -> None:
    rule = SettleRule(confidence=0.99, margin=0.5)
    # candidates 0 and 1 give one answer: the runner-up is candidate 2, not candidate 1
    d = rule.decide(np.array([0.8, 0.8, 0.2]), [0, 0, 1], True)
    assert d.settled and d.margin == pytest.approx(0.6)
    # every candidate in the top group: nothing to compare with, the lead is the top itself
    assert rule.decide(np.array([0.7, 0.7]), [0, 0], True).margin == pytest.approx(0.7)


def test_posterior_rule_without_a_usable_posterior_does_not_settle() -> None:
    d = SettleRule().decide(np.array([np.nan, np.nan]), [0, 1], True)
    assert not d.settled and math.isnan(d.top)


def test_vote_rule() -> None:
    rule = SettleRule(vote_confidence=0.95)
    assert rule.decide(np.zeros(8), [0] * 8, False).settled  # unanimous: P(leads) = 1 - 0.5^9
    assert not rule.decide(np.zeros(6), [0, 0, 0, 1, 1, 1], False).settled  # a tie: 0.5
    assert vote_lead_probability([0, 0, 0, 1, 1, 1]) == pytest.approx(0.5)
    assert vote_lead_probability([-1, -1]) == 0.0  # no answers
    assert vote_lead_probability([0] * 8) > vote_lead_probability([0] * 4) > vote_lead_probability([0, 0, 1])
    assert math.isnan(rule.decide_vote([0, 0]).margin)


# -- stages, stops, rounds ---------------------------------------------------------------------


def test_plan_stages_groups_cheap_verifiers_then_orders_by_cost() -> None:
    costs = {"judge": 1.2, "agree": 0.0001, "embed": 0.06, "check": 0.003}
    assert plan_stages(["judge", "agree", "embed", "check"], costs) == [["agree", "check"], ["embed"], ["judge"]]
    # unmeasured verifiers run last, in their given order; no cheap verifier: no shared first stage
    assert plan_stages(["x", "embed", "y"], {"embed": 0.06}) == [["embed"], ["x"], ["y"]]
    assert plan_stages(["a", "b"], {"a": 0.5, "b": 0.5}) == [["a"], ["b"]]


def test_stage_cost_charges_only_measured_verifiers() -> None:
    assert stage_cost(["a", "b"], {"a": 0.25, "b": 0.5}) == pytest.approx(0.75)
    assert stage_cost(["a", "x"], {"a": 0.25, "x": float("inf")}) == pytest.approx(0.25)
    assert stage_cost(["unmeasured"], {}) == 0.0


def test_cascade_stop_reasons() -> None:
    costs = {"cheap": 0.00390625, "mid": 0.125, "big": 1.0}  # exact in binary: the sums below are exact
    cascade = Cascade.plan(["big", "mid", "cheap"], costs, SettleRule(), budget_s=0.5)
    assert cascade.stages == (("cheap",), ("mid",), ("big",))
    assert cascade.stop_reason(1, 0.00390625, Decision(True, "", 0.95, 0.5)) == STOP_SETTLED
    assert cascade.stop_reason(1, 0.00390625, UNSETTLED) is None  # mid fits the budget
    assert cascade.stop_reason(2, 0.12890625, UNSETTLED) == STOP_BUDGET  # big would pass it
    assert cascade.stop_reason(3, 1.12890625, UNSETTLED) == STOP_EXHAUSTED
    unbounded = Cascade.plan(["big", "mid", "cheap"], costs, SettleRule())
    assert unbounded.stop_reason(2, 0.12890625, UNSETTLED) is None
    exact = Cascade.plan(["big", "mid", "cheap"], costs, SettleRule(), budget_s=0.12890625)
    assert exact.stop_reason(1, 0.00390625, UNSETTLED) is None  # reaching the budget exactly is allowed


def test_sample_rounds() -> None:
    assert sample_rounds(32) == [2, 4, 8, 16, 32]
    assert sample_rounds(5) == [2, 4, 5]
    assert sample_rounds(2) == [2]
    assert sample_rounds(1) == [1]
    assert sample_rounds(12, first=3) == [3, 6, 12]


# -- the replay --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> ReplayTable:
    sim = simulate_realistic(RealisticConfig(n_queries=60, n_samples=12, seed=3))
    names = sim.verifier_names
    queries = [QueryScores(cs.score_matrix(names), names, a) for cs, a in zip(sim.sets, sim.answers, strict=True)]
    return build_table(queries, fit_label_model(queries), SIMULATED_COSTS, sim.labels)


def test_replay_ranks_with_the_served_aggregator(table: ReplayTable) -> None:
    model = fit_label_model(table.queries)
    served = WeaverAggregator(model)
    full = replay_fixed(table, len(table.stages))
    assert [o.selected for o in full.queries] == [served.rank(q).selected for q in table.queries]
    first = replay_fixed(table, 1)
    run = set(table.stages[0])
    for q, outcome in zip(table.queries, first.queries, strict=True):
        masked = np.where(np.array([n in run for n in q.verifier_names])[None, :], q.matrix, np.nan)
        assert outcome.selected == served.rank(QueryScores(masked, q.verifier_names, q.answers)).selected
        # the worker hands the aggregator only the columns it ran: the model aligns the rest as abstentions
        cols = [q.verifier_names.index(n) for n in table.stages[0]]
        assert outcome.selected == served.rank(QueryScores(q.matrix[:, cols], table.stages[0], q.answers)).selected


def test_a_rule_that_never_settles_is_the_full_ensemble(table: ReplayTable) -> None:
    full = replay_fixed(table, len(table.stages))
    never = replay_cascade(table, NEVER)
    assert [o.selected for o in never.queries] == [o.selected for o in full.queries]
    assert never.compute_s == pytest.approx(full.compute_s)
    assert never.compute_share == pytest.approx(1.0) and never.agreement == 1.0
    assert never.stop_reasons == {STOP_EXHAUSTED: len(table.queries)}
    assert never.accuracy.mean == pytest.approx(full.accuracy.mean)


def test_a_rule_that_always_settles_runs_only_the_first_stage(table: ReplayTable) -> None:
    always = replay_cascade(table, ALWAYS)
    first = replay_fixed(table, 1)
    assert all(o.stages_run == 1 and o.verifiers_run == table.stages[0] for o in always.queries)
    assert [o.selected for o in always.queries] == [o.selected for o in first.queries]
    assert always.stop_reasons == {STOP_SETTLED: len(table.queries)}
    stage1 = stage_cost(table.stages[0], table.costs)
    assert always.compute_s == pytest.approx(sum(stage1 * q.n_candidates for q in table.queries))


def test_budget_stops_the_cascade(table: ReplayTable) -> None:
    budget = table.prefix_cost(3) + 1e-9  # room for three stages, not four
    capped = replay_cascade(table, NEVER, budget_s=budget)
    assert capped.stop_reasons == {STOP_BUDGET: len(table.queries)}
    assert all(o.stages_run == 3 for o in capped.queries)
    assert [o.selected for o in capped.queries] == [o.selected for o in replay_fixed(table, 3).queries]
    assert all(o.compute_s <= budget * q.n_candidates for o, q in zip(capped.queries, table.queries, strict=True))
    tiny = replay_cascade(table, NEVER, budget_s=0.0)  # the first stage always runs
    assert all(o.stages_run == 1 for o in tiny.queries)
    whole = replay_cascade(table, NEVER, budget_s=table.full_cost)  # a budget that covers everything
    assert whole.stop_reasons == {STOP_EXHAUSTED: len(table.queries)}


def test_replay_figures_are_consistent(table: ReplayTable) -> None:
    fixed, cascades = sweep(table, [0.8, 0.95], [0.5, MARGIN_OFF], [None, table.full_cost * 0.4])
    full = fixed[-1]
    assert len(fixed) == len(table.stages) and len(cascades) == 8
    assert full.compute_share == pytest.approx(1.0)
    shares = [p.compute_share for p in fixed]
    assert shares == sorted(shares)
    for p in fixed + cascades:
        hits = [o.correct for o in p.queries]
        assert p.accuracy.mean == pytest.approx(np.mean(hits))
        assert p.accuracy.low <= p.accuracy.mean <= p.accuracy.high
        assert p.compute_s == pytest.approx(sum(o.compute_s for o in p.queries))
        assert p.compute_share == pytest.approx(p.compute_s / full.compute_s)
        assert sum(p.stop_reasons.values()) == len(table.queries)
        assert p.agreement == pytest.approx(np.mean([o.agrees_with_full for o in p.queries]))
        if p.budget_s is not None:
            assert p.compute_share <= 0.4 + 1e-9
    best = best_within(cascades, full, points=100.0, max_share=1.0)
    assert best is not None and best.compute_share == min(p.compute_share for p in cascades)
    assert best_within(cascades, full, points=-100.0) is None


# -- the lookahead: would the verifiers not yet run change the choice? -----------------------------


def test_lookahead_replaces_the_thresholds_when_it_is_known() -> None:
    rule = SettleRule(confidence=0.5, max_change=0.01)
    confident = np.array([0.9, 0.1])
    assert rule.decide(confident, [0, 1], True).settled  # no lookahead: the threshold rule
    assert not rule.decide(confident, [0, 1], True, change=0.2).settled
    low = rule.decide(np.array([0.3, 0.1]), [0, 1], True, change=0.0)
    assert low.settled and "would change the answer" in low.reason and low.top == pytest.approx(0.3)


def test_change_probability_follows_the_doubt(table: ReplayTable) -> None:
    from models.lookahead import change_probability
    from models.weaver import WeaverModel

    model = fit_label_model(table.queries)
    names = table.names
    rest = [n for stage in table.stages[1:] for n in stage]
    first = set(table.stages[0])
    cheap_only = [np.where([n in first for n in names], q.matrix, np.nan) for q in table.queries]
    changes = [change_probability(model, m, names, g, q.task, rest)
               for m, q, g in zip(cheap_only, table.queries, table.groups, strict=True)]
    assert all(c is not None and 0.0 <= c <= 1.0 for c in changes)
    again = change_probability(model, cheap_only[0], names, table.groups[0], None, rest)
    assert again == changes[0]  # seeded: the same scores give the same decision
    full = [change_probability(model, q.matrix, names, g, q.task, []) for q, g in zip(table.queries, table.groups,
                                                                                       strict=True)]
    assert full == [0.0] * len(full)  # nothing left to run: nothing can change
    # the queries whose choice the full ensemble overturns are the ones the lookahead doubted most
    overturned = [c for c, row in zip(changes, table.rankings, strict=True) if row[0][1] != row[-1][1]]
    kept = [c for c, row in zip(changes, table.rankings, strict=True) if row[0][1] == row[-1][1]]
    assert overturned and kept and np.mean(overturned) > np.mean(kept)  # type: ignore[arg-type]
    v1 = WeaverModel.fit([q.matrix for q in table.queries], names)
    assert change_probability(v1, cheap_only[0], names, None, None, rest) is None  # v1: the thresholds decide


def test_the_lookahead_cascade_keeps_the_full_ensembles_choice_for_less(table: ReplayTable) -> None:
    full = replay_fixed(table, len(table.stages))
    lookahead = replay_cascade(table, SettleRule(max_change=0.01))
    assert lookahead.compute_share < 1.0 and lookahead.agreement >= 0.95
    assert lookahead.accuracy.mean >= full.accuracy.mean - 0.05
