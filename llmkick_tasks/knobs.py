"""Parsers of the ``--metadata`` knobs the llmkick tasks read, one per kind of value.

Each task module reads its own knobs with these, so a bad value fails the same way (naming the key and
what is allowed) whether it is caught by the run-wide pre-flight (:mod:`llmkick_tasks.run_metadata`, before
the model loads) or by the task loader itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any


def int_at_least(metadata: Mapping[str, Any], key: str, minimum: int = 1) -> int | None:
    """``metadata[key]`` as an integer >= ``minimum``; ``None`` when absent (floats, strings refused)."""
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        names = {0: "a non-negative integer", 1: "a positive integer"}
        allowed = names.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"metadata {key}={value!r}: allowed {allowed}")
    return value


def one_of(metadata: Mapping[str, Any], key: str, allowed: Collection[str]) -> str | None:
    """``metadata[key]`` when it is one of ``allowed``; ``None`` when absent."""
    value = metadata.get(key)
    if value is None:
        return None
    if value not in allowed:
        raise ValueError(f"metadata {key}={value!r}: allowed {', '.join(map(str, allowed))}")
    return value
