"""What each point of a run was computed with: library versions, the model's dtype, CPU threads.

The versions are part of a point's fingerprint, so a resume on another stack is refused; the thread count is
``provenance``, recorded but never compared (a ``--parallel N`` sweep and a sequential one resume each
other on purpose); the dtype actually loaded is lm-eval's ``config.model_dtype`` in the results.  Points may
still differ (threads; folders written before a field was recorded), so the report lists every point's
stack and warns when they differ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llmkick_models.workflow.fingerprints import PROVENANCE_KEY, VERSION_FIELDS
from llmkick_models.workflow.run_results import PointResult

NOT_RECORDED = "not recorded"
#: Shown after the versions: the dtype lm-eval loaded the model in, the CPU threads of the point's worker.
RECORDED = ("dtype", "threads")


def _fingerprint(point: PointResult) -> dict[str, Any]:
    if point.point_dir is None:
        return {}
    try:
        data = json.loads((point.point_dir / "fingerprint.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _point_stack(point: PointResult) -> dict[str, Any]:
    """The versions of the point's fingerprint, the dtype lm-eval loaded and the recorded threads."""
    fingerprint = _fingerprint(point)
    recorded = (
        point.results.get("config", {}).get("model_dtype"),
        (fingerprint.get(PROVENANCE_KEY) or {}).get("threads"),
    )
    return {**(fingerprint.get("versions") or {}), **dict(zip(RECORDED, recorded, strict=True))}


def run_stack(points: Sequence[PointResult]) -> dict[str, Any]:
    """``{"fields": [...], "points": {id: {field: value}}, "differs": [fields], "not_recorded": [fields]}``;
    a value is ``None`` where the point's folder does not record it (written by an older llmkick).

    Every version this llmkick records is a field, recorded or not, so that a run whose points all predate
    one never looks as if they agreed on it; ``not_recorded`` lists the fields some point lacks."""
    found = {point.point["id"]: _point_stack(point) for point in points}
    versions = dict.fromkeys(
        [*VERSION_FIELDS, *(name for stack in found.values() for name in stack if name not in RECORDED)]
    )
    fields = [*versions, *RECORDED]
    stacks = {point_id: {name: stack.get(name) for name in fields} for point_id, stack in found.items()}
    differs = [name for name in fields if len({json.dumps(s[name]) for s in stacks.values()}) > 1]
    not_recorded = [name for name in fields if any(s[name] is None for s in stacks.values())]
    return {"fields": fields, "points": stacks, "differs": differs, "not_recorded": not_recorded}


def _cell(name: str, value: Any) -> str:
    if value is None:
        return NOT_RECORDED
    text = str(value)
    return text[:12] if name.endswith("sha256") else text


def stack_warning(stack: dict[str, Any]) -> str | None:
    """One bold line when the points were not all computed on the same stack (``None`` when they were)."""
    if not stack["differs"]:
        return None
    return (
        f"**Warning: the points were not all computed on the same stack; they differ in: "
        f"{', '.join(stack['differs'])}** (see Stack below). A difference between two points may come from "
        "this as well as from their compression."
    )


def stack_section(stack: dict[str, Any]) -> str:
    """report.md's "Stack" section: one row per point (the warning, if any, goes at the top of the report)."""
    fields = stack["fields"]
    differs = stack["differs"]
    unknown = stack["not_recorded"]
    summary = [f"The points differ in: {', '.join(differs)}."] if differs else []
    if unknown:
        summary.append(
            f"Not recorded for some points (written by an older llmkick): {', '.join(unknown)}; whether they "
            "were the same is unknown."
        )
    lines = ["## Stack", "", " ".join(summary) or "Every point has the same stack.", ""]
    lines += ["| point | " + " | ".join(fields) + " |", "|" + "---|" * (len(fields) + 1)]
    for point_id, values in stack["points"].items():
        lines.append(f"| {point_id} | " + " | ".join(_cell(name, values[name]) for name in fields) + " |")
    return "\n".join(lines) + "\n"
