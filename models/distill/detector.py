"""Teacher-hacking detector: a power-law fit to the proxy curve, and a golden-vs-proxy check.

Tiapkin et al. (2025) observe that with fresh data the proxy loss falls polynomially in the
training step (a line on log-log axes), while with a replayed pool it bends away and flattens just
as the golden metric turns. The paper gives no test; the thresholds here are engineering choices
(research note §5.4): fit log L = a - b log t on the first part of the run, extrapolate, and flag a
deviation when the observed loss sits above the fit by more than max(5 %, 3 sigma of the fit's
residuals) for 3 evaluations in a row. Separately, when labels exist, flag teacher hacking when the
golden metric is worse than its best by a margin for 3 evaluations while the proxy still improves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    """log L = a - b log t (c = 0), or L = c + exp(a) t^-b when fitted with a floor."""

    a: float
    b: float
    c: float
    n_points: int
    residual_sigma: float  # std of relative residuals on the fitted points

    def predict(self, t: np.ndarray) -> np.ndarray:
        return self.c + np.exp(self.a) * np.power(np.asarray(t, dtype=float), -self.b)


@dataclass(frozen=True)
class Flag:
    kind: str  # "proxy_deviation" | "teacher_hacking"
    step: int  # first evaluation of the run of offending points
    confirmed_at: int  # evaluation step at which the flag became certain
    detail: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fit_power_law(
    steps: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, floor: bool = False
) -> PowerLawFit:
    """Robust (soft-L1) least squares on log-log axes; with ``floor`` also fits an asymptote c >= 0."""
    from scipy.optimize import least_squares

    t = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    keep = (t > 0) & (y > 0) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if t.size < 3:
        raise ValueError(f"need at least 3 positive points to fit a power law, got {t.size}")
    slope, intercept = np.polyfit(np.log(t), np.log(y), 1)
    start = np.array([intercept, -slope])

    def residuals(theta: np.ndarray) -> np.ndarray:
        c = theta[2] if floor else 0.0
        fitted = c + np.exp(theta[0]) * np.power(t, -theta[1])
        return np.asarray(np.log(np.maximum(fitted, 1e-12)) - np.log(y))

    if floor:
        start = np.append(start, 0.0)
        result = least_squares(residuals, start, loss="soft_l1", f_scale=0.05,
                               bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, float(y.min())]))
    else:
        result = least_squares(residuals, start, loss="soft_l1", f_scale=0.05)
    theta = result.x
    fit = PowerLawFit(float(theta[0]), float(theta[1]), float(theta[2]) if floor else 0.0, int(t.size), 0.0)
    relative = (y - fit.predict(t)) / fit.predict(t)
    return PowerLawFit(fit.a, fit.b, fit.c, fit.n_points, float(np.std(relative)))


@dataclass(frozen=True)
class DetectorConfig:
    fit_fraction: float = 0.4  # share of evaluations (after warm-up) the power law is fitted on
    warmup_points: int = 1  # evaluations skipped before fitting (the first steps are not yet polynomial)
    min_fit_points: int = 4
    min_relative_deviation: float = 0.05
    sigmas: float = 3.0
    consecutive: int = 3
    golden_auroc_drop: float = 0.01
    golden_bce_rise: float = 0.02  # relative


@dataclass(frozen=True)
class DetectorReport:
    fit: PowerLawFit | None
    flags: tuple[Flag, ...]
    relative_residuals: tuple[float, ...]  # per evaluation, NaN inside warm-up or before a fit exists

    def first(self, kind: str) -> Flag | None:
        return next((f for f in self.flags if f.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "fit": None if self.fit is None else asdict(self.fit),
            "flags": [f.to_json() for f in self.flags],
            "relative_residuals": [None if np.isnan(r) else r for r in self.relative_residuals],
        }


def detect(
    steps: Sequence[float],
    proxy: Sequence[float],
    golden_auroc: Sequence[float | None] | None = None,
    golden_bce: Sequence[float | None] | None = None,
    config: DetectorConfig | None = None,
) -> DetectorReport:
    """Run both checks over a whole history (cheap: re-run after every evaluation)."""
    config = config or DetectorConfig()
    t = np.asarray(steps, dtype=float)
    y = np.asarray(proxy, dtype=float)
    flags: list[Flag] = []
    fit, residuals = _proxy_deviation(t, y, config, flags)
    _golden_divergence(t, y, golden_auroc, golden_bce, config, flags)
    flags.sort(key=lambda f: f.confirmed_at)
    return DetectorReport(fit, tuple(flags), tuple(float(r) for r in residuals))


def _proxy_deviation(
    t: np.ndarray, y: np.ndarray, config: DetectorConfig, flags: list[Flag]
) -> tuple[PowerLawFit | None, np.ndarray]:
    residuals = np.full(t.size, np.nan)
    usable = t.size - config.warmup_points
    n_fit = max(config.min_fit_points, int(round(config.fit_fraction * usable)))
    if usable < n_fit + config.consecutive:
        return None, residuals
    lo, hi = config.warmup_points, config.warmup_points + n_fit
    try:
        fit = fit_power_law(t[lo:hi], y[lo:hi])
    except ValueError:
        return None, residuals
    predicted = fit.predict(t[lo:])
    residuals[lo:] = (y[lo:] - predicted) / predicted
    tolerance = max(config.min_relative_deviation, config.sigmas * fit.residual_sigma)
    run = 0
    for i in range(hi, t.size):
        run = run + 1 if residuals[i] > tolerance else 0
        if run == config.consecutive:
            first = i - config.consecutive + 1
            flags.append(Flag(
                "proxy_deviation", int(t[first]), int(t[i]),
                f"proxy {y[first]:.4g} is {100 * residuals[first]:.1f}% above the power law "
                f"(log L = {fit.a:.3f} - {fit.b:.3f} log t fitted on steps {int(t[lo])}-{int(t[hi - 1])}); "
                f"tolerance {100 * tolerance:.1f}% for {config.consecutive} evaluations",
            ))
            break
    return fit, residuals


def _golden_divergence(
    t: np.ndarray,
    proxy: np.ndarray,
    golden_auroc: Sequence[float | None] | None,
    golden_bce: Sequence[float | None] | None,
    config: DetectorConfig,
    flags: list[Flag],
) -> None:
    series: list[tuple[str, np.ndarray, bool, float, bool]] = []
    if golden_auroc is not None:
        series.append(("AUROC", _floats(golden_auroc), True, config.golden_auroc_drop, False))
    if golden_bce is not None:
        series.append(("BCE", _floats(golden_bce), False, config.golden_bce_rise, True))
    for name, values, higher_is_better, margin, relative in series:
        if np.isnan(values).all():
            continue
        run = 0
        for i in range(values.size):
            best_i = _best_index(values[: i + 1], higher_is_better)
            if best_i is None or np.isnan(values[i]):
                run = 0
                continue
            best = values[best_i]
            gap = (best - values[i]) if higher_is_better else (values[i] - best)
            threshold = margin * abs(best) if relative else margin
            proxy_improving = proxy[i] < proxy[best_i]
            run = run + 1 if gap > threshold and proxy_improving else 0
            if run == config.consecutive:
                first = i - config.consecutive + 1
                flags.append(Flag(
                    "teacher_hacking", int(t[first]), int(t[i]),
                    f"golden {name} {values[i]:.4g} is worse than its best {best:.4g} (step {int(t[best_i])}) "
                    f"for {config.consecutive} evaluations while the proxy kept improving "
                    f"({proxy[best_i]:.4g} -> {proxy[i]:.4g})",
                ))
                break


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values])


def _best_index(values: np.ndarray, higher_is_better: bool) -> int | None:
    if np.isnan(values).all():
        return None
    return int(np.nanargmax(values) if higher_is_better else np.nanargmin(values))
