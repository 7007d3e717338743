"""Planned points of a run that have no results: listed in the report, never left out of it silently."""

from __future__ import annotations

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


def unfinished_points(run_dir: Path, planned: list[dict[str, Any]]) -> list[UnfinishedPoint]:
    """Every planned point (``sweep.json``'s ``points``) without results, in the sweep's order: ``failed``
    when its lm-eval log exists (the last line of the log, typically the error), ``not run`` otherwise."""
    out = []
    for point in planned:
        folder = run_dir / "points" / point["id"]
        if (folder / "results.json").is_file():
            continue
        log = folder / "lm_eval.log"
        if log.is_file():
            relative = log.relative_to(run_dir).as_posix()
            out.append(UnfinishedPoint(point["id"], "failed", _last_line(log), relative))
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
    for entry in unfinished:
        if entry.state == "failed":
            line = entry.last_log_line or ""
            shown = line if len(line) <= SHOWN_CHARACTERS else line[:SHOWN_CHARACTERS] + "…"
            lines.append(f"- **{entry.point}**: failed — `{shown}` (log: `{entry.log}`)")
        else:
            lines.append(f"- **{entry.point}**: not run yet")
    return "\n".join(lines) + "\n"
