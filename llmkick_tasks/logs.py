"""Make llmkick's log lines appear where lm-eval's do."""

from __future__ import annotations

import logging


def route_logs_through_lm_eval(logger_name: str) -> None:
    """Give ``logger_name`` lm-eval's handlers and level, once.

    lm-eval configures only its own ``lm_eval`` logger (handler, level from ``--verbosity``); a logger of
    another package would otherwise drop its INFO lines (compression report, judge request counts).
    """
    ours, theirs = logging.getLogger(logger_name), logging.getLogger("lm_eval")
    if not ours.handlers and theirs.handlers:
        for handler in theirs.handlers:
            ours.addHandler(handler)
        ours.setLevel(theirs.getEffectiveLevel())
        ours.propagate = False


#: lm-eval warnings that are emitted once per (sub)task although they say the same thing every time;
#: llmkick's MMLU alone has 57 subtasks, and each repeats the warning about the metadata it was given.
REPEATED_TASK_WARNINGS: tuple[str, ...] = ("Custom kwargs can be passed to `--metadata`",)


class OncePerRun(logging.Filter):
    """Let the first of a family of identical-but-for-the-task-name warnings through, drop the rest."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a repeat of a warning family already shown."""
        message = record.getMessage()
        family = next((f for f in self.fragments if f in message), None)
        if family is None:
            return True
        if family in self.seen:
            return False
        self.seen.add(family)
        return True


def quiet_repeated_task_warnings(logger_name: str = "lm_eval.api.task") -> None:
    """Show each of ``REPEATED_TASK_WARNINGS`` once per process instead of once per task (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, OncePerRun) for f in logger.filters):
        logger.addFilter(OncePerRun(REPEATED_TASK_WARNINGS))
