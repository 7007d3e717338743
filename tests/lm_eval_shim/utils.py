"""Our stand-in for lm-eval's ``tests/utils.py``, which its source distribution does not ship.

lm-eval's ``tests/test_tasks.py`` imports ``new_tasks`` from it: in lm-eval's CI that function reads the list
of changed task files.  Here the list is given by the caller (``tests/test_lm_eval_task_tests.py``).
"""

from __future__ import annotations

import os

TASKS_VARIABLE = "LLMKICK_LM_EVAL_TASKS"


def new_tasks() -> list[str]:
    """The task names to test: ``$LLMKICK_LM_EVAL_TASKS``, comma-separated (never lm-eval's default)."""
    names = [name for name in os.environ.get(TASKS_VARIABLE, "").split(",") if name]
    if not names:
        raise RuntimeError(f"${TASKS_VARIABLE} names no task to test")
    return names
