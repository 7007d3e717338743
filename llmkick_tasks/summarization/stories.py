"""CNN/DailyMail stories for ``llmkick_summarization`` (LLM-KICK in-context summarization), judged pairwise.

Documents::

    {"story_id": str, "bin": "small"|"mid"|"large", "words": int, "article": str, "highlights": str,
     "reference": str|None, "reference_source": str|None}

Length bins by the article's whitespace word count: small <= 470 < mid < 790 <= large.  The prompt holds
the article only; the ``@highlight`` bullets are kept in the document (lm-eval logs them as the target)
but never reach the prompt, the judge or the reference model.

Sources:

* a local data dir: ``cnn_dailymail/{small,mid,large}/*.story`` (LLM-KICK's selection).  With
  ``summarization_bins=release`` (the default of ``judge_protocol=paper``) the folder is the bin and every
  file counts, duplicates included, as the paper's means were computed (30/30/30 on the shared data).  With
  ``summarization_bins=length`` (the default otherwise) a story present in several folders is evaluated
  once, in the bin its length belongs to (the shared offline data has 18 small stories copied into mid/;
  they stay in small: 30/12/30);
* otherwise ``abisee/cnn_dailymail`` 3.0.0, test split, in dataset order: the first ``stories_per_bin``
  distinct articles of each bin.

Documents are interleaved across bins (small, mid, large, small, ...) so ``--limit 3k`` gives k per bin.
"""

from __future__ import annotations

import hashlib
import logging
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets

from llmkick_tasks.data_dir import checks_data_files, load_hub_split
from llmkick_tasks.judge.config import read_knob
from llmkick_tasks.judge.data import (
    as_dataset,
    layout_error,
    local_dir,
    read_reference_file,
    summarization_bins,
)
from llmkick_tasks.judge.knobs import STORIES_PER_BIN

if TYPE_CHECKING:
    from collections.abc import Mapping


log = logging.getLogger(__name__)

BENCHMARK = "cnn_dailymail"
BINS = ("small", "mid", "large")
SMALL_MAX_WORDS = 470
LARGE_MIN_WORDS = 790
HUB_DATASET = ("abisee/cnn_dailymail", "3.0.0", "test")
DEFAULT_STORIES_PER_BIN = STORIES_PER_BIN.default
HIGHLIGHT = "@highlight"

FEATURES = datasets.Features(
    {
        "story_id": datasets.Value("string"),
        "bin": datasets.Value("string"),
        "words": datasets.Value("int32"),
        "article": datasets.Value("string"),
        "highlights": datasets.Value("string"),
        "reference": datasets.Value("string"),
        "reference_source": datasets.Value("string"),
    }
)

__all__ = ["length_bin", "load_summarization", "parse_story", "select_stories"]


def length_bin(words: int) -> str:
    """LLM-KICK's bin of an article of ``words`` words."""
    if words <= SMALL_MAX_WORDS:
        return "small"
    return "large" if words >= LARGE_MIN_WORDS else "mid"


def parse_story(text: str) -> tuple[str, list[str]]:
    """(article, highlights) of a ``.story`` file; paragraphs are kept, ``@highlight`` blocks split off."""
    lines = text.replace("\r\n", "\n").split("\n")
    cut = next((i for i, line in enumerate(lines) if line.strip() == HIGHLIGHT), len(lines))
    paragraphs = [line.strip() for line in lines[:cut] if line.strip()]
    highlights = [line.strip() for line in lines[cut:] if line.strip() and line.strip() != HIGHLIGHT]
    return "\n\n".join(paragraphs), highlights


def _article_key(article: str) -> str:
    return hashlib.sha1(" ".join(article.split()).encode(), usedforsecurity=False).hexdigest()


def _story(story_id: str, bin_name: str, article: str, highlights: list[str]) -> dict[str, Any]:
    return {
        "story_id": story_id,
        "bin": bin_name,
        "words": len(article.split()),
        "article": article,
        "highlights": "\n".join(highlights),
        "reference": None,
        "reference_source": None,
    }


def story_files(folder: Path) -> list[tuple[str, Path]]:
    """(bin, file) of every ``.story`` file of ``folder/{small,mid,large}``, folder order then file-name
    order; every bin folder must exist and at least one story too.  Nothing is read.
    """
    files = []
    for bin_name in BINS:
        bin_dir = folder / bin_name
        if not bin_dir.is_dir():
            raise layout_error(BENCHMARK, bin_dir, "missing length-bin folder")
        files += [(bin_name, path) for path in sorted(bin_dir.glob("*.story"))]
    if not files:
        raise layout_error(BENCHMARK, folder, "no .story files found")
    return files


def read_local(folder: Path) -> list[dict[str, Any]]:
    """Every story of :func:`story_files`."""
    stories = []
    for bin_name, path in story_files(folder):
        article, highlights = parse_story(path.read_text(encoding="utf-8", errors="replace"))
        if not article:
            raise layout_error(BENCHMARK, path, "story has no article text before its @highlight lines")
        stories.append(_story(path.stem, bin_name, article, highlights))
    return stories


def local_stories(
    stories_per_bin: int = DEFAULT_STORIES_PER_BIN, reference_file: str | None = None, **metadata: Any
) -> list[tuple[str, Path]] | None:
    """The story files :func:`load_summarization` reads (its arguments), or ``None`` for the public source."""
    folder = local_dir(metadata, BENCHMARK)
    return None if folder is None else story_files(folder)


def release_bins(stories: list[dict[str, Any]], per_bin: int) -> list[dict[str, Any]]:
    """The stories as their folders bin them (duplicates kept), the first ``per_bin`` of each, interleaved."""
    by_bin: dict[str, list[dict[str, Any]]] = {b: [] for b in BINS}
    for story in stories:
        if len(by_bin[story["bin"]]) < per_bin:
            by_bin[story["bin"]].append(story)
    return [s for row in zip_longest(*by_bin.values()) for s in row if s is not None]


def select_stories(stories: list[dict[str, Any]], per_bin: int) -> list[dict[str, Any]]:
    """Drop repeated articles (keeping the copy whose folder matches its length), cap each bin, interleave."""
    copies: dict[str, list[dict[str, Any]]] = {}
    for story in stories:
        copies.setdefault(_article_key(story["article"]), []).append(story)
    keep = set()
    for group in copies.values():
        right_bin = [s for s in group if s["bin"] == length_bin(s["words"])]
        keep.add(id((right_bin or group)[0]))
    dropped = len(stories) - len(keep)
    if dropped:
        log.info("%s: %d repeated stories dropped (same article in several bin folders)", BENCHMARK, dropped)
    by_bin: dict[str, list[dict[str, Any]]] = {b: [] for b in BINS}
    for story in stories:
        if id(story) in keep and len(by_bin[story["bin"]]) < per_bin:
            by_bin[story["bin"]].append(story)
    for bin_name, chosen in by_bin.items():
        if len(chosen) < per_bin:
            log.warning(
                "%s: only %d %s stories available (%d asked)", BENCHMARK, len(chosen), bin_name, per_bin
            )
    return [s for row in zip_longest(*by_bin.values()) for s in row if s is not None]


def read_hub(per_bin: int) -> list[dict[str, Any]]:
    """The first ``per_bin`` distinct articles of each bin of the CNN/DailyMail 3.0.0 test split."""
    path, name, split = HUB_DATASET
    rows = load_hub_split(path, name, split)
    by_bin: dict[str, list[dict[str, Any]]] = {b: [] for b in BINS}
    seen = set()
    for row in rows:
        article = row["article"].strip()
        key = _article_key(article)
        bin_name = length_bin(len(article.split()))
        if key in seen or len(by_bin[bin_name]) >= per_bin:
            continue
        seen.add(key)
        highlights = [line.strip() for line in row["highlights"].split("\n") if line.strip()]
        by_bin[bin_name].append(_story(row["id"], bin_name, article, highlights))
        if all(len(chosen) >= per_bin for chosen in by_bin.values()):
            break
    return select_stories([s for b in BINS for s in by_bin[b]], per_bin)


@checks_data_files(local_stories)
def load_summarization(
    stories_per_bin: int = DEFAULT_STORIES_PER_BIN, reference_file: str | None = None, **metadata: Any
) -> datasets.DatasetDict:
    """lm-eval ``custom_dataset``: the stories (and any reference summaries from ``reference_file``).

    Args:
        stories_per_bin: stories per length bin (``--metadata '{"stories_per_bin": 30}'``).
        reference_file: optional JSONL of reference summaries ``{"id": story_id, "text": ...}``; stories it
            lacks get a summary from the reference model (generated once, cached).
        **metadata: the task metadata (``data_dir``, ``summarization_bins``, ``judge_protocol`` are read).
    """
    per_bin = read_knob(STORIES_PER_BIN, {STORIES_PER_BIN.name: stories_per_bin})
    folder = local_dir(metadata, BENCHMARK)
    bins = summarization_bins(metadata)
    if folder is None:
        stories = read_hub(per_bin)
    elif bins == "release":
        stories = release_bins(read_local(folder), per_bin)
    else:
        stories = select_stories(read_local(folder), per_bin)
    log.info("%s: %d stories, binned by %s", BENCHMARK, len(stories), bins)
    if reference_file:
        attach_references(stories, read_reference_file(reference_file, BENCHMARK), Path(reference_file).name)
    return as_dataset(stories, FEATURES)


def attach_references(docs: list[dict[str, Any]], references: Mapping[str, list[str]], source: str) -> None:
    """Set ``reference`` of the stories found in ``references``; the others keep ``None``."""
    found = 0
    for doc in docs:
        turns = references.get(doc["story_id"])
        if turns:
            doc["reference"], doc["reference_source"] = turns[0], f"file {source}"
            found += 1
    if found < len(docs):
        log.warning(
            "%s: %s has references for %d of %d stories; the reference model writes the others",
            BENCHMARK, source, found, len(docs),
        )  # fmt: skip
