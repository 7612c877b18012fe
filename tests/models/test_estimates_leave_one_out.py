"""Label-free estimates that rest on one verifier are flagged: the bootstrap refits the same model and cannot
see its bias, so each verifier is also left out once, and an estimate that moves past the limit without it
(or that the others cannot identify alone) is "not identified" rather than a number to trust."""

from __future__ import annotations

import numpy as np

from models.estimates import MAX_LEAVE_ONE_OUT_SHIFT, label_free_estimates
from models.simulate import simulate
from models.simulate_realistic import RealisticConfig, simulate_realistic


def test_an_estimate_that_moves_without_one_verifier_rests_on_it() -> None:
    # 4 candidates per query: answer agreement carries most of the fit, and the estimates follow it
    sim = simulate_realistic(RealisticConfig(n_queries=300, n_samples=4, seed=0))
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    est = label_free_estimates(matrices, sim.verifier_names, sim.answers, n_resamples=2)
    truth = float(np.concatenate(sim.labels).mean())
    balance = est.class_balance
    assert abs(balance.value - truth) > 0.05  # off, which the flag is there to say
    assert balance.rests_on == "answer_agreement" and not balance.identified
    assert abs(balance.without - balance.value) > MAX_LEAVE_ONE_OUT_SHIFT
    own = next(a for a in est.accuracies if a.name == "answer_agreement")
    assert own.rests_on == "answer_agreement"  # its accuracy against the others' consensus differs
    assert any("answer_agreement on itself" in w for w in est.warnings)
    assert any(w.startswith("resting on one verifier") and "class_balance on answer_agreement" in w
               for w in est.warnings)


def test_with_three_verifiers_each_is_needed_to_identify_the_rest() -> None:
    sim = simulate(200, 20, 3, seed=0)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    est = label_free_estimates(matrices, sim.verifier_names, n_resamples=2)
    assert est.class_balance.rests_on in sim.verifier_names and np.isnan(est.class_balance.without)
    assert not est.class_balance.identified
    assert all(a.rests_on is not None and not a.identified for a in est.accuracies)
    assert any("-> unidentified" in w for w in est.warnings)


def test_leave_one_out_can_be_skipped() -> None:
    sim = simulate(200, 20, 3, seed=0)
    matrices = [cs.score_matrix(sim.verifier_names) for cs in sim.sets]
    est = label_free_estimates(matrices, sim.verifier_names, n_resamples=2, leave_one_out=False)
    assert est.class_balance.rests_on is None and not any(w.startswith("resting") for w in est.warnings)
