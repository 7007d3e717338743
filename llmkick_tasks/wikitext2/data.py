"""WikiText-2 test data for the perplexity tasks: the split's rows, and its articles.

Sources: ``Salesforce/wikitext`` (``wikitext-2-raw-v1``) from the Hub, named in the task YAMLs; a local
data dir holding ``wikitext2/test.txt`` (or the release names ``wiki.test.tokens`` / ``wiki.test.raw``),
registered with the shared data-dir mechanism below, replaces it with the same rows (:func:`local_rows`).
The article documents (``llmkick_wikitext2_ppl_articles``) are split at top-level `` = Title = ``
headings and detokenized from the word-level release form (`` @-@ ``, `` , ``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import datasets

from llmkick_tasks.data_dir import layout_error, register_benchmark, to_dataset

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


BENCHMARK = "wikitext2"
LOCAL_NAMES = ("test.txt", "wiki.test.tokens", "wiki.test.raw")
register_benchmark(
    BENCHMARK,
    "  wikitext2/test.txt  (or wiki.test.tokens / wiki.test.raw): the WikiText-2 test split as released,\n"
    "                      one paragraph per line, articles starting with a ' = Title = ' line",
    folder_names=("wikitext2", "wikitext-2", "wikitext-2-raw"),
)
FEATURES = datasets.Features({"title": datasets.Value("string"), "page": datasets.Value("string")})

_TITLE = re.compile(r"^ = ([^=].*?) = $")
_DETOKENIZE = [
    (re.compile(r" @(.)@ "), r"\1"),  # "1 @,@ 000" -> "1,000", "guest @-@ starring" -> "guest-starring"
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{$]) "), r"\1"),  # nor after opening brackets
    (re.compile(r" '(t|s|re|ve|ll|d|m)\b"), r"'\1"),  # clitics split off by the tokenizer ("didn 't")
    (re.compile(r'" (.*?) "'), r'"\1"'),  # quoted spans: "  word  " -> "word"
]


def detokenize(text: str) -> str:
    """Undo WikiText's word-level tokenization so the model sees ordinary text."""
    for pattern, replacement in _DETOKENIZE:
        text = pattern.sub(replacement, text)
    return text


def split_articles(lines: Iterable[str]) -> list[dict[str, str]]:
    """Group release lines into articles at each top-level heading; text is detokenized."""
    articles: list[dict[str, str]] = []
    for line in lines:
        line = line.rstrip("\n")
        heading = _TITLE.match(line)
        if heading:
            articles.append({"title": heading.group(1).strip(), "lines": []})  # type: ignore[dict-item]
        elif articles:
            articles[-1]["lines"].append(line)  # type: ignore[attr-defined]
    documents = []
    for article in articles:
        body = "\n".join(article["lines"]).strip()  # type: ignore[arg-type]
        if body:
            documents.append(
                {"title": article["title"], "page": detokenize(f" = {article['title']} = \n\n{body}")}
            )
    return documents


def local_file(folder: Path) -> Path:
    """The release test file of ``folder`` (the first of ``LOCAL_NAMES`` present)."""
    for name in LOCAL_NAMES:
        path = folder / name
        if path.is_file():
            return path
    raise layout_error(BENCHMARK, folder, f"no WikiText-2 test file ({' or '.join(LOCAL_NAMES)})")


def local_rows(folder: Path) -> list[str]:
    """The release file of ``folder`` as the Hub's rows: one per line, a text line keeps its newline."""
    from llmkick_tasks.wikitext2.windows import release_rows

    return release_rows(local_file(folder).read_text(encoding="utf-8").splitlines())


def process_articles(rows: datasets.Dataset) -> datasets.Dataset:
    """``process_docs`` of ``llmkick_wikitext2_ppl_articles``: the test rows grouped into articles."""
    documents = split_articles(rows["text"])
    if not documents:
        raise layout_error(
            BENCHMARK, "the WikiText-2 test split", "no article headings (' = Title = ') found"
        )
    return to_dataset(documents, FEATURES)
