"""Tasks that read a Hugging Face Hub dataset through their YAML, with the llmkick data dir as the override.

Such a task's YAML is what lm-eval's task guide asks for: ``dataset_path`` / ``dataset_name`` (the Hub's
dataset and config), the Hub's split names, documents shaped by ``process_docs`` / ``doc_to_*``.  Its
``class:`` is a subclass of :class:`HubTask`, which changes one thing: when a data dir is configured
(``--metadata '{"data_dir": ...}'`` or ``$LLMKICK_DATA_DIR``), the rows come from the benchmark's
release files there, read into the Hub's column layout and split names (:meth:`HubTask.load_local`), so
the YAML turns them into the same documents as it turns the Hub's rows.  Without a data dir lm-eval loads
the Hub dataset itself (``dataset_kwargs`` such as ``revision`` included), or, when the class names
``SPLITS``, only those splits' files are loaded (a config's other splits can be gigabytes the task never
reads); when that fails (offline, nothing cached) the error names the dataset and the data-dir override.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from lm_eval.api.task import ConfigurableTask

from llmkick_tasks.data_dir import local_benchmark_dir, offline_error, read_hub_split

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    import datasets


class HubTask(ConfigurableTask):
    """A YAML task on a Hub dataset whose rows a data dir can provide instead (see the module docstring)."""

    BENCHMARK: ClassVar[str]  # the benchmark's folder in the data dir (llmkick_tasks.data_dir)
    # The Hub splits to load, or None for lm-eval's own download (every split of the config).
    SPLITS: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        config.pop("class", None)  # lm-eval leaves the YAML's `class:` in the config; TaskConfig rejects it
        super().__init__(config=config)

    def load_local(self, folder: Path) -> datasets.DatasetDict | dict[str, datasets.Dataset]:
        """The splits of ``dataset_name`` read from the release files in ``folder``, in the Hub's layout."""
        raise NotImplementedError

    @classmethod
    def local_files(cls, folder: Path, dataset_name: str | None) -> list[Path]:
        """The release files in ``folder`` that :meth:`load_local` reads for ``dataset_name``, found (not
        parsed) by the same code; a :class:`~llmkick_tasks.data_dir.DataLayoutError` when one is missing.
        """
        raise NotImplementedError

    @classmethod
    def llmkick_check_data_files(cls, config: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """The pre-flight's data check (``data_dir.CHECK_DATA_FILES``): with a data dir, :meth:`local_files`
        of the task's ``dataset_name``; nothing for the Hub (its download errors are its own).
        """
        folder = local_benchmark_dir(metadata, cls.BENCHMARK)
        if folder is not None:
            cls.local_files(folder, config.get("dataset_name"))

    def download(self, dataset_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Rows from the data dir when one is configured, else from the Hub (as lm-eval loads them)."""
        folder = local_benchmark_dir(self.config.metadata, self.BENCHMARK)
        if folder is not None:
            self.dataset = self.load_local(folder)
            return
        try:
            if self.SPLITS is None:
                super().download(dataset_kwargs, **kwargs)
            else:
                revision = (dataset_kwargs or {}).get("revision")
                self.dataset = {
                    split: read_hub_split(self.DATASET_PATH, self.DATASET_NAME, split, revision)
                    for split in self.SPLITS
                }
        except Exception as error:  # network, offline mode, missing cache: the same advice
            raise offline_error(
                f"the Hub dataset {self.DATASET_PATH} ({self.DATASET_NAME})", error
            ) from error
