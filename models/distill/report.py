"""Run reports: the JSON log and the PNG plot (proxy and golden curves, power-law fit, flags)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.distill.trainer import TrainResult


def write_log(path: str | Path, runs: Mapping[str, TrainResult], extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"runs": {name: result.to_json() for name, result in runs.items()}}
    if extra:
        payload.update(extra)
    path.write_text(json.dumps(payload, indent=2, default=_default))
    return path


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


FLAG_STYLES: dict[str, Any] = {"proxy_deviation": "--", "teacher_hacking": "-."}  # anything else: dashed too


def plot_runs(path: str | Path, runs: Mapping[str, TrainResult], title: str = "") -> Path:
    """Four panels: proxy BCE (log-log, with the fitted power law), proxy top-1, golden AUROC, golden BCE.

    One legend below the panels (so it covers no curve) names every run, its power-law exponent, and the
    line styles of the detector flags and the restored checkpoint; log axes carry plain-number ticks
    only at 1-2-5 steps, so their labels never collide.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(9, 7.2), dpi=80)
    panels = [
        (axes[0, 0], "proxy_bce", "proxy: soft BCE vs teacher (held-out, log-log)", True),
        (axes[0, 1], "proxy_top1", "proxy: top-1 agreement with teacher", False),
        (axes[1, 0], "golden_auroc", "golden: AUROC vs labels", False),
        (axes[1, 1], "golden_bce", "golden: BCE vs labels", False),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles: list[Any] = []
    kinds: set[str] = set()
    for i, (name, result) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        steps = np.array([p.step for p in result.history], dtype=float)
        for ax, key, _, loglog in panels:
            values = np.array([np.nan if getattr(p, key) is None else getattr(p, key) for p in result.history])
            x, y = (steps[1:], values[1:]) if loglog else (steps, values)  # step 0 has no place on log axes
            ax.plot(x, y, marker=".", color=color)
            if result.best_step and not np.isnan(values).all():
                ax.axvline(result.best_step, color=color, alpha=0.35, linestyle=":")
            for flag in result.detector.flags:
                ax.axvline(flag.step, color=color, alpha=0.7, linestyle=FLAG_STYLES.get(flag.kind, "--"))
                kinds.add(flag.kind)
        fit = result.detector.fit
        label = name
        if fit is not None and steps.size > 1:
            grid = np.linspace(max(steps[1], 1.0), steps[-1], 50)
            axes[0, 0].plot(grid, fit.predict(grid), color=color, alpha=0.5, linewidth=1)
            label += f" (power law b={fit.b:.2f})"
        handles.append(Line2D([], [], color=color, marker=".", label=label))
    if any(r.detector.fit is not None for r in runs.values()):
        handles.append(Line2D([], [], color="gray", alpha=0.5, linewidth=1, label="fitted power law (thin)"))
    for kind in sorted(kinds):
        handles.append(Line2D([], [], color="gray", linestyle=FLAG_STYLES.get(kind, "--"),
                              label=f"detector flag: {kind.replace('_', ' ')}"))
    handles.append(Line2D([], [], color="gray", alpha=0.6, linestyle=":", label="restored (best) checkpoint"))
    for ax, _, label, loglog in panels:
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.tick_params(labelsize=7)
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
    fig.suptitle(title or "distillation monitor", fontsize=9)
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False)
    rows = (len(handles) + 1) // 2
    fig.tight_layout(rect=(0, 0.01 + 0.025 * rows, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path
