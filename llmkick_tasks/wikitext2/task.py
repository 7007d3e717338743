"""The task classes of the WikiText-2 perplexity tasks: Hub rows or the data dir's, articles, token windows.

Both YAMLs read ``Salesforce/wikitext`` (``wikitext-2-raw-v1``, test split) through ``dataset_path``; a data
dir replaces it with its release file read into the same rows (:class:`WikiText2Task`).

The windows of ``llmkick_wikitext2_ppl`` depend on the evaluated model's tokenizer, which a task built
without a model (lm-eval's own task tests, ``TaskManager().load(...)`` from Python) does not have.  They are
cut from the rows the first time the documents are read with a tokenizer named in the model args; on a real
run lm-eval merges ``--model_args`` into the task metadata, so that is during construction, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks.data_dir import to_dataset
from llmkick_tasks.hub_task import HubTask
from llmkick_tasks.run_metadata import WIKITEXT2_ARTICLES
from llmkick_tasks.wikitext2.data import BENCHMARK, local_file, local_rows
from llmkick_tasks.wikitext2.windows import FEATURES, NoTokenizerError, load_windows

if TYPE_CHECKING:
    from pathlib import Path


class WikiText2Task(HubTask):
    """A task on the WikiText-2 test rows: the Hub's, or the data dir's release file as the same rows."""

    BENCHMARK = BENCHMARK

    @classmethod
    def local_files(cls, folder: Path, dataset_name: str | None) -> list[Path]:
        """The release test file (:func:`~llmkick_tasks.wikitext2.data.local_file`)."""
        return [local_file(folder)]

    def load_local(self, folder: Path) -> dict[str, datasets.Dataset]:
        """The test split of ``<data dir>/wikitext2`` in the Hub's layout (one ``text`` row per line)."""
        return {"test": datasets.Dataset.from_dict({"text": local_rows(folder)})}


class WikiText2ArticlesTask(WikiText2Task):
    """``llmkick_wikitext2_ppl_articles``: articles (the YAML's ``process_docs``), ``wikitext2_articles``
    caps their number.
    """

    def test_docs(self) -> datasets.Dataset:
        """The first ``wikitext2_articles`` articles (all by default)."""
        # lm-eval's --limit caps every task of a run alike; this caps only the perplexity articles, so a sweep
        # can keep hundreds of questions per task and still spend little time on perplexity.
        documents = super().test_docs()
        articles = WIKITEXT2_ARTICLES.read(self.config.metadata or {})
        return documents if articles is None else documents.select(range(min(articles, len(documents))))


class WindowedPerplexityTask(WikiText2Task):
    """``llmkick_wikitext2_ppl``: the documents are the ``seqlen``-token windows of the joined test rows."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._windows: datasets.Dataset | None = None
        self._constructing = True
        super().__init__(config=config)
        self._constructing = False

    def test_docs(self) -> datasets.Dataset:
        """The window documents; raises :class:`NoTokenizerError` when no tokenizer is named."""
        if self._windows is None:
            rows = self.dataset[self.config.test_split]
            try:
                self._windows = to_dataset(load_windows(rows["text"], self.config.metadata or {}), FEATURES)
            except NoTokenizerError:
                if self._constructing:
                    # lm-eval renders one document while constructing to check the prompt format; a row
                    # of the untokenized text has the field the target reads (`text`).
                    return rows
                raise
        return self._windows
