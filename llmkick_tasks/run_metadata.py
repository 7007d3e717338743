"""The llmkick tasks' ``--metadata`` knobs, declared once, and the check of a run's metadata before load.

lm-eval builds the tasks (and so runs their loaders) only after loading the model, so a typo in a knob
value would otherwise cost a model load — and, through ``compressed-hf``, a compression.  The pre-flight
wrapper of ``simple_evaluate`` (:mod:`llmkick_tasks.preflight`) and the sweep's pre-flight call
:func:`check_run_metadata` first; the task loaders read their values through the same declarations.  The
judge's knobs are declared in :mod:`llmkick_tasks.judge.knobs` and checked with the judge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmkick_tasks.judge.knobs import (
    JUDGE_KNOBS,
    JUDGED_DATA_KNOBS,
    JUDGED_PROMPT_KNOBS,
)
from llmkick_tasks.knobs import PATH, Knob, check, choice, integer, knob_table

if TYPE_CHECKING:
    from collections.abc import Mapping


FREEBASEQA_SPLITS = ("train", "dev", "eval")

DATA_DIR = Knob(
    "data_dir",
    PATH,
    None,
    "local data directory: the benchmarks in their release layouts (below)",
    env=("LLMKICK_DATA_DIR",),
    shown_default="the public sources",
)
FREEBASEQA_SPLIT = Knob(
    "freebaseqa_split",
    choice(FREEBASEQA_SPLITS),
    None,
    "evaluate another FreebaseQA split in every FreebaseQA task of the run",
    shown_default="the task's own (`eval`; `train` for `_paper`)",
)
FREEBASEQA_HOLDOUT = Knob(
    "freebaseqa_fewshot_holdout",
    integer(1),
    None,
    "N evenly spaced questions of the evaluated FreebaseQA split become the few-shot pool and are **not** "
    "evaluated (for data with one split, e.g. dev only); then `--num_fewshot` works there too",
)
EVIDENCE_TOKENS = Knob(
    "evidence_tokens",
    integer(0),
    768,
    "open-book TriviaQA evidence budget in tokens of the model's tokenizer",
)
WIKITEXT2_SEQLEN = Knob(
    "wikitext2_seqlen",
    integer(2),
    2048,
    "`llmkick_wikitext2_ppl` window length in tokens, capped at the model's context (or `max_length`)",
)
WIKITEXT2_WINDOWS = Knob(
    "wikitext2_windows",
    integer(1),
    None,
    "`llmkick_wikitext2_ppl` scores the first N windows only",
    shown_default="all",
)
WIKITEXT2_ARTICLES = Knob(
    "wikitext2_articles",
    integer(1),
    None,
    "`llmkick_wikitext2_ppl_articles` scores the first N articles only",
    shown_default="all",
)

#: Every run-wide knob of the tasks, in the README's order.
TASK_KNOBS = (
    DATA_DIR,
    FREEBASEQA_SPLIT,
    FREEBASEQA_HOLDOUT,
    EVIDENCE_TOKENS,
    WIKITEXT2_SEQLEN,
    WIKITEXT2_WINDOWS,
    WIKITEXT2_ARTICLES,
)


def check_run_metadata(metadata: Mapping[str, Any] | None) -> None:
    """Raise :class:`~llmkick_tasks.knobs.KnobError` naming the key and what is allowed if a run-wide
    llmkick knob is malformed (the judged tasks' prompt format included: it needs no judge to check).
    """
    check((*TASK_KNOBS, *JUDGED_PROMPT_KNOBS), metadata)


def knob_tables() -> dict[str, str]:
    """The README tables of the knobs (markdown), by the README that holds each (relative to the project)."""
    return {
        "llmkick_tasks/README.md": knob_table(TASK_KNOBS),
        "llmkick_tasks/judge/README.md": knob_table(
            (*JUDGE_KNOBS, *JUDGED_DATA_KNOBS, *JUDGED_PROMPT_KNOBS, DATA_DIR)
        ),
    }
