"""The figure of ``weaver cascade --plot DIR``: selection accuracy against verifier compute.

The fixed policies (the first k cost-ordered stages, ending at the full ensemble) form one line; every
cascade setting of the sweep is a point coloured by its budget, and the cascades that no other cascade
beats on both axes are joined (the frontier). The full ensemble's accuracy less 0.5 points and 40 % of
its compute (issue 17's acceptance) are reference lines. The bootstrap intervals are in the table, not
drawn: at a few hundred queries they span several points and would hide the curve. Legends sit outside
the data area.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from models.cascade_replay import PolicyResult
from models.eval_plots import LABEL_FREE, _pyplot, _save


def frontier(policies: Sequence[PolicyResult]) -> list[PolicyResult]:
    """The policies no other policy beats on both compute (lower) and accuracy (higher), by compute."""
    ordered = sorted(policies, key=lambda p: (p.compute_share, -p.accuracy.mean))
    out: list[PolicyResult] = []
    for p in ordered:
        if not out or p.accuracy.mean > out[-1].accuracy.mean:
            out.append(p)
    return out


def cascade_figure(fixed: Sequence[PolicyResult], cascades: Sequence[PolicyResult], path: Path,
                   title: str = "") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    full = fixed[-1]
    xs = [100 * p.compute_share for p in fixed]
    ys = [100 * p.accuracy.mean for p in fixed]
    ax.plot(xs, ys, "s-", color="black", markersize=5, label="fixed: first k stages (cost order)")
    for k, (x, y) in enumerate(zip(xs, ys, strict=True), start=1):
        ax.annotate(str(k), (x, y), xytext=(3, -10), textcoords="offset points", fontsize=7)
    budgets = sorted({p.budget_s for p in cascades}, key=lambda b: float("inf") if b is None else -b)
    cmap = plt.get_cmap("viridis")
    for i, budget in enumerate(budgets):
        group = [p for p in cascades if p.budget_s == budget]
        share = "" if budget is None or full.full_cost_s <= 0 else f" ({100 * budget / full.full_cost_s:.0f} % of full)"
        label = "cascade, no budget" if budget is None else f"cascade, budget {budget:.3g} s/candidate{share}"
        # a marker and size per budget: settings that coincide stay visible as nested markers
        ax.scatter([100 * p.compute_share for p in group], [100 * p.accuracy.mean for p in group],
                   s=70 - 40 * i / max(len(budgets) - 1, 1), marker="osD^v"[i % 5],
                   color=cmap(i / max(len(budgets) - 1, 1)), alpha=0.8, edgecolors="black", linewidths=0.4,
                   zorder=3 + i, label=label)
    served = [p for p in cascades if p.budget_s is None and p.max_change is not None]
    if served:  # the lookahead rule without a budget: what the worker serves by default
        ax.scatter([100 * p.compute_share for p in served], [100 * p.accuracy.mean for p in served], s=160,
                   marker="*", facecolors="none", edgecolors="crimson", linewidths=1.2, zorder=20,
                   label="cascade, lookahead rule (served), no budget")
    front = frontier(cascades)
    if front:
        ax.plot([100 * p.compute_share for p in front], [100 * p.accuracy.mean for p in front], "-",
                color=LABEL_FREE, linewidth=1.2, zorder=2, label="cascade frontier")
    ax.axhline(100 * full.accuracy.mean - 0.5, color="gray", linestyle="--", linewidth=1,
               label=f"full ensemble - 0.5 points ({100 * full.accuracy.mean - 0.5:.1f} %)")
    ax.axvline(40, color="gray", linestyle=":", linewidth=1, label="40 % of full compute")
    ax.set_xlabel("verifier compute (% of the full ensemble's seconds)")
    n = len(full.queries)
    ax.set_ylabel(f"selection accuracy (%; one query = {100 / n:.2f} points)" if n else "selection accuracy (%)")
    ax.set_xlim(-2, 104)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)

