"""Finished sweep points that cannot be reused: computed with other settings than the plan's, or with
results that their logged samples do not give back."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from llmkick_models.workflow.fingerprints import fingerprint_changes
from llmkick_models.workflow.preflight import SweepPlan


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stale_points(plan: SweepPlan, run_dir: Path) -> dict[str, list[str]]:
    """Finished points that cannot be reused, with why: their stored fingerprint differs from the plan's,
    or their results do not match the samples logged with them (:func:`untrusted_results`)."""
    stale = {}
    for point in plan.points:
        folder = run_dir / "points" / point.point_id
        if (folder / "results.json").is_file():
            changes = fingerprint_changes(
                _read_json(folder / "fingerprint.json"), plan.fingerprints[point.point_id]
            ) or untrusted_results(folder)
            if changes:
                stale[point.point_id] = changes
    return stale


def untrusted_results(point_dir: Path) -> list[str]:
    """Why a finished point's ``results.json`` cannot be reused: a score its samples do not give back,
    samples missing, results unreadable (empty when sound).  A score that cannot be recomputed from its
    samples is reused, with a warning on stderr naming it."""
    from llmkick_models.workflow.sample_checks import NOT_RECOMPUTABLE, PointCheck

    results_file = point_dir / "results.json"
    results = _read_json(results_file)
    if not isinstance(results, dict):
        return [f"results unreadable: {results_file} is not a JSON object"]
    check = PointCheck(point_dir, results, results_file)
    for finding in check.findings:
        if finding.kind == NOT_RECOMPUTABLE:
            print(f"llmkick sweep: warning: {point_dir.name}: {finding.task}: {finding.message}; reused as "
                  "reported", file=sys.stderr, flush=True)  # fmt: skip
    return [finding.message for finding in check.problems()]


def describe_stale(stale: dict[str, list[str]], run_dir: Path) -> str:
    """The refusal message: which points, what changed (or which results disagree), what to do."""
    lines = [
        f"{run_dir} holds results that cannot be reused (computed with different settings, or not matching "
        "the samples logged with them); nothing was run:"
    ]
    for point_id, changes in stale.items():
        lines.append(f"  {point_id}: " + "; ".join(changes[:6]) + (" ..." if len(changes) > 6 else ""))
    lines.append("Re-run with --rerun to recompute these points, or choose another --output.")
    return "\n".join(lines)
