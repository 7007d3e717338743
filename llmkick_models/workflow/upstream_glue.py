"""The one function the upstream (lm-eval pull-request) task folder needs that the plugin has no use for.

The plugin's WikiText-2 articles task builds its documents with a ``process_docs`` that reports a bad data
dir with llmkick's layout error; the folder's is written on the same per-row function without it, bundled
into the folder's ``utils.py`` (:mod:`llmkick_models.workflow.upstream_bundle`), and
``tests/test_upstream_tasks.py`` checks that it gives the plugin's documents from the same rows.  (The
TriviaQA ``process_docs`` are the plugin's own, bundled as they are.)
"""

from __future__ import annotations

import datasets

from llmkick_tasks.wikitext2.data import split_articles


def process_articles(rows: datasets.Dataset) -> datasets.Dataset:
    """``process_docs`` of ``llmkick_wikitext2_ppl_articles``: the test rows grouped into articles."""
    documents = split_articles(rows["text"])
    if not documents:
        raise ValueError("the WikiText-2 test split has no article headings (' = Title = ')")
    return datasets.Dataset.from_list(documents)
