"""A readable copy of a judged task's generated answers, written just before the judge sees them.

When ``$LLMKICK_GENERATIONS_DIR`` is set (``llmkick sweep`` sets it for every point), each judged task writes
``<dir>/<task>.jsonl`` before it is judged: one line per document with ``doc_id``, the ``prompt`` the model
saw and its ``answers`` (MT-Bench: both turns and the second turn's prompt).  A judge that fails (a rejected
key, an unreachable server) then leaves the model's work where the user can read it.  What a re-run resumes
from is lm-eval's response cache (``--use_cache``), not this file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence


log = logging.getLogger(__name__)

GENERATIONS_ENV = "LLMKICK_GENERATIONS_DIR"


def write_generations(task: str, instances: Sequence[Any]) -> Path | None:
    """Write ``<$LLMKICK_GENERATIONS_DIR>/<task>.jsonl`` from lm-eval instances; ``None`` when it is unset."""
    folder = os.environ.get(GENERATIONS_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{task}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for instance in sorted(instances, key=lambda i: (i.doc_id, i.idx)):
            record = {"doc_id": instance.doc_id, "prompt": instance.arguments[0], "answers": instance.resps}
            handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)  # never a half-written file, even when the run is killed
    log.info("%s: the generated answers are in %s", task, path)
    return path
