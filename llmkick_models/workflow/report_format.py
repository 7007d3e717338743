"""How the report writes numbers, verdict marks and relative changes (shared by its tables)."""

from __future__ import annotations

from llmkick_models.workflow import paired_stats
from llmkick_models.workflow.paired_stats import Comparison

SYMBOLS = {
    paired_stats.MATCHING: "✓",
    paired_stats.NOT_MATCHING: "✗",
    paired_stats.INCONCLUSIVE: "~",
    paired_stats.NO_VERDICT: "",
}
PROBLEM_MARK = "⚠"


def fmt(value: float | None) -> str:
    """Four significant digits; ``–`` for a missing value (nan and inf are shown as such: never mistaken
    for a missing score)."""
    if value is None:
        return "–"
    return f"{value:.4g}"


def pct(value: float) -> str:
    """A relative change as a signed percentage, e.g. ``-3.2%``."""
    return f"{value * 100:+.1f}%"


def relative_cell(result: Comparison) -> str:
    """The relative change from dense with its interval, e.g. ``-50.0% [-55.1%, -44.9%]``."""
    if result.relative is None:
        return "– (dense is 0)"
    if result.relative_ci is None:
        return f"{pct(result.relative)} [no interval]"
    return f"{pct(result.relative)} [{pct(result.relative_ci[0])}, {pct(result.relative_ci[1])}]"
