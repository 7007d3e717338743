"""FreebaseQA loader: read the release formats (or the official release online) into one document schema.

Document schema (every format, every source)::

    {"question_id": str, "question": str, "answers": list[str]}   # answers: all aliases, first = canonical

Sources: a local data dir (``llmkick_tasks.data_dir``) with ``FreebaseQA-{split}.json`` (preferred),
``.tab`` or ``.txt``; otherwise the official JSON release on GitHub.  There is no Hub dataset to read
instead: the canonical ``freebase_qa`` (``KelvinJiang/freebase_qa``) is a loading script, which current
``datasets`` refuses, and no script-free copy of it was found.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks.data_dir import (
    checks_data_files,
    download_file,
    layout_error,
    local_benchmark_dir,
    to_dataset,
)
from llmkick_tasks.knobs import KnobError
from llmkick_tasks.run_metadata import (
    FREEBASEQA_HOLDOUT,
    FREEBASEQA_SPLIT,
    FREEBASEQA_SPLITS,
)

if TYPE_CHECKING:
    from pathlib import Path


log = logging.getLogger(__name__)

BENCHMARK = "freebaseqa"
SPLITS = FREEBASEQA_SPLITS
RELEASE_URL = "https://raw.githubusercontent.com/kelvin-jiang/FreebaseQA/master/FreebaseQA-{split}.json"
# Why the release is fetched from GitHub, for the error when it cannot be.
NO_HUB_COPY = "FreebaseQA has no Hugging Face Hub copy that `datasets` loads without a loading script"
FORMATS = (".json", ".tab", ".txt")  # preference order when a split exists in several formats
# A .txt/.tab file where more than this fraction of lines is unusable is not a FreebaseQA file.
MAX_SKIPPED_FRACTION = 0.5
# .tab fields: subject, freebase name and id, predicate, secondary predicate, answer mid, answer, question
TAB_FIELDS = 8
# Column sanity: in the release 94% of questions end with "?", no answer does (2 of 4,000 aliases) and no
# answer is as long as its question.  A file past these shares has its columns swapped or shifted.
MAX_ANSWER_QUESTION_MARKS = 0.2
MAX_ANSWERS_AS_LONG_AS_QUESTION = 0.5
MAX_SHORT_QUESTIONS = 0.5  # questions of fewer than 3 words
MAX_ID_LIKE_ANSWERS = 0.2  # answers that are Freebase ids (m.0abc12): the .tab answer-mid column
_FREEBASE_ID = re.compile(r"^[mg]\.[0-9a-z_]+$")

FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": datasets.Sequence(datasets.Value("string")),
    }
)


def _unquote(field: str) -> str:
    """Undo CSV quoting of a field (a doubled quote inside quotes is one quote) but keep textual quotes.

    The .txt and .tab releases quote some questions CSV-style and leave others with literal quotes
    (``"Belshazzar's Feast" was a work by which composer?``); a field counts as quoted only when it starts
    and ends with a quote and every inner quote is doubled.
    """
    inner = field[1:-1]
    if len(field) >= 2 and field[0] == field[-1] == '"' and '"' not in inner.replace('""', ""):
        return inner.replace('""', '"')
    return field


def _add_question(grouped: dict[str, dict[str, Any]], question_id: str, question: str, answer: str) -> None:
    """Add one (question, answer) pair; repeated questions collect their answers as aliases."""
    doc = grouped.setdefault(question, {"question_id": question_id, "question": question, "answers": []})
    if answer not in doc["answers"]:
        doc["answers"].append(answer)


def _check_skipped(path: Path, skipped: list[int], total: int, layout: str) -> None:
    """Warn about skipped lines; refuse a file that is mostly unusable (it is not this format)."""
    if not skipped:
        return
    if total == 0 or len(skipped) > MAX_SKIPPED_FRACTION * total:
        raise layout_error(
            BENCHMARK, path, f"{len(skipped)} of {total} lines are not {layout} lines (first: {skipped[:5]})"
        )
    log.warning("%s: skipped %d malformed line(s), e.g. line(s) %s", path, len(skipped), skipped[:5])


def check_columns(path: Path, docs: list[dict[str, Any]], layout: str) -> list[dict[str, Any]]:
    """Refuse a file whose questions do not read as questions or whose answers do not read as short
    names (columns swapped or shifted), naming the evidence; return ``docs`` unchanged otherwise.
    """
    pairs = [(doc["question"], answer) for doc in docs for answer in doc["answers"]]
    if not pairs:
        return docs

    def share(predicate: Any, items: list[Any]) -> float:
        return sum(1 for item in items if predicate(item)) / len(items)

    findings = []
    marks = share(lambda pair: pair[1].rstrip().endswith("?"), pairs)
    if marks > MAX_ANSWER_QUESTION_MARKS:
        findings.append(f"{marks:.0%} of the answers end with '?'")
    long_answers = share(lambda pair: len(pair[1].split()) >= len(pair[0].split()), pairs)
    if long_answers > MAX_ANSWERS_AS_LONG_AS_QUESTION:
        findings.append(f"{long_answers:.0%} of the answers are at least as long as their question")
    short = share(lambda doc: len(doc["question"].split()) < 3, docs)
    if short > MAX_SHORT_QUESTIONS:
        findings.append(f"{short:.0%} of the questions have fewer than 3 words")
    ids = share(lambda pair: bool(_FREEBASE_ID.match(pair[1].strip())), pairs)
    if ids > MAX_ID_LIKE_ANSWERS:
        findings.append(f"{ids:.0%} of the answers are Freebase ids (m.0...)")
    if findings:
        example = pairs[0]
        raise layout_error(
            BENCHMARK,
            path,
            f"the columns look swapped or shifted ({'; '.join(findings)}); first row read as "
            f"question={example[0]!r:.80}, answer={example[1]!r:.80}; expected {layout}",
        )
    return docs


def parse_json(path: Path) -> list[dict[str, Any]]:
    """Documents of an official ``FreebaseQA-{split}.json`` (aliases: every AnswersName of every parse)."""
    try:
        with path.open(encoding="utf-8") as handle:
            questions = json.load(handle)["Questions"]
        docs = []
        for question in questions:
            names: list[str] = []
            for parse in question.get("Parses") or []:
                for answer in parse.get("Answers") or []:
                    names.extend(answer.get("AnswersName") or [])
            aliases = [name.strip() for name in dict.fromkeys(names) if name.strip()]
            if not aliases:
                raise ValueError(f"question {question.get('Question-ID')!r} has no AnswersName")
            docs.append(
                {
                    "question_id": question["Question-ID"],
                    "question": question["RawQuestion"].strip(),
                    "answers": aliases,
                }
            )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise layout_error(
            BENCHMARK, path, f"not a FreebaseQA release JSON ({type(error).__name__}: {error})"
        ) from error
    return check_columns(path, docs, "RawQuestion = the question, AnswersName = the answer names")


def parse_txt(path: Path) -> list[dict[str, Any]]:
    """Documents of a ``question | answer`` file; lines repeating a question add aliases.

    The release has malformed lines (e.g. ``85326 | whose film debut was ...``, question and answer
    swapped around a bare number): lines without a separator, with an empty side, or whose question has no
    letter are skipped with a warning.
    """
    grouped: dict[str, dict[str, Any]] = {}
    skipped: list[int] = []
    lines = _read_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        question, separator, answer = line.rpartition("|")
        question, answer = _unquote(question.strip()), answer.strip()
        if not separator or not answer or not any(char.isalpha() for char in question):
            skipped.append(number)
            continue
        _add_question(grouped, f"{path.name}:{number}", question, answer)
    _check_skipped(path, skipped, sum(1 for line in lines if line.strip()), "'question | answer'")
    return check_columns(path, list(grouped.values()), "'question | answer' lines, the question first")


def parse_tab(path: Path) -> list[dict[str, Any]]:
    """Documents of a ``.tab`` file (8 tab-separated fields; one row per alias of a question)."""
    grouped: dict[str, dict[str, Any]] = {}
    skipped: list[int] = []
    lines = _read_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != TAB_FIELDS:
            skipped.append(number)
            continue
        answer, question = _unquote(fields[6].strip()), _unquote(fields[7].strip())
        if not answer or not any(char.isalpha() for char in question):
            skipped.append(number)
            continue
        _add_question(grouped, f"{path.name}:{number}", question, answer)
    _check_skipped(
        path, skipped, sum(1 for line in lines if line.strip()), f"{TAB_FIELDS}-field tab-separated"
    )
    return check_columns(
        path, list(grouped.values()), f"{TAB_FIELDS} tab-separated fields, answer 7th and question 8th"
    )


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise layout_error(BENCHMARK, path, f"cannot read ({type(error).__name__}: {error})") from error


PARSERS = {".json": parse_json, ".tab": parse_tab, ".txt": parse_txt}


def split_file(folder: Path, split: str) -> Path | None:
    """The file holding ``split`` in ``folder``, in format preference order, or ``None``."""
    for suffix in FORMATS:
        candidate = folder / f"FreebaseQA-{split}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _check_known(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown FreebaseQA split {split!r}; known: {', '.join(SPLITS)}")


def local_split_file(folder: Path, split: str) -> Path:
    """:func:`split_file`, or the layout error naming the splits ``folder`` does have."""
    path = split_file(folder, split)
    if path is None:
        present = [other for other in SPLITS if split_file(folder, other) is not None]
        raise layout_error(
            BENCHMARK,
            folder / f"FreebaseQA-{split}.json",
            f"no file for the {split} split (.json/.tab/.txt; the folder has "
            f"{', '.join(present) or 'no split'}; evaluate another with --metadata "
            f"'{{\"{FREEBASEQA_SPLIT.name}\": ...}}')",
        )
    return path


def evaluated_split(
    release_split: str = "eval", first_n: int | None = None, **metadata: Any
) -> tuple[str, Path | None]:
    """The split :func:`load_freebaseqa` evaluates and the local folder it reads (``None``: the official
    release online); with a folder, the split's file must be in it (checked, not parsed).

    Takes the loader's arguments, so the pre-flight can call it as lm-eval calls the loader.
    """
    split = FREEBASEQA_SPLIT.read(metadata) or release_split
    _check_known(split)
    folder = local_benchmark_dir(metadata, BENCHMARK)
    if folder is not None:
        local_split_file(folder, split)
    return split, folder


def read_split(split: str, folder: Path | None, required: bool = True) -> list[dict[str, Any]] | None:
    """Documents of ``split``, from ``folder`` when given, else from the official release.

    With ``required=False`` a split that is not available gives ``None`` instead of an error.
    """
    _check_known(split)
    if folder is None:
        try:
            url = RELEASE_URL.format(split=split)
            return parse_json(download_file(url, f"the official FreebaseQA release {url} ({NO_HUB_COPY})"))
        except RuntimeError:
            if required:
                raise
            return None
    path = local_split_file(folder, split) if required else split_file(folder, split)
    return None if path is None else PARSERS[path.suffix](path)


def hold_out(docs: list[dict[str, Any]], count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split ``docs`` into (evaluated, few-shot pool): ``count`` evenly spaced questions go to the pool.

    Evenly spaced rather than the first ``count``: the release files are sorted by subject, so the pool
    then covers the whole split.  Deterministic, so every point of a sweep sees the same questions.
    """
    if count >= len(docs):
        allowed = f"fewer than the split's {len(docs)} questions (the rest is evaluated)"
        raise KnobError(FREEBASEQA_HOLDOUT.name, count, f"< {len(docs)}", allowed)
    picked = {index * len(docs) // count for index in range(count)}  # distinct: the step is >= 1
    evaluated = [doc for index, doc in enumerate(docs) if index not in picked]
    pool = [doc for index, doc in enumerate(docs) if index in picked]
    return evaluated, pool


@checks_data_files(evaluated_split)
def load_freebaseqa(
    release_split: str = "eval", first_n: int | None = None, **metadata: Any
) -> datasets.DatasetDict:
    """``custom_dataset`` of the FreebaseQA tasks: ``test`` (the evaluated questions) and ``fewshot``.

    Args:
        release_split: the release split to evaluate (``dataset_kwargs`` of the task); ``--metadata
            '{"freebaseqa_split": ...}'`` overrides it for every FreebaseQA task of a run.
        first_n: evaluate only the first ``first_n`` questions of the split (the paper: 1000 of train).
        **metadata: the task metadata (``data_dir``, ``freebaseqa_split``, ``freebaseqa_fewshot_holdout``
            are read from it; the rest is ignored).

    The few-shot pool (used only with ``--num_fewshot``) is the dev split, or train when dev is evaluated;
    when it is not available the pool is empty and only zero-shot runs work.  With
    ``freebaseqa_fewshot_holdout: N`` the pool is instead N evenly spaced questions of the evaluated split,
    removed from the evaluated questions before ``first_n`` applies.
    """
    split, folder = evaluated_split(release_split, **metadata)
    holdout = FREEBASEQA_HOLDOUT.read(metadata)
    docs = read_split(split, folder)
    if holdout is not None:
        docs, pool = hold_out(docs, holdout)
        log.info(
            "FreebaseQA %s: %d questions held out as the few-shot pool, %d evaluated",
            split,
            len(pool),
            len(docs),
        )
    else:
        pool_split = "train" if split == "dev" else "dev"
        pool = read_split(pool_split, folder, required=False) or []
        if not pool:
            log.warning(
                "FreebaseQA few-shot pool (%s split) not available: only zero-shot runs work "
                "(or hold out questions of the evaluated split with --metadata %s)",
                pool_split,
                FREEBASEQA_HOLDOUT.name,
            )
    if first_n is not None:
        docs = docs[: int(first_n)]
    return datasets.DatasetDict(
        {
            "test": to_dataset(docs, FEATURES),
            "fewshot": to_dataset(pool, FEATURES),
        }
    )
