"""Where the LLM-KICK task data comes from: a local data directory, or the canonical public sources.

The tasks on a Hugging Face Hub dataset (MMLU, TriviaQA, WikiText-2) name it in their YAML
(``dataset_path`` / ``dataset_name``, a pinned ``revision``) and read it through
:class:`llmkick_tasks.hub_task.HubTask`; the others (FreebaseQA, the judged tasks) load their documents
through a ``custom_dataset`` function.  lm-eval hands both the task's metadata (the YAML ``metadata`` block,
then ``--model_args``, then ``--metadata``; later wins).  The data source is chosen here, once for all
benchmarks:

1. ``--metadata '{"data_dir": "/path"}'`` (or ``TaskManager(metadata={"data_dir": ...})``);
2. otherwise the environment variable ``LLMKICK_DATA_DIR``;
3. otherwise the canonical public sources: ``cais/mmlu``, ``mandarjoshi/trivia_qa`` and
   ``Salesforce/wikitext`` on the Hugging Face Hub, the official FreebaseQA release on GitHub (no Hub
   copy loads without a script).  All go through the ``datasets`` cache, so they are downloaded once and
   honour ``HF_DATASETS_OFFLINE``.

A local data directory holds each benchmark in its ORIGINAL release layout (``LAYOUTS``), one folder per
benchmark.  A directory that is named but missing, a missing file, or a file that does not parse is an
error that names the path and the layout expected: a wrong data dir never silently falls back to a download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import datasets

from llmkick_tasks.errors import UserError
from llmkick_tasks.run_metadata import DATA_DIR

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


log = logging.getLogger(__name__)

#: The attribute by which a task's ``custom_dataset`` function or ``class:`` names its data-file check, a
#: callable ``(task_config, metadata) -> None`` that resolves the local files its splits read (raising the
#: loader's own :class:`DataLayoutError`) without parsing them; ``llmkick_tasks.preflight`` calls it
#: before the model is loaded.
CHECK_DATA_FILES = "llmkick_check_data_files"
_Loader = TypeVar("_Loader", bound="Callable[..., Any]")

METADATA_KEY = DATA_DIR.name
ENV_VAR = DATA_DIR.env[0]

# Folder names accepted for each benchmark inside the data dir, in the order they are tried.  The
# alternatives are the names the original archives extract to (triviaqa-rc.tar.gz) or that the shared
# sample uses.
FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "freebaseqa": ("freebaseqa", "FreebaseQA"),
    "mmlu": ("mmlu",),
    "triviaqa": ("triviaqa", "triviaqa-rc", "triviaqa_sample"),
}

LAYOUTS: dict[str, str] = {
    "freebaseqa": (
        "  freebaseqa/FreebaseQA-{train,dev,eval}.json  official release (Questions[].RawQuestion,\n"
        "                                               Parses[].Answers[].AnswersName), or\n"
        "  freebaseqa/FreebaseQA-{split}.tab            8 tab-separated fields, answer and question last,\n"
        "                                               one row per answer alias, or\n"
        "  freebaseqa/FreebaseQA-{split}.txt            one 'question | answer' pair per line\n"
        "  (for one split, .json is read if present, else .tab, else .txt)"
    ),
    "mmlu": (
        "  mmlu/test/<subject>_test.csv  and  mmlu/dev/<subject>_dev.csv  (also mmlu/val/ in the release):\n"
        "  the original Hendrycks CSVs, no header, columns question,A,B,C,D,answer (answer is A/B/C/D)"
    ),
    "triviaqa": (
        "  triviaqa/qa/{web,wikipedia}-{train,dev}.json   TriviaQA rc question files (Data[].Question,\n"
        "                                                 Answer.Aliases, EntityPages, SearchResults)\n"
        "  triviaqa/evidence/wikipedia/<Filename>         entity pages (open-book task only)\n"
        "  triviaqa/evidence/web/<Filename>               search results (open-book task only)\n"
        "  (the folder may also be named triviaqa-rc or triviaqa_sample)"
    ),
}


def register_benchmark(benchmark: str, layout: str, folder_names: tuple[str, ...] | None = None) -> None:
    """Declare another benchmark's folder names and layout text (shown in errors) for the data dir.

    Unregistered benchmarks still work: their folder is ``<data dir>/<benchmark>``.
    """
    FOLDER_NAMES[benchmark] = folder_names or (benchmark,)
    LAYOUTS[benchmark] = layout


class DataLayoutError(UserError):
    """A local data directory, file or record does not match the expected release layout."""


def layout_error(benchmark: str, path: Path | str, problem: str) -> DataLayoutError:
    """An error that names the offending path and shows the layout expected for ``benchmark``."""
    return DataLayoutError(
        f"{problem}: {path}\nExpected the {benchmark} data in its original release layout under the data dir"
        f" (--metadata '{{\"{METADATA_KEY}\": ...}}' or ${ENV_VAR}):\n"
        f"{LAYOUTS.get(benchmark, f'  {benchmark}/  (see the task documentation)')}"
    )


def resolve_data_dir(metadata: Mapping[str, Any] | None = None) -> Path | None:
    """The local data directory to use, or ``None`` to use the public sources.

    ``metadata["data_dir"]`` wins over the environment variable ``LLMKICK_DATA_DIR``.  A directory that is
    named but does not exist is an error, never a silent fallback to downloading.
    """
    given = (metadata or {}).get(METADATA_KEY)
    source = f"metadata {METADATA_KEY!r}"
    if given in (None, ""):
        given, source = os.environ.get(ENV_VAR) or None, f"${ENV_VAR}"
    if given is None:
        return None
    path = Path(str(given)).expanduser()
    if not path.is_dir():
        raise DataLayoutError(
            f"llmkick data dir from {source} is not a directory: {path.resolve()}\n"
            f"Point it at a folder holding {', '.join(name + '/' for name, *_ in FOLDER_NAMES.values())} "
            f"in their original release layouts, or unset it to use the public sources."
        )
    return path


def benchmark_dir(data_dir: Path, benchmark: str) -> Path:
    """The folder of ``benchmark`` inside ``data_dir`` (one of ``FOLDER_NAMES[benchmark]``)."""
    candidates = [data_dir / name for name in FOLDER_NAMES.get(benchmark, (benchmark,))]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise layout_error(benchmark, data_dir, f"no {benchmark} folder in the data dir (tried {tried})")


def local_benchmark_dir(metadata: Mapping[str, Any] | None, benchmark: str) -> Path | None:
    """``benchmark``'s folder in the configured data dir, or ``None`` when the public sources are used."""
    data_dir = resolve_data_dir(metadata)
    return None if data_dir is None else benchmark_dir(data_dir, benchmark)


def checks_data_files(resolver: Callable[..., object]) -> Callable[[_Loader], _Loader]:
    """Mark a ``custom_dataset`` loader with ``resolver``, the function the loader itself calls to find its
    local files: the pre-flight calls it with the loader's own arguments (metadata, then ``dataset_kwargs``,
    as lm-eval calls ``custom_dataset``).
    """

    def check(config: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        resolver(**dict(metadata), **dict(config.get("dataset_kwargs") or {}))

    def mark(loader: _Loader) -> _Loader:
        setattr(loader, CHECK_DATA_FILES, check)
        return loader

    return mark


def to_dataset(docs: list[dict[str, Any]], features: datasets.Features) -> datasets.Dataset:
    """A ``datasets.Dataset`` of ``docs`` with exactly ``features`` (also when ``docs`` is empty)."""
    return datasets.Dataset.from_dict(
        {key: [doc[key] for doc in docs] for key in features}, features=features
    )


def offline_error(what: str, error: Exception) -> RuntimeError:
    """The error for public data that cannot be fetched: names ``what`` and the data-dir override."""
    return RuntimeError(
        f"could not fetch {what} ({type(error).__name__}: {error}).\n"
        f"Without network access (or with HF_DATASETS_OFFLINE=1 and nothing cached), give the tasks a local "
        f'data dir: --metadata \'{{"{METADATA_KEY}": "/path"}}\' or ${ENV_VAR}.'
    )


def download_file(url: str, what: str | None = None) -> Path:
    """Download ``url`` into the ``datasets`` cache (once) and return the local path; ``what`` names it in
    the error (default: the URL).
    """
    from datasets.utils.file_utils import cached_path

    try:
        return Path(cached_path(url))
    except Exception as error:  # network, offline mode, HTTP errors: all need the same advice
        raise offline_error(what or url, error) from error


def read_hub_split(path: str, name: str | None, split: str, revision: str | None = None) -> datasets.Dataset:
    """One split of a Hub dataset at ``revision``, downloading only that split's files when it is parquet.

    ``load_dataset(path, name, split=...)`` downloads and prepares EVERY split of the config; for
    TriviaQA rc that is the multi-gigabyte train split with all its evidence.  The builder already knows
    which data files belong to which split, so for parquet datasets only ``split``'s files are loaded.
    Errors are the ``datasets`` library's own (see :func:`load_hub_split` for the user-facing one).
    """
    builder = datasets.load_dataset_builder(path, name, revision=revision)
    files = list((builder.config.data_files or {}).get(split) or [])
    if files and all(str(file).endswith(".parquet") for file in files):
        return datasets.load_dataset(
            "parquet", data_files={split: files}, split=split, features=builder.info.features
        )
    return datasets.load_dataset(path, name, split=split, revision=revision)


def load_hub_split(path: str, name: str | None, split: str, revision: str | None = None) -> datasets.Dataset:
    """:func:`read_hub_split`, with an unreachable dataset reported by :func:`offline_error`."""
    try:
        return read_hub_split(path, name, split, revision)
    except Exception as error:
        raise offline_error(f"{path} ({name}, {split} split)", error) from error


__all__ = [
    "CHECK_DATA_FILES",
    "ENV_VAR",
    "FOLDER_NAMES",
    "LAYOUTS",
    "DataLayoutError",
    "benchmark_dir",
    "checks_data_files",
    "download_file",
    "layout_error",
    "load_hub_split",
    "local_benchmark_dir",
    "offline_error",
    "read_hub_split",
    "register_benchmark",
    "resolve_data_dir",
    "to_dataset",
]
