"""``llmkick sweep`` / ``report``: the grid, resumability, the matching verdict, table and plots."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmkick_models.workflow.cli import main
from llmkick_models.workflow.run_results import headline_metrics, load_run, matches
from llmkick_models.workflow.sweep_plan import SweepPoint, plan_points, point_args
from llmkick_models.workflow.sweep_report import markdown_table, write_report


def test_plan_points_grid_and_ids() -> None:
    points = plan_points(["magnitude"], sparsities=[0, 0.3, 0.5], patterns=["2:4"])
    assert [p.point_id for p in points] == ["dense", "magnitude-s0.3", "magnitude-s0.5", "magnitude-2of4"]
    assert points[3].model_args() == "method=magnitude,pattern=2:4"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["magic"], "sparsities": [0.5]}, "unknown method 'magic'"),
        ({"methods": ["magnitude"]}, "no --sparsities/--patterns/--bits"),
    ],
)
def test_plan_points_refuses_bad_grids(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_points(**kwargs)


def test_cli_rejects_bad_values_before_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--sparsities", "1.5"], ["--patterns", "3:2"]):
        with pytest.raises(SystemExit):
            main(
                [
                    "sweep",
                    "--model",
                    "m",
                    "--methods",
                    "magnitude",
                    "--tasks",
                    "t",
                    "--output",
                    str(tmp_path),
                    *bad,
                ]
            )
    errors = capsys.readouterr().err
    assert "sparsity='1.5'" in errors and "pattern='3:2'" in errors
    assert not (tmp_path / "sweep.json").exists()


def test_compression_args_only_reach_methods_that_take_them() -> None:
    point = SweepPoint("magnitude", sparsity=0.5)
    args = point_args(point, "pretrained=m,dtype=float32", {"percdamp": "0.1"})
    assert args == "pretrained=m,dtype=float32,method=magnitude,sparsity=0.5"  # magnitude has no Hessian
    assert point_args(SweepPoint("none"), "pretrained=m", {"percdamp": "0.1"}) == "pretrained=m,method=none"


def _fake_results(value: float, ppl: float, sparsity: float) -> dict:
    return {
        "results": {
            "task_a": {"alias": "task_a", "acc,none": value, "acc_stderr,none": 0.01},
            "ppl": {"word_perplexity,none": ppl, "byte_perplexity,none": 1.5},
        },
        "higher_is_better": {"task_a": {"acc": True}, "ppl": {"word_perplexity": False}},
        "config": {"llmkick_compression": {"overall_sparsity": sparsity}},
    }


def _fake_run(run_dir: Path) -> None:
    points = [
        SweepPoint(),
        SweepPoint("magnitude", 0.2),
        SweepPoint("magnitude", 0.5),
        SweepPoint("magnitude", pattern="2:4"),
    ]
    values = [(0.60, 20.0, 0.0), (0.58, 20.5, 0.2), (0.30, 90.0, 0.5), (0.20, 150.0, 0.5)]
    (run_dir / "points").mkdir(parents=True)
    (run_dir / "sweep.json").write_text(
        json.dumps({"points": [p.as_dict() for p in points], "tasks": "task_a,ppl"})
    )
    for point, (acc, ppl, sparsity) in zip(points, values, strict=True):
        folder = run_dir / "points" / point.point_id
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(_fake_results(acc, ppl, sparsity)))


def test_matching_follows_the_papers_five_percent() -> None:
    assert matches(0.57, 0.60, higher_is_better=True)  # 95% of dense
    assert not matches(0.56, 0.60, higher_is_better=True)
    assert matches(21.0, 20.0, higher_is_better=False)  # perplexity: lower is better
    assert not matches(21.1, 20.0, higher_is_better=False)
    assert matches(0.0, 0.0, higher_is_better=True) is None  # a dense score of 0 gives no verdict


def test_report_table_and_plots(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    points = load_run(tmp_path)
    assert headline_metrics(points[0].results) == {
        "task_a": ("acc,none", 0.6),
        "ppl": ("word_perplexity,none", 20.0),
    }
    table = markdown_table(points)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "0.58 ✓" in rows["magnitude-s0.2"] and "20.5 ✓" in rows["magnitude-s0.2"]
    assert "0.3 ✗" in rows["magnitude-s0.5"] and "90 ✗" in rows["magnitude-s0.5"]
    report, plots = write_report(tmp_path)
    assert {p.name for p in plots} == {"plot_task_a.png", "plot_ppl.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    assert "plot_task_a.png" in report.read_text()


def test_plot_axes_read_as_percent_changes_and_plain_perplexities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a reader sees on the plots: the change-from-dense axis labelled in signed percents, perplexity
    on a log axis in plain numbers (10, 100, 1000), not powers of ten."""
    import re

    from matplotlib.figure import Figure

    labels: dict[str, list[tuple[str, list[str]]]] = {}  # per file: (y label, tick labels) per axis

    def capture(figure: Figure, path: object, *args: object, **kwargs: object) -> None:
        figure.canvas.draw()
        labels[Path(str(path)).name] = [
            (axis.get_ylabel(), [t.get_text() for t in axis.get_yticklabels() if t.get_text()])
            for axis in figure.axes
        ]

    def ticks(plot: str, is_axis: Callable[[str], bool]) -> list[list[str]]:
        return [texts for ylabel, texts in labels[plot] if is_axis(ylabel)]

    monkeypatch.setattr(Figure, "savefig", capture)
    _fake_run(tmp_path)
    write_report(tmp_path)
    percent = re.compile(r"[+-]\d+%|0")
    for plot in ("plot_ppl.png", "plot_task_a.png"):
        change = ticks(plot, lambda ylabel: ylabel == "change from dense (%)")
        assert change and all(texts and all(percent.fullmatch(t) for t in texts) for texts in change), change
    perplexity = ticks("plot_ppl.png", lambda ylabel: "perplexity" in ylabel)
    assert perplexity and all(re.fullmatch(r"\d+(\.\d+)?", t) for texts in perplexity for t in texts), (
        perplexity
    )


def test_sweep_end_to_end_and_resume(tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "llmkick_models.workflow.cli", "sweep", "--model", str(tiny_llama_dir),
        "--methods", "magnitude", "--sparsities", "0,0.5", "--patterns", "2:4",
        "--tasks", "local_fixture_choice", "--output", str(run_dir),
        "--include_path", str(local_task_dir), "--device", "cpu", "--limit", "4",
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert first.returncode == 0, first.stderr[-3000:]
    results = sorted(run_dir.glob("points/*/results.json"))
    assert [p.parent.name for p in results] == ["dense", "magnitude-2of4", "magnitude-s0.5"]
    report = json.loads((run_dir / "points" / "magnitude-2of4" / "results.json").read_text())
    assert report["config"]["llmkick_compression"]["overall_sparsity"] == 0.5
    assert (run_dir / "report.md").is_file() and (run_dir / "plot_local_fixture_choice.png").is_file()
    # 4 documents cannot show a 5% change either way: every paired verdict is inconclusive (or none, when
    # dense scores 0), and the comparison really was paired (samples logged by the sweep).
    data = json.loads((run_dir / "report.json").read_text())
    compared = [p["comparisons"]["local_fixture_choice"]["acc"] for p in data["points"] if p["id"] != "dense"]
    assert len(compared) == 2 and all(c["n"] == 4 for c in compared)
    for comparison in compared:
        assert comparison["verdict"] == ("no verdict" if comparison["dense"] == 0 else "inconclusive")
    stamps = {p: p.stat().st_mtime_ns for p in results}

    second = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("done earlier, skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in results} == stamps


def _write_point_with_samples(run_dir: Path, point_id: str, correct: list[int], ppl_ll: list[float]) -> None:
    """A point as the sweep leaves it: results.json plus lm-eval's results/samples files of that run."""
    n = len(correct)
    subjects = {"grp_a": correct[: n // 2], "grp_b": correct[n // 2 :]}
    words = [10.0] * len(ppl_ll)
    ppl = math.exp(-sum(ppl_ll) / sum(words))
    results = {
        "results": {
            "grp": {"alias": "grp", "acc,none": sum(correct) / n},
            **{name: {"alias": name, "acc,none": sum(v) / len(v)} for name, v in subjects.items()},
            "ppl": {"word_perplexity,none": ppl},
            "judged": {"coherence,none": 3.0, "fluency,none": 4.0, "coherence_short,none": 2.0,
                       "judge_unparsed,none": 0.0},
        },
        "group_subtasks": {"grp": ["grp_a", "grp_b"], "ppl": [], "judged": []},
        "higher_is_better": {"grp": {"acc": True}, "ppl": {"word_perplexity": False}},
        "config": {"llmkick_compression": {"overall_sparsity": 0.0}},
        "date": 1764500000.0 + n,
    }  # fmt: skip
    folder = run_dir / "points" / point_id
    raw = folder / "lm_eval" / "model"
    raw.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(results))
    (raw / "results_2026-01-01T00-00-00.json").write_text(json.dumps(results))
    for name, values in subjects.items():
        lines = [json.dumps({"doc_id": i, "filter": "none", "acc": v}) for i, v in enumerate(values)]
        (raw / f"samples_{name}_2026-01-01T00-00-00.jsonl").write_text("\n".join(lines) + "\n")
    lines = [json.dumps({"doc_id": i, "filter": "none", "word_perplexity": [ll, 10.0]}) for i, ll in
             enumerate(ppl_ll)]  # fmt: skip
    (raw / "samples_ppl_2026-01-01T00-00-00.jsonl").write_text("\n".join(lines) + "\n")
    # An older, failed attempt's samples must not be read.
    (raw / "samples_grp_a_2025-01-01T00-00-00.jsonl").write_text('{"doc_id": 0, "acc": 5}\n')


def test_report_pairs_points_with_dense_on_the_same_documents(tmp_path: Path) -> None:
    points = [SweepPoint(), SweepPoint("magnitude", 0.1), SweepPoint("magnitude", 0.4)]
    (tmp_path / "sweep.json").write_text(json.dumps({"points": [p.as_dict() for p in points], "tasks": "x"}))
    dense = [1] * 200 + [0] * 400
    ll = [-20.0 - (i % 5) for i in range(100)]
    _write_point_with_samples(tmp_path, "dense", dense, ll)
    _write_point_with_samples(tmp_path, "magnitude-s0.1", [1] * 190 + [0] * 10 + [0] * 398 + [1] * 2, ll)
    _write_point_with_samples(tmp_path, "magnitude-s0.4", [1] * 100 + [0] * 500, [x * 1.02 for x in ll])
    # A field the sweep adds to its copy of the results (provenance) does not unpair the samples.
    kept = tmp_path / "points" / "magnitude-s0.4" / "results.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "llmkick_provenance": {"commit": "x"}}))
    report, plots = write_report(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema"] == "llmkick-report/1"
    # Top-level entries only; the group's subtasks go to report.json; a judged task shows all its scores.
    assert data["headlines"] == [
        {"task": "grp", "metric": "acc"},
        {"task": "ppl", "metric": "word_perplexity"},
        {"task": "judged", "metric": "coherence"},
        {"task": "judged", "metric": "fluency"},
    ]
    by_id = {p["id"]: p for p in data["points"]}
    assert by_id["dense"]["subtasks"]["grp_a"] == {"acc": pytest.approx(2 / 3)}
    small, large = by_id["magnitude-s0.1"]["comparisons"], by_id["magnitude-s0.4"]["comparisons"]
    assert small["grp"]["acc"]["verdict"] == "inconclusive" and small["grp"]["acc"]["n"] == 600
    assert large["grp"]["acc"]["verdict"] == "not matching"
    assert large["grp"]["acc"]["relative"] == pytest.approx(-0.5) and large["grp"]["acc"]["losses"] == 100
    assert large["ppl"]["word_perplexity"]["relative"] > 0  # perplexity went up, paired per article
    assert "no per-document samples of judged" in small["judged"]["coherence"]["reason"]
    text = report.read_text()
    assert "| magnitude-s0.4 | 600 | 0.3333 | 0.1667 |" in text and "-50.0% [" in text
    assert "0.1667 ✗" in text and "0.32 ~" in text
    table_header = next(line for line in text.splitlines() if line.startswith("| point | method"))
    assert "grp_a" not in table_header and "judged (fluency)" in table_header
    assert {p.name for p in plots} == {
        "plot_grp.png",
        "plot_ppl.png",
        "plot_judged_coherence.png",
        "plot_judged_fluency.png",
    }
