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


def plot_runs(path: str | Path, runs: Mapping[str, TrainResult], title: str = "") -> Path:
    """Four panels: proxy BCE (log-log, with the fitted power law), proxy top-1, golden AUROC, golden BCE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5), dpi=80)
    panels = [
        (axes[0, 0], "proxy_bce", "proxy: soft BCE vs teacher (held-out)", True),
        (axes[0, 1], "proxy_top1", "proxy: top-1 agreement with teacher", False),
        (axes[1, 0], "golden_auroc", "golden: AUROC vs labels", False),
        (axes[1, 1], "golden_bce", "golden: BCE vs labels", False),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, result) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        steps = np.array([p.step for p in result.history], dtype=float)
        for ax, key, _, loglog in panels:
            values = np.array([np.nan if getattr(p, key) is None else getattr(p, key) for p in result.history])
            x, y = (steps[1:], values[1:]) if loglog else (steps, values)  # step 0 has no place on log axes
            ax.plot(x, y, marker=".", color=color, label=name)
            if result.best_step and not np.isnan(values).all():
                ax.axvline(result.best_step, color=color, alpha=0.25, linestyle=":")
            for flag in result.detector.flags:
                ax.axvline(flag.step, color=color, alpha=0.6, linestyle="--")
        fit = result.detector.fit
        if fit is not None and steps.size > 1:
            grid = np.linspace(max(steps[1], 1.0), steps[-1], 50)
            axes[0, 0].plot(grid, fit.predict(grid), color=color, alpha=0.5, linewidth=1,
                            label=f"{name} power law (b={fit.b:.2f})")
    for ax, _, label, loglog in panels:
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.tick_params(labelsize=7)
        if loglog:
            ax.set_xscale("log")
            ax.set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or "distillation monitor (dashed: detector flags, dotted: restored checkpoint)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
