"""lm-eval entry points of the WikiText-2 perplexity tasks (the loading lives in ``data`` and ``windows``)."""

from __future__ import annotations

from typing import Any

import datasets

from llmkick_tasks.wikitext2.data import detokenize, load_articles, split_articles, test_rows
from llmkick_tasks.wikitext2.task import WindowedPerplexityTask
from llmkick_tasks.wikitext2.windows import window_metrics

__all__ = [
    "WindowedPerplexityTask",
    "detokenize",
    "load_wikitext2",
    "load_wikitext2_rows",
    "process_window",
    "split_articles",
]


def load_wikitext2(**metadata: Any) -> dict[str, datasets.Dataset]:
    """``custom_dataset`` of ``llmkick_wikitext2_ppl_articles``: the test articles, detokenized."""
    return {"test": load_articles(metadata)}


def load_wikitext2_rows(**metadata: Any) -> dict[str, datasets.Dataset]:
    """``custom_dataset`` of ``llmkick_wikitext2_ppl``: the test split's rows (``text``), as on the Hub;
    :class:`WindowedPerplexityTask` cuts them into token windows."""
    rows, _source = test_rows(metadata)
    return {"test": datasets.Dataset.from_dict({"text": rows})}


def process_window(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, Any]:
    """``process_results`` of ``llmkick_wikitext2_ppl``: per-window (log-likelihood, weight) pairs."""
    return window_metrics(doc, results)
