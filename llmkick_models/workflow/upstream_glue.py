"""The few functions the upstream (lm-eval pull-request) task folder needs that the plugin has no use for.

The plugin reads TriviaQA with ``custom_dataset`` and the WikiText-2 articles through its own task class;
lm-eval's own tasks use ``dataset_path`` + ``process_docs`` instead.  These functions are those
``process_docs``, written on the plugin's own per-row functions, so they are bundled into the folder's
``utils.py`` files together with them (:mod:`llmkick_models.workflow.upstream_bundle`), and
``tests/test_upstream_tasks.py`` checks that they give the plugin's documents from the same rows.
"""

from __future__ import annotations

import datasets

from llmkick_tasks.run_metadata import EVIDENCE_TOKENS
from llmkick_tasks.triviaqa.loader import CHARS_PER_TOKEN, hub_raw_doc
from llmkick_tasks.wikitext2.data import split_articles

# The plugin's evidence budget when no tokenizer is known: the default token budget at 4 characters per
# token, i.e. LLM-KICK's own 3,072 characters.  A task without a model cannot count the model's tokens.
EVIDENCE_CHARACTERS = EVIDENCE_TOKENS.default * CHARS_PER_TOKEN


def process_closed_book(rows: datasets.Dataset) -> datasets.Dataset:
    """``process_docs`` of ``llmkick_triviaqa_closed``: ``rc.nocontext`` rows to question documents."""
    return datasets.Dataset.from_list([hub_raw_doc(row, False).to_doc() for row in rows])


def process_open_book(rows: datasets.Dataset) -> datasets.Dataset:
    """``process_docs`` of ``llmkick_triviaqa_open``: ``rc`` rows to documents with evidence cut to
    :data:`EVIDENCE_CHARACTERS` characters.
    """
    docs = []
    for row in rows:
        raw = hub_raw_doc(row, True)
        docs.append(raw.to_doc(raw.evidence[:EVIDENCE_CHARACTERS].rstrip()))
    return datasets.Dataset.from_list(docs)


def process_articles(rows: datasets.Dataset) -> datasets.Dataset:
    """``process_docs`` of ``llmkick_wikitext2_ppl_articles``: the test rows grouped into articles."""
    documents = split_articles(rows["text"])
    if not documents:
        raise ValueError("the WikiText-2 test split has no article headings (' = Title = ')")
    return datasets.Dataset.from_list(documents)
