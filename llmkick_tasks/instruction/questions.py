"""Vicuna-80 instruction following for lm-eval (LLM-KICK), judged pairwise against references.

Documents::

    {"question_id": int, "category": str, "question": str, "reference": str|None,
     "reference_source": str|None}

Sources: a local data dir (``vicuna80/question.jsonl`` and, optionally, LLM-KICK's gpt-3.5-turbo answers
``vicuna80/reference_answer_gpt35.jsonl``), otherwise FastChat's ``vicuna_bench/question.jsonl``.  A
``reference_file`` in the metadata overrides the reference answers.  Questions without a reference answer
get one from the reference model (default gpt-3.5-turbo, as in the paper), generated once and cached.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets

from llmkick_tasks.data_dir import checks_data_files
from llmkick_tasks.judge.data import (
    answer_turns,
    as_dataset,
    fetch_jsonl,
    layout_error,
    local_question_files,
    read_jsonl,
    read_reference_file,
)

log = logging.getLogger(__name__)

BENCHMARK = "vicuna80"
QUESTIONS_URL = "https://raw.githubusercontent.com/lm-sys/FastChat/main/fastchat/llm_judge/data/vicuna_bench/question.jsonl"
REFERENCE_NAMES = ("reference_answer_gpt35.jsonl", "reference_answer/gpt-3.5-turbo.jsonl")

FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("int64"),
        "category": datasets.Value("string"),
        "question": datasets.Value("string"),
        "reference": datasets.Value("string"),
        "reference_source": datasets.Value("string"),
    }
)

__all__ = ["load_vicuna80", "parse_questions"]


def parse_questions(records: list[dict[str, Any]], where: Path | str) -> list[dict[str, Any]]:
    """Documents from Vicuna question records (``text``, or FastChat's one-element ``turns``)."""
    docs = []
    for number, record in enumerate(records, 1):
        text = record.get("text")
        if text is None and isinstance(record.get("turns"), list) and record["turns"]:
            text = record["turns"][0]
        if not isinstance(text, str) or "question_id" not in record:
            raise layout_error(BENCHMARK, where, f"record {number} has no question_id or question text")
        docs.append(
            {
                "question_id": int(record["question_id"]),
                "category": str(record.get("category", "generic")),
                "question": text,
                "reference": None,
                "reference_source": None,
            }
        )
    return docs


def _attach(docs: list[dict[str, Any]], references: dict[str, list[str]], source: str) -> None:
    for doc in docs:
        turns = references.get(str(doc["question_id"]))
        if turns:
            doc["reference"], doc["reference_source"] = turns[0], source


def question_files(reference_file: str | None = None, **metadata: Any) -> tuple[Path, Path | None] | None:
    """The local question and reference files :func:`load_vicuna80` reads (its arguments), or ``None``."""
    return local_question_files(metadata, BENCHMARK, REFERENCE_NAMES)


@checks_data_files(question_files)
def load_vicuna80(reference_file: str | None = None, **metadata: Any) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset``: the 80 questions with their reference answers where known."""
    local = question_files(**metadata)
    if local is not None:
        questions, answers = local
        docs = parse_questions(read_jsonl(questions, BENCHMARK), questions)
        if answers is not None:
            references = {}
            for record in read_jsonl(answers, BENCHMARK):
                turns = answer_turns(record)
                if "question_id" not in record or not turns:
                    raise layout_error(BENCHMARK, answers, "a reference record lacks question_id or text")
                references[str(record["question_id"])] = turns
            _attach(docs, references, f"file {answers.name}")
    else:
        docs = parse_questions(fetch_jsonl(QUESTIONS_URL, BENCHMARK), QUESTIONS_URL)
    if reference_file:
        _attach(docs, read_reference_file(reference_file, BENCHMARK), f"file {Path(reference_file).name}")
    missing = sum(doc["reference"] is None for doc in docs)
    if missing:
        log.info(
            "%s: %d questions without a reference answer; the reference model writes them", BENCHMARK, missing
        )
    return as_dataset(docs, FEATURES)
