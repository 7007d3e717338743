"""The TriviaQA rc release files of a data dir, read into ``mandarjoshi/trivia_qa``'s column layout.

The Hub's rows were built from the same release by HF datasets' ``trivia_qa`` script, whose rules this
module follows, so that :mod:`llmkick_tasks.triviaqa.documents` builds the same documents from both:
the validation split is ``qa/web-dev.json`` then ``qa/wikipedia-dev.json`` (a question in both files
appears twice, as there); string fields are stripped; an ``EntityPages`` / ``SearchResults`` entry whose
evidence file is missing is dropped (and reported here); the ``nocontext`` configs have no entries.

One difference, for memory: a row lists only the FIRST entity page and the FIRST search result whose files
exist, the only evidence the tasks use (the Hub lists every one; a question's pages together can run to
megabytes).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks.data_dir import DataLayoutError, layout_error, to_dataset

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


log = logging.getLogger(__name__)

BENCHMARK = "triviaqa"
DOMAINS = ("web", "wikipedia")  # file order of the rc validation split

# mandarjoshi/trivia_qa's columns (every config).
HUB_FEATURES = datasets.Features(
    {
        "question": datasets.Value("string"),
        "question_id": datasets.Value("string"),
        "question_source": datasets.Value("string"),
        "entity_pages": datasets.Sequence(
            {
                "doc_source": datasets.Value("string"),
                "filename": datasets.Value("string"),
                "title": datasets.Value("string"),
                "wiki_context": datasets.Value("string"),
            }
        ),
        "search_results": datasets.Sequence(
            {
                "description": datasets.Value("string"),
                "filename": datasets.Value("string"),
                "rank": datasets.Value("int32"),
                "title": datasets.Value("string"),
                "url": datasets.Value("string"),
                "search_context": datasets.Value("string"),
            }
        ),
        "answer": {
            "aliases": datasets.Sequence(datasets.Value("string")),
            "normalized_aliases": datasets.Sequence(datasets.Value("string")),
            "matched_wiki_entity_name": datasets.Value("string"),
            "normalized_matched_wiki_entity_name": datasets.Value("string"),
            "normalized_value": datasets.Value("string"),
            "type": datasets.Value("string"),
            "value": datasets.Value("string"),
        },
    }
)
# Release key -> Hub column, per evidence list (the Hub's columns are the keys in snake case).
ENTITY_PAGE_KEYS = {"DocSource": "doc_source", "Filename": "filename", "Title": "title"}
SEARCH_RESULT_KEYS = {
    "Description": "description",
    "Filename": "filename",
    "Rank": "rank",
    "Title": "title",
    "Url": "url",
}


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _answer(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The Hub's ``answer`` column of a release ``Answer`` (which must carry its aliases)."""
    if not (answer.get("Aliases") or answer.get("NormalizedAliases")):
        # Every rc answer carries its aliases: without them this is not the release layout.
        raise ValueError("has no Answer.Aliases / Answer.NormalizedAliases")
    return {
        "aliases": [_strip(alias) for alias in answer.get("Aliases") or []],
        "normalized_aliases": [_strip(alias) for alias in answer.get("NormalizedAliases") or []],
        # The Hub's script reads the key "MatchedWikiEntryName", which the release files spell
        # "MatchedWikiEntityName": the Hub's column is empty, and so is this one.
        "matched_wiki_entity_name": _strip(answer.get("MatchedWikiEntryName", "")),
        "normalized_matched_wiki_entity_name": _strip(answer.get("NormalizedMatchedWikiEntryName", "")),
        "normalized_value": _strip(answer.get("NormalizedValue", "")),  # unused by the tasks
        "type": _strip(answer.get("Type", "")),
        "value": _strip(answer["Value"]),
    }


def _evidence(
    folder: Path | None, entries: list[Mapping[str, Any]], keys: dict[str, str], text_key: str, source: Path
) -> dict[str, list[Any]]:
    """The Hub's column of one evidence list: its first entry whose file exists under ``folder`` (none
    when ``folder`` is ``None``, the ``nocontext`` configs).
    """
    column: dict[str, list[Any]] = {name: [] for name in [*keys.values(), text_key]}
    for entry in entries if folder is not None else []:
        if not entry.get("Filename"):
            continue
        file = folder / entry["Filename"]
        if not file.is_file():
            log.warning("%s: evidence file %s is missing, trying the next one", source, file)
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise layout_error(BENCHMARK, file, f"cannot read ({type(error).__name__})") from error
        for key, name in keys.items():
            column[name].append(_strip(entry.get(key)))
        column[text_key].append(text.strip())
        break
    return column


def _row(record: Mapping[str, Any], wiki: Path | None, web: Path | None, path: Path) -> dict[str, Any]:
    """One release question as a Hub row (``wiki`` / ``web``: the evidence folders, or ``None``)."""
    try:
        answer = _answer(record["Answer"])
    except ValueError as error:
        raise ValueError(f"question {record.get('QuestionId')!r} {error}") from error
    return {
        "question": record["Question"].strip(),
        "question_id": record["QuestionId"],
        "question_source": _strip(record.get("QuestionSource", "")),
        "entity_pages": _evidence(
            wiki, record.get("EntityPages") or [], ENTITY_PAGE_KEYS, "wiki_context", path
        ),
        "search_results": _evidence(
            web, record.get("SearchResults") or [], SEARCH_RESULT_KEYS, "search_context", path
        ),
        "answer": answer,
    }


def _check_not_swapped(path: Path, rows: list[dict[str, Any]]) -> None:
    """Refuse a question file whose questions are no longer than their answers (fields swapped)."""
    if not rows:
        return
    short = [row for row in rows if len(row["question"].split()) <= len(row["answer"]["value"].split())]
    if len(short) > 0.5 * len(rows):
        raise layout_error(
            BENCHMARK,
            path,
            f"Question and Answer look swapped: {len(short) / len(rows):.0%} of the questions are no longer "
            f"than their answer (first: Question={rows[0]['question']!r:.80}, "
            f"Answer.Value={rows[0]['answer']['value']!r:.80})",
        )


def release_files(
    folder: Path, split: str = "dev", with_evidence: bool = False
) -> tuple[list[Path], Path | None, Path | None]:
    """The question files of ``split`` under ``folder`` that exist (at least one must) and the
    Wikipedia / web evidence folders (``None`` without evidence; they must exist with it).
    """
    qa_files = [folder / "qa" / f"{domain}-{split}.json" for domain in DOMAINS]
    present = [path for path in qa_files if path.is_file()]
    if not present:
        raise layout_error(BENCHMARK, qa_files[0], f"no TriviaQA rc question file for the {split} split")
    for missing in set(qa_files) - set(present):
        log.warning("TriviaQA: %s is missing; using %s only", missing, ", ".join(map(str, present)))
    wiki = web = None
    if with_evidence:
        wiki, web = folder / "evidence" / "wikipedia", folder / "evidence" / "web"
        for evidence in (wiki, web):
            if not evidence.is_dir():
                raise layout_error(BENCHMARK, evidence, "evidence folder missing (open book)")
    return present, wiki, web


def release_rows(folder: Path, split: str = "dev", with_evidence: bool = False) -> list[dict[str, Any]]:
    """Rows of ``qa/{web,wikipedia}-{split}.json`` under ``folder`` in the Hub's layout (``rc`` with
    evidence, ``rc.nocontext`` without).
    """
    present, wiki, web = release_files(folder, split, with_evidence)
    rows: list[dict[str, Any]] = []
    for path in present:
        try:
            with path.open(encoding="utf-8") as handle:
                records = json.load(handle)["Data"]
            rows_of_file = [_row(record, wiki, web, path) for record in records]
        except DataLayoutError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise layout_error(
                BENCHMARK, path, f"not a TriviaQA rc question file ({type(error).__name__}: {error})"
            ) from error
        _check_not_swapped(path, rows_of_file)
        rows += rows_of_file
    return rows


def release_dataset(folder: Path, split: str = "dev", with_evidence: bool = False) -> datasets.Dataset:
    """:func:`release_rows` as a ``datasets.Dataset`` with the Hub's features."""
    return to_dataset(release_rows(folder, split, with_evidence), HUB_FEATURES)
