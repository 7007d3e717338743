"""The task class of ``llmkick_wikitext2_ppl``: token windows cut when the documents are first needed.

The windows depend on the evaluated model's tokenizer, which a task built without a model (lm-eval's own
task tests, ``TaskManager().load(...)`` from Python) does not have.  The dataset is therefore the test
split's rows (the Hub's ``wikitext`` layout); the windows are cut from them the first time the documents
are read with a tokenizer named in the model args.  On a real run lm-eval merges ``--model_args`` into the
task metadata, so that is during construction, as before.
"""

from __future__ import annotations

from typing import Any

import datasets
from lm_eval.api.task import ConfigurableTask

from llmkick_tasks.data_dir import to_dataset
from llmkick_tasks.wikitext2.windows import FEATURES, NoTokenizerError, load_windows


class WindowedPerplexityTask(ConfigurableTask):
    """A loglikelihood task whose documents are the ``seqlen``-token windows of the joined test split."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        config.pop("class", None)  # lm-eval leaves the YAML's `class:` in the config; TaskConfig rejects it
        self._windows: datasets.Dataset | None = None
        self._constructing = True
        super().__init__(config=config)
        self._constructing = False

    def test_docs(self) -> datasets.Dataset:
        """The window documents; raises :class:`NoTokenizerError` when no tokenizer is named."""
        if self._windows is None:
            rows = self.dataset[self.config.test_split]["text"]
            try:
                self._windows = to_dataset(load_windows(rows, self.config.metadata or {}), FEATURES)
            except NoTokenizerError:
                if self._constructing:
                    # lm-eval renders one document while constructing to check the prompt format; a row
                    # of the untokenized text has the field the target reads (`text`).
                    return self.dataset[self.config.test_split]
                raise
        return self._windows
