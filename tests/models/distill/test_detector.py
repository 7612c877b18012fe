"""The teacher-hacking detector on synthetic curves with known shapes."""

from __future__ import annotations

import numpy as np

from models.distill.detector import detect, fit_power_law

STEPS = np.arange(10, 310, 10, dtype=float)  # 30 evaluations


def test_power_law_fit_recovers_the_exponent():
    fit = fit_power_law(STEPS, 2.0 * STEPS ** -0.4)
    assert abs(fit.b - 0.4) < 1e-3 and abs(np.exp(fit.a) - 2.0) < 1e-2


def test_clean_power_law_with_noise_is_not_flagged():
    rng = np.random.default_rng(0)
    for seed_shift in range(5):
        noise = 1 + 0.01 * rng.standard_normal(STEPS.size)
        proxy = 1.5 * STEPS ** -0.3 * noise
        report = detect(STEPS, proxy)
        assert report.fit is not None
        assert report.flags == (), (seed_shift, report.flags)


def test_flattening_proxy_is_flagged_after_the_bend():
    proxy = 1.5 * STEPS ** -0.3
    bend = 15  # from the 16th evaluation the loss stalls at its value there (memorised pool)
    proxy[bend:] = proxy[bend] * (1 + 0.002 * np.arange(STEPS.size - bend))
    report = detect(STEPS, proxy)
    flag = report.first("proxy_deviation")
    assert flag is not None
    assert STEPS[bend] <= flag.step <= STEPS[-1]
    assert report.first("teacher_hacking") is None  # no labels given


def test_golden_u_turn_while_proxy_improves_is_teacher_hacking():
    proxy = 1.5 * STEPS ** -0.3  # keeps falling
    auroc = np.concatenate([np.linspace(0.6, 0.8, 12), np.linspace(0.79, 0.70, STEPS.size - 12)])
    report = detect(STEPS, proxy, golden_auroc=list(auroc))
    flag = report.first("teacher_hacking")
    assert flag is not None and flag.step > STEPS[11]
    assert report.first("proxy_deviation") is None


def test_golden_that_keeps_improving_is_not_flagged():
    proxy = 1.5 * STEPS ** -0.3
    auroc = np.linspace(0.6, 0.85, STEPS.size)
    bce = np.linspace(0.7, 0.5, STEPS.size)
    assert detect(STEPS, proxy, golden_auroc=list(auroc), golden_bce=list(bce)).flags == ()


def test_golden_drop_while_proxy_also_worsens_is_not_teacher_hacking():
    proxy = np.concatenate([1.5 * STEPS[:12] ** -0.3, np.full(STEPS.size - 12, 1.5 * STEPS[11] ** -0.3 * 1.2)])
    auroc = np.concatenate([np.linspace(0.6, 0.8, 12), np.full(STEPS.size - 12, 0.7)])
    report = detect(STEPS, proxy, golden_auroc=list(auroc))
    assert report.first("teacher_hacking") is None


def test_too_few_points_means_no_fit_and_no_flag():
    report = detect(STEPS[:5], 1.5 * STEPS[:5] ** -0.3)
    assert report.fit is None and report.flags == ()
