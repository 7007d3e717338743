"""The report's readings beyond the verdicts: the documents a point lost, by example; the distinct-token
statistics of generated answers; the paper's per-bin, per-turn and per-category breakdowns."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import write_point, write_sweep

from llmkick_models.workflow.answers import Answer, logged_answer
from llmkick_models.workflow.distinct_tokens import answer_statistics
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


def test_distinct_tokens_of_the_answers_beside_the_score(tmp_path: Path) -> None:
    write_sweep(tmp_path, [DENSE, POINT], "qa,mc")
    dense = ["Alpha beta, gamma delta alpha beta"] * 12  # 6 words, 4 distinct, 4 of 5 bigrams distinct
    point = ["Yes."] + ["the the the the"] * 11  # 1 word (no bigram); then 4 words, 1 distinct, 1 of 3
    for spec, answers in [(DENSE, dense), (POINT, point)]:
        tasks = {"qa": {"acc": [1, 0] * 6}, "mc": {"acc": [1, 0] * 6}}
        write_point(tmp_path, spec.point_id, tasks, answers={"qa": answers})  # mc: not a generation task
    text, data = _report(tmp_path)
    section = _section(text, "## Distinct tokens of generated answers")
    assert "### mc" not in section and "regular expression \\w+" in section
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["dense"] == "| dense | 0.5 | 6 | 4 | 0.8 |"
    cells = rows["magnitude-s0.5"].split(" | ")
    assert cells[1] == "0.5" and cells[2].startswith("3.75 · -37.5% [")
    assert cells[3] == "1 · -75.0% [-75.0%, -75.0%]"
    assert cells[4] == "0.3333 · -58.3% [-58.3%, -58.3%] (1 left out) |"
    found = data["distinct_tokens"]["tasks"]
    assert set(found) == {"qa"} and found["qa"]["dense"] == {
        "tokens": 6,
        "unique_tokens": 4,
        "distinct_2": pytest.approx(0.8),
    }
    unique = found["qa"]["points"]["magnitude-s0.5"]["unique_tokens"]
    assert unique["documents"] == 12 and unique["comparison"]["relative"] == -0.75
    assert "verdict" not in unique["comparison"]  # a reading, not a matching verdict
    assert found["qa"]["points"]["magnitude-s0.5"]["distinct_2"]["left_out"] == 1


def test_a_multi_turn_answer_counts_the_mean_of_its_turns() -> None:
    stats = answer_statistics(Answer("q", None, ["A b", "c, C c"]))
    assert stats == {"tokens": 2.5, "unique_tokens": 1.5, "distinct_2": 0.75}  # turns: 1 of 1, 1 of 2
    assert answer_statistics(Answer("q", None, ""))["distinct_2"] is None


def test_the_papers_readings_by_group_with_paired_intervals_and_the_per_bin_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    titles: dict[str, list[str]] = {}
    save = Figure.savefig

    def capture(figure: Figure, path: object, *args: object, **kwargs: object) -> None:
        titles[Path(str(path)).name] = [axis.get_title() for axis in figure.axes if axis.get_visible()]
        save(figure, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    points = [DENSE, SweepPoint("magnitude", 0.5), SweepPoint("wanda", 0.5)]
    write_sweep(tmp_path, points, "summ,qa")
    small, large = list(range(12)), list(range(12, 24))
    # wanda: the large stories lose 0.6 of every second one, -3.75% [about -6%, -2%]: inconclusive.
    for spec, large_scores in zip(points, [(8.0, 8.0), (4.0, 4.0), (8.0, 7.4)], strict=True):
        coherence = [8.0 if i in small else large_scores[i % 2] for i in range(24)]
        summ = {
            "coherence": coherence,
            "coherence_small": [coherence[i] if i in small else None for i in range(24)],
            "coherence_large": [coherence[i] if i in large else None for i in range(24)],
            "coherence_delta": [v - 7 for v in coherence],
            "judge_unparsed": [0.0] * 24,
        }
        qa = {"acc": [1, 0] * 12, "acc_norm": [1, 1, 0] * 8}  # not judged: acc_norm is no group
        write_point(tmp_path, spec.point_id, {"summ": summ, "qa": qa}, judged={"summ": "summarization"})
    text, data = _report(tmp_path)
    section = _section(text, "## The paper's readings: scores by group")
    assert "### summ — coherence by group" in section and "qa" not in section and "delta" not in section
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["point"] == "| point | small | large |" and rows["dense"] == "| dense | 8 | 8 |"
    assert (
        rows["magnitude-s0.5"]
        == "| magnitude-s0.5 | 8 · +0.0% [+0.0%, +0.0%] ✓ | 4 · -50.0% [-50.0%, -50.0%] ✗ |"
    )
    decide = re.search(
        r"\| 7\.7 · -3\.\d% \[-\d\.\d%, -\d\.\d%\] ~ \(~(\d+) → matching\) \|$", rows["wanda-s0.5"]
    )
    assert decide is not None, rows["wanda-s0.5"]
    small_entry, large_entry = data["readings"]
    assert (
        small_entry["group"] == "small"
        and small_entry["comparisons"]["magnitude-s0.5"]["verdict"] == "matching"
    )
    assert (large_entry["task"], large_entry["criterion"], large_entry["group"]) == (
        "summ",
        "coherence",
        "large",
    )
    assert large_entry["scores"] == {"dense": 8.0, "magnitude-s0.5": 4.0, "wanda-s0.5": pytest.approx(7.7)}
    to_decide = large_entry["comparisons"]["wanda-s0.5"]["to_decide"]
    assert to_decide == {"documents": int(decide[1]), "verdict": "matching", "power": 0.8}
    assert large_entry["comparisons"]["magnitude-s0.5"]["n"] == 12
    assert large_entry["comparisons"]["magnitude-s0.5"]["relative"] == -0.5
    assert "![plot_summ_by_group](plot_summ_by_group.png)" in text
    assert titles["plot_summ_by_group.png"] == ["coherence — small", "coherence — large"]
    assert (tmp_path / "plot_summ_by_group.png").read_bytes().startswith(b"\x89PNG")


def test_the_answer_is_read_as_the_task_logged_it() -> None:
    judged = {"response": "A short summary.", "judgments": [], "scores": None}
    assert logged_answer({"resps": [["raw"]], "filtered_resps": [json.dumps(judged)]}) == "A short summary."
    two_turns = {"response": {"turns": ["first", "second"], "turn_2_context": []}, "judgments": []}
    assert logged_answer({"resps": [["x"]], "filtered_resps": [json.dumps(two_turns)]}) == ["first", "second"]
    choices = {"doc": {"choices": ["x", "y"]}, "filtered_resps": [[-2.0, False], [-0.5, True]]}
    assert logged_answer(choices) == "B. y"
    assert logged_answer({"resps": [["raw text"]], "filtered_resps": ["filtered"]}) == "filtered"
