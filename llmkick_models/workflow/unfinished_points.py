"""Planned points of a run that have no results: listed in the report, never left out of it silently."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: Characters of a failed point's last log line shown in report.md (report.json keeps the whole line).
SHOWN_CHARACTERS = 300


@dataclass(frozen=True)
class UnfinishedPoint:
    """A planned point without ``results.json``: why (failed, or not run yet) and where its log is."""

    point: str
    state: str
    last_log_line: str | None
    log: str | None

    def as_dict(self) -> dict[str, str | None]:
        """The report.json entry."""
        return asdict(self)


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(empty log)"


#: The lock a running ``llmkick sweep`` holds on its run directory (``sweep.py``).
SWEEP_LOCK = ".sweep.lock"
_LOCKED_FILE = re.compile(r" ([0-9a-f]+):([0-9a-f]+):(\d+) ")
#: The state of a point with a log and no results while a sweep holds the run: its log may be growing.
RUNNING_OR_FAILED = "running or failed"


def sweep_running(run_dir: Path) -> bool:
    """Whether a process holds the run's sweep lock now, read from the kernel's lock table (``/proc/locks``,
    Linux) without taking the lock; False where that table cannot be read."""
    lock = run_dir / SWEEP_LOCK
    try:
        stat = lock.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return False
    # A line: "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF" (major:minor of the device in hex, inode);
    # one waiting for a lock has "->" after its number.
    held = (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino)
    found = (_LOCKED_FILE.search(line) for line in table.splitlines())
    return any((int(m[1], 16), int(m[2], 16), int(m[3])) == held for m in found if m is not None)


def unfinished_points(run_dir: Path, planned: list[dict[str, Any]]) -> list[UnfinishedPoint]:
    """Every planned point (``sweep.json``'s ``points``) without results, in the sweep's order: ``failed``
    when its lm-eval log exists (the last line of the log, typically the error) — ``running or failed``
    while a sweep holds the run (the point may be the one running) — and ``not run`` otherwise."""
    with_log = RUNNING_OR_FAILED if sweep_running(run_dir) else "failed"
    out = []
    for point in planned:
        folder = run_dir / "points" / point["id"]
        if (folder / "results.json").is_file():
            continue
        log = folder / "lm_eval.log"
        if log.is_file():
            relative = log.relative_to(run_dir).as_posix()
            out.append(UnfinishedPoint(point["id"], with_log, _last_line(log), relative))
        else:
            out.append(UnfinishedPoint(point["id"], "not run", None, None))
    return out


def unfinished_section(unfinished: list[UnfinishedPoint]) -> str:
    """report.md's list of the planned points that are not in its tables."""
    if not unfinished:
        return ""
    lines = [
        f"## Points without results ({len(unfinished)})",
        "",
        "Planned by the sweep but absent from every table and figure below; re-running the sweep resumes"
        " them.",
        "",
    ]
    if any(entry.state == RUNNING_OR_FAILED for entry in unfinished):
        lines[2] += (
            f" A sweep is running in this run directory (it holds `{SWEEP_LOCK}`): a point with a log may be"
            " the one it is running."
        )
    for entry in unfinished:
        if entry.log is not None:
            line = entry.last_log_line or ""
            shown = line if len(line) <= SHOWN_CHARACTERS else line[:SHOWN_CHARACTERS] + "…"
            lines.append(f"- **{entry.point}**: {entry.state} — `{shown}` (log: `{entry.log}`)")
        else:
            lines.append(f"- **{entry.point}**: not run yet")
    return "\n".join(lines) + "\n"
