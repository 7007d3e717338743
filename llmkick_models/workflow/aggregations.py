"""lm-eval's aggregations of per-document values, redone exactly, and which one a results file recorded.

The sample check (:mod:`.sample_checks`) recomputes every score from its samples with these: the same sums
in the same order as lm-eval, so an untouched score comes back to the last bit or within a few ulps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

REL_TOL = 1e-9
ABS_TOL = 1e-12
_FUNCTION_SOURCE = re.compile(r"\s*def\s+(\w+)\s*\(")


def close(reported: float, recomputed: float) -> bool:
    """Equal up to float round-trip (see the module doc); NaN matches NaN and an infinity itself."""
    if math.isnan(reported) or math.isnan(recomputed):
        return math.isnan(reported) and math.isnan(recomputed)
    return math.isclose(reported, recomputed, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def is_number(value: Any) -> bool:
    """A JSON number that is not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pairs(values: Sequence[Any]) -> tuple[list[float], list[float]]:
    if not all(isinstance(v, (list, tuple)) and len(v) == 2 and all(map(is_number, v)) for v in values):
        raise ValueError("per-document values are not (log-likelihood, weight) pairs")
    return [v[0] for v in values], [v[1] for v in values]


def _numbers(values: Sequence[Any]) -> list[float]:
    if not all(isinstance(v, (int, float)) for v in values):  # lm-eval sums booleans as 0/1 too
        raise ValueError("per-document values are not numbers")
    return list(values)


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _mean(values: Sequence[Any]) -> float:
    numbers = _numbers(values)
    return sum(numbers) / len(numbers)  # as lm-eval's `mean`: same order, same rounding


def _weighted_mean(values: Sequence[Any]) -> float:
    numerators, denominators = _pairs(values)
    return sum(numerators) / sum(denominators)


AGGREGATIONS: dict[str, Callable[[Sequence[Any]], float]] = {
    "mean": _mean,
    "perplexity": lambda values: _exp(-_mean(values)),
    "weighted_perplexity": lambda values: _exp(-_weighted_mean(values)),
    "bits_per_byte": lambda values: -_weighted_mean(values) / math.log(2),
    "count": lambda values: float(sum(_numbers(values))),  # llmkick's judge counters: totals
}


def _llmkick_count_source() -> str:
    import inspect

    from llmkick_tasks.judge.protocols import count

    return inspect.getsource(count)


def aggregation_of(results: dict[str, Any], task: str, metric: str) -> str:
    """The name of the aggregation lm-eval applied to ``metric`` of ``task`` (possibly one we cannot redo).

    From the task's recorded config; a function there is recorded as its source, recognised only when it
    is llmkick's own counter.  Without one, lm-eval's default aggregation of the metric.
    """
    for entry in results.get("configs", {}).get(task, {}).get("metric_list") or []:
        if isinstance(entry, dict) and entry.get("metric") == metric and entry.get("aggregation") is not None:
            recorded = str(entry["aggregation"])
            function = _FUNCTION_SOURCE.match(recorded)
            if function is None:
                return recorded
            if function[1] == "count" and recorded == _llmkick_count_source():
                return "count"
            return f"function {function[1]}()"
    import lm_eval.api.metrics  # noqa: F401  (registers lm-eval's metrics and their default aggregations)
    from lm_eval.api.registry import AGGREGATION_REGISTRY, METRIC_AGGREGATION_REGISTRY

    try:
        default = METRIC_AGGREGATION_REGISTRY.get(metric)
    except KeyError:
        return "none recorded"
    names = {fn: name for name, fn in AGGREGATION_REGISTRY.items()}
    return names.get(default, "none recorded")
