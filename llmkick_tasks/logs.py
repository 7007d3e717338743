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
