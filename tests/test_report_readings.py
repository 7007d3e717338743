"""The report's readings beyond the verdicts: the documents a point lost, by example; the distinct-token
statistics of generated answers; the paper's per-bin, per-turn and per-category breakdowns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from report_fixtures import write_point, write_sweep

from llmkick_models.workflow.sweep_plan import SweepPoint
from llmkick_models.workflow.sweep_report import write_report

DENSE, POINT = SweepPoint(), SweepPoint("magnitude", 0.5)


def _report(run_dir: Path) -> tuple[str, dict[str, Any]]:
    report, _ = write_report(run_dir)
    return report.read_text(), json.loads((run_dir / "report.json").read_text())


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_the_documents_a_point_lost_are_shown_by_example(tmp_path: Path) -> None:
    write_sweep(tmp_path, [DENSE, POINT], "qa")
    lost_ids = [2, 3, 5, 8, 9, 11, 13]
    dense = [1] * 15 + [0] * 5
    point = [0 if i in lost_ids else 1 for i in range(15)] + [1, 1, 0, 0, 0]  # 7 lost, 2 gained
    for spec, values, name in [(DENSE, dense, "dense"), (POINT, point, "point")]:
        answers = {"qa": [f"{name} says {i}\nsecond | line" for i in range(20)]}
        write_point(tmp_path, spec.point_id, {"qa": {"acc": values}}, answers=answers)
    text, data = _report(tmp_path)
    section = _section(text, "## What was lost, by example")
    assert "### magnitude-s0.5 · qa — acc" in section and "7 documents lost; 5 of them:" in section
    rows = [line for line in section.splitlines() if line.startswith("| #")]
    ids = [int(row.split(" | ")[0].strip("| #")) for row in rows]
    assert len(rows) == 5 and set(ids) <= set(lost_ids) and ids == sorted(ids) and max(ids) >= 10
    doc = ids[0]
    assert rows[0] == (f"| #{doc} | q{doc} | t{doc} | dense says {doc} ⏎ second \\| line | "
                       f"point says {doc} ⏎ second \\| line |")  # fmt: skip
    assert _section(_report(tmp_path)[0], "## What was lost") == section  # the same examples every time
    (lost,) = data["lost"]
    assert (lost["point"], lost["task"], lost["metric"], lost["lost"]) == ("magnitude-s0.5", "qa", "acc", 7)
    assert [d["doc_id"] for d in lost["documents"]] == lost_ids
    assert lost["documents"][5] == {"task": "qa", "doc_id": 11, "question": "q11", "gold": "t11",
                                    "dense_answer": "dense says 11\nsecond | line",
                                    "point_answer": "point says 11\nsecond | line"}  # fmt: skip
