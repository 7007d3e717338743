"""``llmkick sweep``: the grid, the command line, a run end to end and its resume (the report's own tests:
test_sweep_report.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmkick_models.workflow.cli import main
from llmkick_models.workflow.sweep_plan import SweepPoint, plan_points, point_args


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


@pytest.mark.e2e
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
