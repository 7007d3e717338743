"""lm-eval entry points of the WikiText-2 perplexity tasks (the work: ``data``, ``task``, ``windows``)."""

from __future__ import annotations

from typing import Any

from llmkick_tasks.wikitext2.data import detokenize, process_articles, split_articles
from llmkick_tasks.wikitext2.task import WikiText2ArticlesTask, WindowedPerplexityTask
from llmkick_tasks.wikitext2.windows import window_metrics

__all__ = [
    "WikiText2ArticlesTask",
    "WindowedPerplexityTask",
    "detokenize",
    "process_articles",
    "process_window",
    "split_articles",
]


def process_window(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, Any]:
    """``process_results`` of ``llmkick_wikitext2_ppl``: per-window (log-likelihood, weight) pairs."""
    return window_metrics(doc, results)
