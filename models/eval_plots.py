"""The figures of ``weaver eval --plot DIR``: what the evaluation tables say, readable at a glance.

- ``reliability.png``: one reliability diagram per probabilistic aggregator (predicted P(correct) against
  the observed share correct, per bin; marker area = candidates in the bin; ECE in the panel title).
- ``accuracy.png``: selection accuracy per aggregator with its bootstrap 95% interval; label-free and
  label-using aggregators in two colours; the random and oracle rows as labelled reference lines.
- ``verifiers.png``: each verifier's accuracy as Weaver estimates it (no labels) and as the labels say.

Legends sit outside the data area and reference lines are in the legend, so nothing covers a curve.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from models.evaluate import AggregatorRow, EvalReport

LABEL_FREE, USES_LABELS = "#1f77b4", "#d62728"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def reliability_figure(report: EvalReport, path: Path) -> Path | None:
    """Reliability diagrams of the aggregators that give probabilities; None when there are none."""
    rows = [r for r in report.rows if r.reliability]
    if not rows:
        return None
    plt = _pyplot()
    cols = min(3, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 4.4 * nrows + 0.6), squeeze=False)
    total = max(sum(b.count for b in rows[0].reliability), 1)
    for ax, row in zip(axes.flat, rows, strict=False):
        bins = row.reliability
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfectly calibrated")
        x = [b.mean_probability for b in bins]
        y = [b.accuracy for b in bins]
        sizes = [20 + 400 * b.count / total for b in bins]
        color = USES_LABELS if row.uses_labels else LABEL_FREE
        ax.plot(x, y, color=color, linewidth=1.2, label="observed share correct")
        ax.scatter(x, y, s=sizes, color=color, alpha=0.6, edgecolors="black", linewidths=0.5, zorder=3)
        ece = f"ECE {row.ece:.3f}" if _finite(row.ece) else "ECE -"
        ax.set_title(f"{row.name}\n{ece}, {'uses labels' if row.uses_labels else 'label-free'}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("predicted P(correct)")
        ax.set_ylabel("observed share correct")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows):]:
        ax.set_visible(False)
    handles = [
        plt.Line2D([], [], linestyle="--", color="gray", label="perfectly calibrated"),
        plt.Line2D([], [], marker="o", color=LABEL_FREE, label="observed share correct, label-free aggregator"),
        plt.Line2D([], [], marker="o", color=USES_LABELS, label="observed share correct, uses labels"),
        plt.Line2D([], [], marker="o", linestyle="", color="gray", alpha=0.6, markersize=9,
                   label="marker area = candidates in the bin"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"Reliability ({report.n_candidates} candidates, {report.n_labelled_queries} labelled queries)")
    fig.tight_layout(rect=(0, 0.1 / nrows, 1, 1))
    return _save(fig, path)


def accuracy_figure(report: EvalReport, path: Path) -> Path:
    """Selection accuracy per aggregator with 95% intervals, best at the top."""
    plt = _pyplot()
    refs = {r.name: r for r in report.rows if r.name.startswith(("random", "oracle"))}
    rows: list[AggregatorRow] = [r for r in report.rows if r.name not in refs and _finite(r.accuracy.mean)]
    rows.sort(key=lambda r: r.accuracy.mean)
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 2.2))
    for i, row in enumerate(rows):
        acc = row.accuracy
        color = USES_LABELS if row.uses_labels else LABEL_FREE
        ax.errorbar(100 * acc.mean, i, xerr=[[100 * (acc.mean - acc.low)], [100 * (acc.high - acc.mean)]],
                    fmt="o", color=color, ecolor=color, capsize=3)
        ax.annotate(f"{100 * acc.mean:.1f}", (100 * acc.high, i), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7, color=color)
    ax.set_yticks(range(len(rows)), [r.name for r in rows], fontsize=8)
    handles = [plt.Line2D([], [], marker="o", color=LABEL_FREE, label="label-free (95% CI)"),
               plt.Line2D([], [], marker="o", color=USES_LABELS, label="uses labels (95% CI)")]
    for (name, row), style in zip(sorted(refs.items()), (":", "--"), strict=False):
        handles.append(ax.axvline(100 * row.accuracy.mean, color="gray", linestyle=style,
                                  label=f"{name}: {100 * row.accuracy.mean:.1f}%"))
    ax.set_xlabel("selection accuracy (%): share of queries whose selected candidate is correct")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"Selection accuracy, {report.n_labelled_queries} labelled queries (bootstrap 95% CI)")
    fig.tight_layout()
    return _save(fig, path)


def verifier_figure(report: EvalReport, path: Path) -> Path | None:
    """Per verifier: Weaver's label-free accuracy estimate next to the accuracy the labels give."""
    rows = [r for r in report.verifier_rows if _finite(r.est_accuracy) or _finite(r.true_accuracy)]
    if not rows:
        return None
    plt = _pyplot()
    height = 0.32 * len(rows) + 2.2
    fig, ax = plt.subplots(figsize=(8, height))
    for i, row in enumerate(rows):
        pair = [v for v in (row.est_accuracy, row.true_accuracy) if _finite(v)]
        ax.plot(pair, [i] * len(pair), color="lightgray", linewidth=2, zorder=1)
    ax.scatter([r.est_accuracy for r in rows], range(len(rows)), marker="o", s=70, facecolors="none",
               edgecolors=LABEL_FREE, linewidths=1.8, zorder=2, label="estimated by Weaver (no labels)")
    ax.scatter([r.true_accuracy for r in rows], range(len(rows)), marker="D", color="black", s=16, zorder=3,
               label="true (from labels)")
    ax.set_yticks(range(len(rows)), [r.name if r.kept else f"{r.name} (dropped)" for r in rows], fontsize=8)
    values = [v for r in rows for v in (r.est_accuracy, r.true_accuracy) if _finite(v)]
    ax.set_xlim(max(0.0, math.floor(10 * min(values)) / 10 - 0.05), 1.02)
    ax.set_xlabel("verifier accuracy (share of candidates its vote gets right)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"Verifiers: estimated vs true accuracy (class balance est. {report.class_balance_estimated:.2f}, "
                 f"true {report.class_balance_true:.2f})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def write_eval_plots(report: EvalReport, directory: Path) -> list[Path]:
    """Write every figure the report supports into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [
        reliability_figure(report, directory / "reliability.png"),
        accuracy_figure(report, directory / "accuracy.png"),
        verifier_figure(report, directory / "verifiers.png"),
    ]
    return [p for p in written if p is not None]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def replay_figure(result: Any, n_queries: int, path: Path, title: str = "") -> Path:
    """Write ``build_replay_figure`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(build_replay_figure(result, n_queries, title), path)


def build_replay_figure(result: Any, n_queries: int, title: str = "") -> Any:
    """``weaver online replay --plot``: accuracy and per-verifier label-free rates against queries seen.

    ``result`` is a ``models.online.replay.ReplayResult``. The curves run over the same range as the
    printed headline: from the first refit to the last query of the file (the last refit's model keeps
    serving after it; the prequential share ends at the headline's figure). Lines that coincide stay
    visible: each has its own marker and dash, and the offline reference is a wide translucent band.
    """
    plt = _pyplot()
    points = result.points
    seen = [p.seen for p in points]
    x = seen + ([n_queries] if not seen or seen[-1] < n_queries else [])
    whole = [100 * p.whole_set_accuracy for p in points]
    prequential = [100 * p.prequential_accuracy for p in points]
    if len(x) > len(seen):  # extend to the end of the stream: the headline's numbers
        whole.append(100 * result.online_accuracy)
        prequential.append(100 * result.prequential_accuracy)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True)
    top.axhline(100 * result.offline_accuracy, color="gray", linewidth=6, alpha=0.3,
                label=f"offline fit on all: {100 * result.offline_accuracy:.1f}%")
    top.plot(x, whole, "o-", color=LABEL_FREE, label=f"online model, whole set: {100 * result.online_accuracy:.1f}%")
    top.plot(x, prequential, "s--", color="#ff7f0e", markerfacecolor="none",
             label=f"served so far (prequential): {100 * result.prequential_accuracy:.1f}%")
    rejected = [(p.seen, 100 * p.whole_set_accuracy) for p in points if p.outcome != "published"]
    if rejected:
        top.scatter(*zip(*rejected, strict=True), marker="x", color="black", s=60, zorder=4,
                    label="refit rejected by a guardrail")
    top.set_ylabel("selection accuracy (%)")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    names = sorted({name for p in points for name in p.estimated_accuracy})
    markers = "o^sDvP*X<>"
    cmap = plt.get_cmap("tab10")
    for k, name in enumerate(names):
        color, marker = cmap(k % 10), markers[k % len(markers)]
        # the last refit's estimates hold until the end of the stream, like the headline figures
        accuracy = [p.estimated_accuracy.get(name, float("nan")) for p in points]
        rate = [p.positive_rate.get(name, float("nan")) for p in points]
        pad = len(x) - len(seen)
        bottom.plot(x, accuracy + accuracy[-1:] * pad, marker=marker, markevery=range(len(seen)),
                    linestyle="-", color=color, label=f"{name}: est. accuracy")
        bottom.plot(x, rate + rate[-1:] * pad, marker=marker, markevery=range(len(seen)),
                    markerfacecolor="none", linestyle=":", color=color, label=f"{name}: positive rate")
    bottom.set_xlabel("queries seen")
    bottom.set_ylabel("per-verifier rate (label-free)")
    bottom.set_ylim(0, 1.02)
    bottom.set_xlim(0, n_queries * 1.02)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False,
                  ncol=1 if len(names) <= 8 else 2)
    fig.tight_layout()
    return fig
