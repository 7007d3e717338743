"""Data plumbing shared by the judged tasks: release layouts, JSONL files, reference answers, bins.

The data source is :mod:`llmkick_tasks.data_dir`'s, as for every llmkick task: ``--metadata '{"data_dir":
...}'``, else ``$LLMKICK_DATA_DIR``, else the canonical public sources.  The judged benchmarks register
their folders and release layouts there (:func:`~llmkick_tasks.data_dir.register_benchmark`), so look-up and
layout errors are the same mechanism.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets

from llmkick_tasks.data_dir import (
    ENV_VAR,
    LAYOUTS,
    METADATA_KEY,
    DataLayoutError,
    download_file,
    layout_error,
    local_benchmark_dir,
    register_benchmark,
)
from llmkick_tasks.judge.config import read_knob
from llmkick_tasks.judge.knobs import PROTOCOL, SUMMARIZATION_BINS

__all__ = ["LAYOUTS", "layout_error", "local_dir"]  # the data_dir mechanism, re-exported for the loaders

# The judged benchmarks' folders and release layouts, registered with the one data-dir mechanism every
# llmkick task uses (llmkick_tasks.data_dir): its resolution, folder look-up and layout errors.
register_benchmark(
    "cnn_dailymail",
    "  cnn_dailymail/{small,mid,large}/<id>.story   CNN/DailyMail story files (article paragraphs, then\n"
    "                                              '@highlight' lines), one folder per length bin",
    ("cnn_dailymail", "cnndm"),
)
register_benchmark(
    "vicuna80",
    "  vicuna80/question.jsonl                       {question_id, category, text or FastChat's turns}\n"
    "  vicuna80/reference_answer_gpt35.jsonl         optional: {question_id, text} reference answers\n"
    "  (or vicuna80/reference_answer/gpt-3.5-turbo.jsonl in FastChat's answer format)",
    ("vicuna80", "vicuna_bench"),
)
register_benchmark(
    "mt_bench",
    "  mt_bench/question.jsonl                       {question_id, category, turns[2], reference?}\n"
    "  mt_bench/reference_answer_gpt4.jsonl          optional, FastChat answers {question_id, choices}\n"
    "  (or mt_bench/reference_answer/gpt-4.jsonl)\n"
    "  mt_bench/judge_prompts.jsonl                  FastChat's judge prompts (judge_protocol=fastchat)",
)
register_benchmark(
    "llmkick_judge",
    "  llmkick_judge/in-context_summarization/json_utils/{prompt,reviewer}.jsonl  summarization judge\n"
    "  llmkick_judge/mt_conversation/table/{prompt,reviewer}.jsonl               Vicuna-80 judge\n"
    "  (LLM-KICK's release files, judge_protocol=paper)",
)


def local_dir(metadata: Mapping[str, Any] | None, benchmark: str) -> Path | None:
    """``benchmark``'s folder in the configured data dir; ``None`` when the public sources are used."""
    return local_benchmark_dir(metadata, benchmark)


# How the summarization stories are binned (the knob summarization_bins): the data's own bin folders
# (duplicates kept, as the paper's means were computed) or by article length (each distinct story once, in
# the bin its length belongs to).
BINS_KEY = SUMMARIZATION_BINS.name

# Fields accepted as the id / the text of a reference answer in a user-supplied reference file.
ID_FIELDS = ("id", "story_id", "question_id")
TEXT_FIELDS = ("text", "reference", "summary", "answer")


def summarization_bins(metadata: Mapping[str, Any] | None) -> str:
    """The binning of the summarization stories for a run: ``release`` or ``length``.

    Default: ``release`` under ``judge_protocol=paper`` when the data has its release bin folders (a local
    data dir), else ``length``.  ``release`` asked for without a data dir is an error: the public source
    has no release bins.
    """
    meta = dict(metadata or {})
    folder = local_dir(meta, "cnn_dailymail")
    value = read_knob(SUMMARIZATION_BINS, meta)
    if value is None:
        return "release" if read_knob(PROTOCOL, meta) == "paper" and folder is not None else "length"
    if value == "release" and folder is None:
        raise DataLayoutError(
            f"{BINS_KEY}=release needs the stories in their release bin folders, "
            f"cnn_dailymail/{{small,mid,large}}/ in a data dir (--metadata '{{\"{METADATA_KEY}\": ...}}' or "
            f"${ENV_VAR}); the public CNN/DailyMail source has no bins of its own: use {BINS_KEY}=length"
        )
    return value


def read_jsonl(path: Path, benchmark: str) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a line that is not a JSON object is a layout error naming it."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise layout_error(benchmark, path, f"cannot read ({error.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise layout_error(benchmark, path, f"line {number} is not JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise layout_error(benchmark, path, f"line {number} is not a JSON object")
        records.append(record)
    return records


def first_existing(folder: Path, names: Iterable[str]) -> Path | None:
    """The first of ``folder/name`` that is a file."""
    return next((folder / name for name in names if (folder / name).is_file()), None)


def local_question_files(
    metadata: Mapping[str, Any] | None, benchmark: str, reference_names: Iterable[str]
) -> tuple[Path, Path | None] | None:
    """``question.jsonl`` of ``benchmark``'s data-dir folder (it must exist) and its first reference file
    among ``reference_names`` (optional); ``None`` when the public sources are used.  Nothing is read.
    """
    folder = local_dir(metadata, benchmark)
    if folder is None:
        return None
    questions = folder / "question.jsonl"
    if not questions.is_file():
        raise layout_error(benchmark, questions, "missing question file")
    return questions, first_existing(folder, reference_names)


def fetch_jsonl(url: str, benchmark: str) -> list[dict[str, Any]]:
    """A JSON-lines file from a public URL (downloaded once into the datasets cache)."""
    return read_jsonl(download_file(url), benchmark)


def answer_turns(record: Mapping[str, Any]) -> list[str] | None:
    """The answer turns of a record in FastChat's answer format, or of a plain ``{text}`` record."""
    choices = record.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        turns = choices[0].get("turns")
        if isinstance(turns, list) and all(isinstance(t, str) for t in turns):
            return list(turns)
    for field in TEXT_FIELDS:
        if isinstance(record.get(field), str):
            return [record[field]]
    return None


def read_reference_file(path: Path | str, benchmark: str) -> dict[str, list[str]]:
    """Reference answers of a user file (JSONL), keyed by ``str(id)``: ``{id, text}`` or FastChat answers."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataLayoutError(f"reference_file does not exist: {path}")
    references: dict[str, list[str]] = {}
    for number, record in enumerate(read_jsonl(path, benchmark), 1):
        key = next((record[f] for f in ID_FIELDS if f in record), None)
        turns = answer_turns(record)
        if key is None or turns is None:
            raise DataLayoutError(
                f"{path} line {number}: a reference record needs an id ({'/'.join(ID_FIELDS)}) and a text "
                f"({'/'.join(TEXT_FIELDS)}, or FastChat's choices[0].turns)"
            )
        references[str(key)] = turns
    return references


def as_dataset(rows: list[dict[str, Any]], features: datasets.Features) -> datasets.DatasetDict:
    """The single ``test`` split lm-eval evaluates."""
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows, features=features)})
