"""The task classes of the TriviaQA YAMLs: Hub rows or the data dir's, and the open book's evidence budget.

Both YAMLs read ``mandarjoshi/trivia_qa`` through ``dataset_path`` / ``dataset_name`` (``rc.nocontext``
closed book, ``rc`` open book) and build documents with ``process_docs``; the class adds the data-dir
override (the release files read into the Hub's layout by :mod:`llmkick_tasks.triviaqa.release`) and,
from the Hub, loads only the validation split (``rc``'s train split with its evidence is gigabytes).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from llmkick_tasks.hub_task import HubTask
from llmkick_tasks.triviaqa.evidence import EvidenceBudget, open_book_docs
from llmkick_tasks.triviaqa.release import BENCHMARK, release_dataset, release_files

if TYPE_CHECKING:
    from pathlib import Path

    import datasets


log = logging.getLogger(__name__)


class TriviaQATask(HubTask):
    """A TriviaQA rc task on the validation split: the Hub's rows, or the data dir's release files."""

    BENCHMARK = BENCHMARK
    SPLITS = ("validation",)

    @staticmethod
    def with_evidence(dataset_name: str | None) -> bool:
        """Whether the Hub config ``dataset_name`` carries evidence (the Hub's names: rc, rc.nocontext)."""
        return not str(dataset_name).endswith(".nocontext")

    @classmethod
    def local_files(cls, folder: Path, dataset_name: str | None) -> list[Path]:
        """The dev question files, and the evidence folders of an open-book config."""
        questions, *evidence = release_files(folder, "dev", cls.with_evidence(dataset_name))
        return [*questions, *(path for path in evidence if path is not None)]

    def load_local(self, folder: Path) -> dict[str, datasets.Dataset]:
        """The validation split (``qa/*-dev.json``) of ``<data dir>/triviaqa`` in the Hub's layout."""
        return {"validation": release_dataset(folder, "dev", self.with_evidence(self.DATASET_NAME))}


class TriviaQAOpenTask(TriviaQATask):
    """``llmkick_triviaqa_open``: the evidence is cut to the token budget of the model named in the task
    metadata (``--model_args`` reach it on a real run); without a tokenizer the cut equals the YAML's
    ``process_docs``.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._docs: datasets.Dataset | None = None
        super().__init__(config=config)

    def test_docs(self) -> datasets.Dataset:
        """The open-book documents, evidence cut to ``EvidenceBudget.from_metadata`` (computed once)."""
        if self._docs is None:
            budget = EvidenceBudget.from_metadata(self.config.metadata or {})
            log.info("%s: %s", self.config.task, budget.describe())
            self._docs = open_book_docs(self.dataset[self.config.test_split], budget)
        return self._docs
