"""The report lists what each point was computed with (versions, dtype, threads), warning when they differ."""

from __future__ import annotations

import json
from pathlib import Path

from llmkick_models.workflow.sweep_plan import SweepPoint
from llmkick_models.workflow.sweep_report import write_report

VERSIONS = {"llmkick": "0.1.0", "llmkick_source_sha256": "ab" * 32, "lm_eval": "0.4.13", "torch": "2.13.0",
            "transformers": "5.25.0", "accelerate": "1.16.0"}  # fmt: skip


def _run(run_dir: Path, stacks: dict[SweepPoint, tuple[dict | None, str, int | None]]) -> None:
    """A finished run whose points have the given (versions, model dtype, threads); ``None``: not recorded."""
    (run_dir / "points").mkdir(parents=True)
    (run_dir / "sweep.json").write_text(json.dumps({"points": [p.as_dict() for p in stacks], "tasks": "t"}))
    for point, (versions, dtype, threads) in stacks.items():
        folder = run_dir / "points" / point.point_id
        folder.mkdir()
        results = {"results": {"t": {"acc,none": 0.5}}, "higher_is_better": {"t": {"acc": True}},
                   "config": {"model_dtype": dtype}}  # fmt: skip
        (folder / "results.json").write_text(json.dumps(results))
        fingerprint: dict = {"point": point.point_id}
        if versions is not None:
            fingerprint["versions"] = versions
        if threads is not None:
            fingerprint["provenance"] = {"threads": threads}
        (folder / "fingerprint.json").write_text(json.dumps(fingerprint))


def test_the_report_lists_each_points_stack(tmp_path: Path) -> None:
    dense, wanda = SweepPoint(), SweepPoint("wanda", 0.5)
    _run(tmp_path, {dense: (VERSIONS, "torch.bfloat16", 2), wanda: (VERSIONS, "torch.bfloat16", 2)})
    report, _plots = write_report(tmp_path)
    text = report.read_text()
    assert "Warning" not in text
    section = text[text.index("## Stack") :]
    assert "Every point has the same stack." in section
    assert (
        "| point | llmkick | llmkick_source_sha256 | lm_eval | torch | transformers | accelerate | dtype | "
        "threads |"
    ) in section
    assert (
        "| wanda-s0.5 | 0.1.0 | abababababab | 0.4.13 | 2.13.0 | 5.25.0 | 1.16.0 | torch.bfloat16 | 2 |"
        in section
    )
    stack = json.loads((tmp_path / "report.json").read_text())["run"]["stack"]
    assert stack["differs"] == [] and stack["points"]["dense"] == {**VERSIONS, "dtype": "torch.bfloat16",
                                                                   "threads": 2}  # fmt: skip


def test_the_report_warns_when_points_differ_in_their_stack(tmp_path: Path) -> None:
    # A --parallel 2 sweep resumed sequentially (threads), a point from an older llmkick (no versions), a
    # point loaded in another dtype.
    points = {
        SweepPoint(): (VERSIONS, "torch.float32", 1),
        SweepPoint("wanda", 0.5): (VERSIONS, "torch.float32", 2),
        SweepPoint("wanda", 0.6): (None, "torch.float32", None),
        SweepPoint("magnitude", 0.5): (VERSIONS, "torch.bfloat16", 1),
    }
    _run(tmp_path, points)
    report, _plots = write_report(tmp_path)
    text = report.read_text()
    warning = (
        "**Warning: the points were not all computed on the same stack; they differ in: llmkick, "
        "llmkick_source_sha256, lm_eval, torch, transformers, accelerate, dtype, threads** (see Stack below)."
    )
    assert warning in text and text.index(warning) < text.index("| point |")  # above the results table
    section = text[text.index("## Stack") :]
    assert (
        "| wanda-s0.6 | " + " | ".join(["not recorded"] * 6) + " | torch.float32 | not recorded |" in section
    )
    stack = json.loads((tmp_path / "report.json").read_text())["run"]["stack"]
    assert stack["differs"] == [*VERSIONS, "dtype", "threads"]
    assert stack["points"]["wanda-s0.6"]["torch"] is None
    assert [stack["points"][p]["threads"] for p in ("dense", "wanda-s0.5", "magnitude-s0.5")] == [1, 2, 1]


def test_versions_an_older_llmkick_did_not_record_are_shown_and_never_called_the_same(tmp_path: Path) -> None:
    # Folders written before torch, transformers and accelerate entered the fingerprint.
    older = {name: VERSIONS[name] for name in ("llmkick", "llmkick_source_sha256", "lm_eval")}
    _run(
        tmp_path,
        {SweepPoint(): (older, "torch.float32", 1), SweepPoint("wanda", 0.5): (older, "torch.float32", 1)},
    )
    report, _plots = write_report(tmp_path)
    section = report.read_text()[report.read_text().index("## Stack") :]
    assert "Every point has the same stack" not in section
    assert (
        "Not recorded for some points (written by an older llmkick): torch, transformers, accelerate; "
        "whether they were the same is unknown." in section
    )
    assert (
        "| point | llmkick | llmkick_source_sha256 | lm_eval | torch | transformers | accelerate |" in section
    )
    assert (
        "| wanda-s0.5 | 0.1.0 | abababababab | 0.4.13 | not recorded | not recorded | not recorded |"
        in section
    )
    stack = json.loads((tmp_path / "report.json").read_text())["run"]["stack"]
    assert stack["not_recorded"] == ["torch", "transformers", "accelerate"] and stack["differs"] == []
