"""Run-wide ``--metadata`` knobs of the llmkick tasks, checked before the model loads.

lm-eval builds the tasks (and so runs their loaders) only after loading the model, so a typo in a knob
value would otherwise cost a model load — and, through ``compressed-hf``, a compression.  The pre-flight
wrapper of ``simple_evaluate`` (:mod:`llmkick_tasks.judge.preflight`) calls :func:`check_run_metadata`
first; each task module keeps the one definition of its own knobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmkick_tasks.freebaseqa import loader as freebaseqa
from llmkick_tasks.triviaqa.loader import EvidenceBudget
from llmkick_tasks.wikitext2 import windows as wikitext2

CHECKS = (freebaseqa.check_metadata, EvidenceBudget.check_metadata, wikitext2.check_metadata)


def check_run_metadata(metadata: Mapping[str, Any] | None) -> None:
    """Raise ``ValueError`` naming the key and what is allowed if a run-wide llmkick knob is malformed."""
    for check in CHECKS:
        check(metadata or {})
