"""WikiText-2 test data for the perplexity tasks: the split's rows, and its articles.

Sources: a local data dir holding ``wikitext2/test.txt`` (or the release names ``wiki.test.tokens`` /
``wiki.test.raw``), registered with the shared data-dir mechanism below; otherwise ``Salesforce/wikitext``
(``wikitext-2-raw-v1``) from the Hub.  The article documents (``llmkick_wikitext2_ppl_articles``) are split at
top-level `` = Title = `` headings and detokenized from the word-level release form (`` @-@ ``, `` , ``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets

from llmkick_tasks.data_dir import (
    layout_error,
    load_hub_split,
    local_benchmark_dir,
    register_benchmark,
    to_dataset,
)
from llmkick_tasks.run_metadata import WIKITEXT2_ARTICLES

BENCHMARK = "wikitext2"
LOCAL_NAMES = ("test.txt", "wiki.test.tokens", "wiki.test.raw")
HUB_PATH, HUB_NAME = "Salesforce/wikitext", "wikitext-2-raw-v1"
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


def _local_lines(folder: Path) -> list[str]:
    for name in LOCAL_NAMES:
        path = folder / name
        if path.is_file():
            return path.read_text(encoding="utf-8").splitlines()
    raise layout_error(BENCHMARK, folder, f"no WikiText-2 test file ({' or '.join(LOCAL_NAMES)})")


def test_rows(metadata: dict[str, Any]) -> tuple[list[str], Path | str]:
    """The test split as the Hub's rows (one per release line), and where they came from."""
    folder = local_benchmark_dir(metadata, BENCHMARK)
    if folder is not None:
        from llmkick_tasks.wikitext2.windows import release_rows

        return release_rows(_local_lines(folder)), folder
    return list(load_hub_split(HUB_PATH, HUB_NAME, "test")["text"]), HUB_PATH


def load_articles(metadata: dict[str, Any]) -> datasets.Dataset:
    """The test articles (``wikitext2_articles`` caps their number)."""
    # lm-eval's --limit caps every task of a run alike; this caps only the perplexity articles, so a sweep
    # can keep hundreds of questions per task and still spend little time on perplexity.
    articles = WIKITEXT2_ARTICLES.read(metadata)
    folder = local_benchmark_dir(metadata, BENCHMARK)
    if folder is not None:
        lines = _local_lines(folder)
    else:
        lines = load_hub_split(HUB_PATH, HUB_NAME, "test")["text"]
    documents = split_articles(lines)
    if not documents:
        raise layout_error(BENCHMARK, folder or HUB_PATH, "no article headings (' = Title = ') found")
    if articles is not None:
        documents = documents[:articles]
    return to_dataset(documents, FEATURES)
