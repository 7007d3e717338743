r"""lm-eval's samples files (``samples_<task>_<date>.jsonl``): reading them, and where a re-judged task's are.

lm-eval writes them with ``ensure_ascii=False``, so a document or an answer may hold U+2028, U+2029, U+0085
or a form feed unescaped; :meth:`str.splitlines` would break a line there.  Only ``"\n"`` ends a line.

``llmkick judge`` records in a re-judged task's metadata the samples file it re-judged and the one it wrote,
relative to the folder of the results file that records them: a run directory can be moved, and a report
run from any directory finds them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class SamplesFileError(ValueError):
    """A samples file that cannot be read, is not UTF-8, or has a line that is not JSON."""


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of ``path``, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SamplesFileError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise SamplesFileError(f"{path} cannot be read ({error.strerror or error})") from None
    values = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line)))
        except json.JSONDecodeError as error:
            raise SamplesFileError(f"{path} line {number} is not JSON ({error.msg})") from None
    return values


# ---- where a re-judged task's samples are ---------------------------------------------------------------

#: Task metadata ``llmkick judge`` records: the samples it re-judged, and the samples file it wrote.
REJUDGED_FROM = "rejudged_from"
REJUDGED_SAMPLES = "rejudged_samples"


def relative_path(path: Path, folder: Path) -> str:
    """``path`` as a file in ``folder`` records it: relative to ``folder`` (POSIX), so the run can move."""
    return Path(os.path.relpath(path.absolute(), folder.absolute())).as_posix()


def recorded_path(value: str, folder: Path) -> Path:
    """A path a file in ``folder`` recorded: a relative one is relative to ``folder``, not to the cwd."""
    path = Path(value)
    return path if path.is_absolute() else Path(os.path.normpath(folder / path))
