"""The cache's settings from the environment, parsed strictly: its folder, size cap and lock timeout."""

from __future__ import annotations

import math
import os
from pathlib import Path

from llmkick_tasks.errors import UserError

CACHE_DIR_ENV = "LLMKICK_CACHE_DIR"
MAX_GB_ENV = "LLMKICK_CACHE_MAX_GB"
LOCK_TIMEOUT_ENV = "LLMKICK_CACHE_LOCK_TIMEOUT"
#: How long a process waits for another one compressing the same key before compressing on its own.
DEFAULT_LOCK_TIMEOUT_S = 6 * 3600.0
GB_EXPECTED = "a finite size in GB >= 0, e.g. 50"


def default_cache_dir() -> Path:
    """``$LLMKICK_CACHE_DIR``, else ``$XDG_CACHE_HOME/llmkick/models``, else ``~/.cache/llmkick/models``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llmkick" / "models"


def nonnegative_number(text: str, expected: str) -> float:
    """``text`` as a finite number >= 0; otherwise a ValueError that quotes it and says what is expected."""
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{text!r} is not a number; expected {expected}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{text!r} is not allowed; expected {expected}")
    return value


def parse_max_gb(text: str) -> int:
    """A size in GB (10^9 bytes) as text, in bytes: finite and >= 0, else a ValueError."""
    gigabytes = nonnegative_number(text, GB_EXPECTED)
    if not math.isfinite(gigabytes * 1e9):
        raise UserError(f"{text!r} is too large; expected {GB_EXPECTED}")
    return int(gigabytes * 1e9)


def max_cache_bytes() -> int | None:
    """The size cap from ``$LLMKICK_CACHE_MAX_GB`` (GB = 10^9 bytes), or None when unset."""
    text = os.environ.get(MAX_GB_ENV, "").strip()
    if not text:
        return None
    try:
        return parse_max_gb(text)
    except ValueError as error:
        raise UserError(f"${MAX_GB_ENV}={error}") from None


def lock_timeout() -> float:
    """``$LLMKICK_CACHE_LOCK_TIMEOUT`` in seconds (finite, >= 0), else the default of 6 hours."""
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        return nonnegative_number(text, "seconds to wait, a finite number >= 0, e.g. 3600")
    except ValueError as error:
        raise UserError(f"${LOCK_TIMEOUT_ENV}={error}") from None
