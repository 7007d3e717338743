"""``llmkick report``: paired verdicts, scores trusted only when their samples give them back, the table,
report.json (strict JSON) and the plots."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import compression_report, edit_score, samples_file, write_point, write_sweep

from llmkick_models.engine.methods import build_spec
from llmkick_models.workflow.main_table import markdown_table
from llmkick_models.workflow.run_results import headline_metrics, load_run
from llmkick_models.workflow.sweep_plan import SweepPoint
from llmkick_models.workflow.sweep_report import write_report

FOUR_POINTS = [
    SweepPoint(),
    SweepPoint("magnitude", 0.2),
    SweepPoint("magnitude", 0.5),
    SweepPoint("magnitude", pattern="2:4"),
]


def _fake_run(run_dir: Path) -> None:
    """Dense and three points: 1000 questions (task_a) and 20 perplexity windows (ppl) each."""
    write_sweep(run_dir, FOUR_POINTS, "task_a,ppl")
    values = [(600, 20.0, 0.0), (600, 20.5, 0.2), (300, 90.0, 0.5), (200, 150.0, 0.5)]
    for point, (correct, ppl, sparsity) in zip(FOUR_POINTS, values, strict=True):
        windows = [[-10 * math.log(ppl), 10]] * 20  # every window at the same perplexity
        tasks = {
            "task_a": {"acc": [1] * correct + [0] * (1000 - correct)},
            "ppl": {"word_perplexity": windows, "byte_perplexity": [[ll, 40] for ll, _ in windows]},
        }
        write_point(run_dir, point.point_id, tasks, sparsity=sparsity)


def _rows(text: str) -> dict[str, str]:
    """The rows of the main table (the first table of ``text``), by point id."""
    table = text[text.index("| point | method") :].split("\n\n")[0]
    return {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}


def _report(run_dir: Path) -> tuple[str, dict[str, Any]]:
    """report.md and report.json, the latter parsed strictly: NaN, Infinity are not JSON."""
    report, _ = write_report(run_dir)

    def refuse(name: str) -> None:
        raise ValueError(f"report.json holds {name}, which is not JSON")

    return report.read_text(), json.loads((run_dir / "report.json").read_text(), parse_constant=refuse)


def test_report_table_and_plots(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    points = load_run(tmp_path)
    assert headline_metrics(points[0].results) == {
        "task_a": ("acc,none", 0.6),
        "ppl": ("word_perplexity,none", pytest.approx(20.0)),
    }
    rows = _rows(markdown_table(points))
    assert "0.6 ✓" in rows["magnitude-s0.2"] and "20.5 ✓" in rows["magnitude-s0.2"]
    assert "0.3 ✗" in rows["magnitude-s0.5"] and "90 ✗" in rows["magnitude-s0.5"]
    report, plots = write_report(tmp_path)
    assert {p.name for p in plots} == {"plot_task_a.png", "plot_ppl.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    assert "plot_task_a.png" in report.read_text() and "## Problems" not in report.read_text()


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


def _grouped_point(run_dir: Path, point_id: str, correct: list[int], ppl_ll: list[float]) -> Path:
    """A group of two subtasks (acc), a perplexity task and a judged task with its scores and counter."""
    n = len(correct)
    judged = {
        "coherence": [3.0 + (i + n) % 4 for i in range(12)],
        "fluency": [4.0 - (i + n) % 3 for i in range(12)],
        "judge_unparsed": [0.0] * 12,
    }
    tasks = {
        "grp_a": {"acc": correct[: n // 2]},
        "grp_b": {"acc": correct[n // 2 :]},
        "ppl": {"word_perplexity": [[ll, 10.0] for ll in ppl_ll]},
        "judged": judged,
    }
    folder = write_point(run_dir, point_id, tasks, groups={"grp": ["grp_a", "grp_b"]})
    # An older, failed attempt's samples must not be read.
    (folder / "lm_eval" / "org__model" / "samples_grp_a_2025-01-01T00-00-00.jsonl").write_text(
        '{"doc_id": 0, "acc": 5}\n'
    )
    return folder


def test_planned_points_without_results_are_listed_not_dropped(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    planned = [*FOUR_POINTS, SweepPoint("wanda", 0.5), SweepPoint("gptq", bits=8)]
    write_sweep(tmp_path, planned, "task_a,ppl")
    failed = tmp_path / "points" / "wanda-s0.5"
    failed.mkdir(parents=True)
    log = "Traceback (most recent call last):\n  ...\nValueError: folding failed\n\n"
    (failed / "lm_eval.log").write_text(log)
    text, data = _report(tmp_path)
    assert "## Points without results (2)" in text
    expected = "- **wanda-s0.5**: failed — `ValueError: folding failed` (log: `points/wanda-s0.5/lm_eval.log`"
    assert expected in text
    assert "- **gptq-8bit**: not run yet" in text
    assert data["unfinished"] == [
        {"point": "wanda-s0.5", "state": "failed", "last_log_line": "ValueError: folding failed",
         "log": "points/wanda-s0.5/lm_eval.log"},
        {"point": "gptq-8bit", "state": "not run", "last_log_line": None, "log": None},
    ]  # fmt: skip
    write_sweep(tmp_path, FOUR_POINTS, "task_a,ppl")  # every planned point finished: no such section
    text, data = _report(tmp_path)
    assert "Points without results" not in text and data["unfinished"] == []


def test_a_point_with_a_log_while_a_sweep_holds_the_run_may_be_running(tmp_path: Path) -> None:
    from filelock import FileLock

    _fake_run(tmp_path)
    write_sweep(tmp_path, [*FOUR_POINTS, SweepPoint("wanda", 0.5)], "task_a,ppl")
    (tmp_path / "points" / "wanda-s0.5").mkdir(parents=True)
    (tmp_path / "points" / "wanda-s0.5" / "lm_eval.log").write_text("Running loglikelihood requests:  24%\n")
    with FileLock(str(tmp_path / ".sweep.lock")):  # as a running llmkick sweep holds it
        text, data = _report(tmp_path)
    assert "A sweep is running in this run directory (it holds `.sweep.lock`)" in text
    assert "- **wanda-s0.5**: running or failed — `Running loglikelihood requests:  24%`" in text
    assert data["unfinished"][0]["state"] == "running or failed"
    text, data = _report(tmp_path)  # the sweep is gone: the point failed
    assert "- **wanda-s0.5**: failed — " in text and data["unfinished"][0]["state"] == "failed"


def test_report_pairs_points_with_dense_on_the_same_documents(tmp_path: Path) -> None:
    write_sweep(tmp_path, [SweepPoint(), SweepPoint("magnitude", 0.1), SweepPoint("magnitude", 0.4)])
    dense = [1] * 200 + [0] * 400
    ll = [-20.0 - (i % 5) for i in range(100)]
    _grouped_point(tmp_path, "dense", dense, ll)
    _grouped_point(tmp_path, "magnitude-s0.1", [1] * 190 + [0] * 10 + [0] * 398 + [1] * 2, ll)
    _grouped_point(tmp_path, "magnitude-s0.4", [1] * 100 + [0] * 500, [x * 1.02 for x in ll])
    # A field the sweep adds to its copy of the results (provenance) does not unpair the samples.
    kept = tmp_path / "points" / "magnitude-s0.4" / "results.json"
    kept.write_text(json.dumps({**json.loads(kept.read_text()), "llmkick_provenance": {"commit": "x"}}))
    report, plots = write_report(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema"] == "llmkick-report/1" and data["problems"] == []
    # Top-level entries only (lm-eval lists groups after the tasks); the group's subtasks go to
    # report.json; a judged task shows all its scores.
    assert data["headlines"] == [
        {"task": "ppl", "metric": "word_perplexity"},
        {"task": "judged", "metric": "coherence"},
        {"task": "judged", "metric": "fluency"},
        {"task": "grp", "metric": "acc"},
    ]
    by_id = {p["id"]: p for p in data["points"]}
    assert by_id["dense"]["subtasks"]["grp_a"] == {"acc": pytest.approx(2 / 3)}
    small, large = by_id["magnitude-s0.1"]["comparisons"], by_id["magnitude-s0.4"]["comparisons"]
    assert small["grp"]["acc"]["verdict"] == "inconclusive" and small["grp"]["acc"]["n"] == 600
    assert large["grp"]["acc"]["verdict"] == "not matching"
    assert large["grp"]["acc"]["relative"] == pytest.approx(-0.5) and large["grp"]["acc"]["losses"] == 100
    assert large["ppl"]["word_perplexity"]["relative"] > 0  # perplexity went up, paired per article
    assert small["judged"]["coherence"]["n"] == 12  # judge scores: paired bootstrap over the documents
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


# ---- results trusted only when their samples give them back -------------------------------------------


def test_a_hand_edited_score_gets_no_verdict_and_is_listed_first(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    point = tmp_path / "points" / "magnitude-s0.5"
    results_file = edit_score(point, "task_a", "acc,none", 0.59)  # from 0.3: would read "matching"
    text, data = _report(tmp_path)

    samples = samples_file(point, "task_a")
    [problem] = data["problems"]
    assert problem["point"] == "magnitude-s0.5" and (problem["task"], problem["metric"]) == ("task_a", "acc")
    assert problem["kind"] == "results disagree with samples"
    assert problem["message"] == (
        f"results disagree with samples: {results_file} reports task_a acc,none = 0.59, recomputed from "
        f"{samples}: 0.3"
    )
    by_id = {p["id"]: p for p in data["points"]}
    assert by_id["magnitude-s0.5"]["comparisons"]["task_a"]["acc"] == {
        "verdict": "no verdict", "reason": problem["message"]
    }  # fmt: skip
    # The rest of the report stands: the other points and the other task of the same point.
    assert by_id["magnitude-s0.5"]["comparisons"]["ppl"]["word_perplexity"]["verdict"] == "not matching"
    assert by_id["magnitude-s0.2"]["comparisons"]["task_a"]["acc"]["verdict"] == "matching"
    # Loud: "Problems" comes before the table, and the cell is marked, not given a verdict.
    assert text.index("## Problems (1)") < text.index("| point | method")
    assert f"- **magnitude-s0.5** · task_a acc: {problem['message']}" in text
    row = _rows(text)["magnitude-s0.5"]
    assert "0.59 ⚠" in row and "✓" not in row.split(" | ")[7]
    assert f"no verdict: {problem['message']}" in text


def test_a_hand_edited_dense_score_leaves_every_point_without_a_verdict(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    results_file = edit_score(tmp_path / "points" / "dense", "ppl", "word_perplexity,none", 19.0)
    _, data = _report(tmp_path)
    assert [(p["point"], p["task"], p["metric"]) for p in data["problems"]] == [
        ("dense", "ppl", "word_perplexity")
    ]
    for point in data["points"][1:]:
        reason = point["comparisons"]["ppl"]["word_perplexity"]["reason"]
        assert reason.startswith(f"dense: results disagree with samples: {results_file} reports ppl")


def test_deleted_samples_say_where_they_were_expected(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    point = tmp_path / "points" / "magnitude-2of4"
    samples_file(point, "task_a").unlink()
    shutil.rmtree(tmp_path / "points" / "magnitude-s0.5" / "lm_eval")  # the whole lm-eval output folder
    _, data = _report(tmp_path)

    found = {(p["point"], p["task"]): p for p in data["problems"]}
    missing = f"samples missing: {samples_file(point, 'task_a')}"
    assert found[("magnitude-2of4", "task_a")]["message"] == missing
    assert found[("magnitude-2of4", "task_a")]["metric"] is None  # every metric of the task
    gone = found[("magnitude-s0.5", "task_a")]["message"]
    expected = tmp_path / "points/magnitude-s0.5/lm_eval/org__model/samples_task_a_<date>.jsonl"
    assert gone.startswith(f"samples missing: {expected} (no lm-eval results_<date>.json under ")
    assert ("magnitude-s0.5", "ppl") in found and len(found) == 3
    by_id = {p["id"]: p for p in data["points"]}
    assert by_id["magnitude-2of4"]["comparisons"]["task_a"]["acc"]["reason"].startswith("samples missing: ")
    assert by_id["magnitude-2of4"]["comparisons"]["ppl"]["word_perplexity"]["verdict"] == "not matching"


def test_a_nan_score_gets_no_verdict_and_report_json_stays_json(tmp_path: Path) -> None:
    """A NaN score (here a document's value is NaN in the samples too) reads "not a number", never ✗*,
    and report.json carries null with the reason beside it."""
    _fake_run(tmp_path)
    point = tmp_path / "points" / "magnitude-s0.5"
    write_point(tmp_path / "nan", "p", {"task_a": {"acc": [math.nan] + [1] * 299 + [0] * 700}})
    for name in ("results.json", "lm_eval"):
        target = point / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        shutil.move(tmp_path / "nan" / "points" / "p" / name, target)
    text, data = _report(tmp_path)  # parsed with NaN refused

    by_id = {p["id"]: p for p in data["points"]}
    assert by_id["magnitude-s0.5"]["scores"]["task_a"] == {"acc": None, "acc_reason": "not a number: nan"}
    assert by_id["magnitude-s0.5"]["comparisons"]["task_a"]["acc"] == {
        "verdict": "no verdict", "reason": "score is not a number (nan)"
    }  # fmt: skip
    assert [(p["point"], p["kind"]) for p in data["problems"]] == [("magnitude-s0.5", "not a number")]
    cell = _rows(text)["magnitude-s0.5"].split(" | ")[7]
    assert cell == "nan ⚠"
    assert "no verdict: score is not a number (nan)" in text


def test_an_infinite_perplexity_is_not_a_number_either(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    edit = tmp_path / "points" / "magnitude-2of4"
    shutil.rmtree(edit)
    write_point(tmp_path, "magnitude-2of4", {
        "task_a": {"acc": [1] * 200 + [0] * 800},
        "ppl": {  # a window with a log-likelihood of -inf (a float16 overflow, say)
            "word_perplexity": [[-math.inf, 1], *[[-20.0, 1]] * 19],
            "byte_perplexity": [[-math.inf, 4], *[[-20.0, 4]] * 19],
        },
    })  # fmt: skip
    _, data = _report(tmp_path)
    by_id = {p["id"]: p for p in data["points"]}
    assert by_id["magnitude-2of4"]["scores"]["ppl"] == {
        "word_perplexity": None, "word_perplexity_reason": "not a number: inf"
    }  # fmt: skip
    reason = by_id["magnitude-2of4"]["comparisons"]["ppl"]["word_perplexity"]["reason"]
    assert reason == "score is not a number (inf)"


def test_a_metric_that_cannot_be_recomputed_is_stated_not_passed(tmp_path: Path) -> None:
    write_sweep(tmp_path, FOUR_POINTS[:2])
    for point in FOUR_POINTS[:2]:
        write_point(tmp_path, point.point_id, {"mt": {"bleu": [0.5] * 20}}, recorded={"bleu": "bleu"})
    _, data = _report(tmp_path)
    assert {(p["point"], p["kind"]) for p in data["problems"]} == {
        ("dense", "not recomputable"), ("magnitude-s0.2", "not recomputable")
    }  # fmt: skip
    reason = data["points"][1]["comparisons"]["mt"]["bleu"]["reason"]
    assert reason == (
        "mt bleu,none cannot be recomputed from samples: lm-eval aggregated it with 'bleu', which llmkick "
        "does not redo"
    )


def test_an_unreadable_results_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    _fake_run(tmp_path)
    broken = tmp_path / "points" / "magnitude-s0.5" / "results.json"
    broken.write_text(broken.read_text()[:100])  # cut short, e.g. a full disk
    text, data = _report(tmp_path)
    [problem] = data["problems"]
    assert problem["point"] == "magnitude-s0.5" and problem["kind"] == "unreadable"
    assert problem["message"].startswith(f"results unreadable: {broken}: ")
    assert "## Problems (1)" in text and "0.6 ✓" in _rows(text)["magnitude-s0.2"]


# ---- LLM-KICK's Table 2: quantization method x bits, stored size ------------------------------------------

SHAPE = (256, 512)  # one decoder linear per point; n = 131072 weights, the model twice that
N = SHAPE[0] * SHAPE[1]
TABLE2 = [  # point, its spec, zeros in its linear, FreebaseQA-like answers right of 1000
    (SweepPoint(), build_spec("none").to_dict(), 0, 600),
    (SweepPoint("wanda", 0.5), build_spec("wanda", 0.5).to_dict(), N // 2, 400),
    (SweepPoint("magnitude", pattern="2:4"), build_spec("magnitude", pattern="2:4").to_dict(), N // 2, 350),
    (SweepPoint("gptq", bits=8), build_spec("gptq", bits=8).to_dict(), 0, 598),
    (SweepPoint("gptq", bits=4), build_spec("gptq", bits=4).to_dict(), 0, 450),
    (SweepPoint("rtn", bits=4), build_spec("rtn", bits=4, sym=False).to_dict(), 0, 300),
    # LLM.int8()'s spec has no group_size/sym: one absmax scale per row
    (SweepPoint("llm_int8", bits=8), {"method": "llm_int8", "sparsity": 0.0, "bits": 8}, 0, 600),
]


def _table2_run(run_dir: Path) -> None:
    write_sweep(run_dir, [point for point, *_ in TABLE2], "task_a,ppl")
    for point, spec, zeros, correct in TABLE2:
        ppl = 20.0 * (1 + (600 - correct) / 1000)
        windows = [[-10 * math.log(ppl), 10]] * 20
        tasks = {
            "task_a": {"acc": [1] * correct + [0] * (1000 - correct)},
            "ppl": {"word_perplexity": windows},
        }
        write_point(run_dir, point.point_id, tasks, compression=compression_report(spec, SHAPE, zeros),
                    parameters=2 * N)  # fmt: skip


def test_report_has_the_quantization_table_with_stored_sizes(tmp_path: Path) -> None:
    _table2_run(tmp_path)
    text, data = _report(tmp_path)
    section = text[text.index("## Quantization: method × bits against dense") :].split("\n\n")[1]
    rows = [line.split(" | ") for line in section.splitlines()[2:]]
    assert [(row[0].strip("| "), row[1]) for row in rows] == [
        ("dense", "16"), ("gptq", "8"), ("gptq", "4"), ("rtn", "4"), ("llm_int8", "8")
    ]  # fmt: skip
    # gptq 4-bit g128 symmetric: (4 n + 1024 scales x 16) bits for the linear, the other n parameters at 16
    assert rows[2][2:4] == ["0.6289", "0.2578"]
    by_id = {p["id"]: p for p in data["points"]}
    low, high = by_id["gptq-4bit"]["comparisons"]["task_a"]["acc"]["relative_ci"]  # the main report's
    assert rows[2][4] == f"0.45 · -25.0% [{100 * low:+.1f}%, {100 * high:+.1f}%] ✗"
    assert rows[1][4].startswith("0.598 · -0.3% [") and rows[1][4].endswith("✓")
    [gptq4] = [entry for entry in data["quantization"] if entry["point"] == "gptq-4bit"]
    assert gptq4["stored_size"] == (4 * N + 1024 * 16 + 16 * N) / (32 * N)
    assert gptq4["linears_stored_size"] == (4 * N + 1024 * 16) / (16 * N)
    assert gptq4["tasks"]["task_a"]["acc"]["verdict"] == "not matching"
    assert gptq4["tasks"]["ppl"]["word_perplexity"]["verdict"] == "not matching"
    # LLM.int8(): 8 bits a weight and one 16-bit row scale; asymmetric RTN: + a 4-bit zero point per group
    assert by_id["llm_int8-8bit"]["stored_size"]["linears_relative"] == (8 * N + 256 * 16) / (16 * N)
    assert by_id["rtn-4bit"]["stored_size"]["linears_relative"] == (4 * N + 1024 * 20) / (16 * N)
    assert by_id["wanda-s0.5"]["stored_size"] == {
        "relative": (N // 2 * 16 + N + 16 * N) / (32 * N),
        "linears_relative": 0.5625,
        "index": ["bitmask"],
        "linear_share": 0.5,
    }
    assert by_id["dense"]["stored_size"]["relative"] == 1.0
    assert data["storage_model"].startswith("stored bits relative to every parameter in 16 bits")
    assert f"Stored size: {data['storage_model']}" in text
    assert _rows(text)["magnitude-2of4"].split(" | ")[6] == "0.7812"  # (18/32 + 1) / 2


def test_a_run_without_quantization_points_has_no_quantization_table(tmp_path: Path) -> None:
    _fake_run(tmp_path)  # old-style compression reports: no layers, so no stored size and no size figure
    _, plots = write_report(tmp_path)
    assert "plot_stored_size.png" not in {p.name for p in plots}
    text, data = _report(tmp_path)
    assert "## Quantization" not in text and data["quantization"] == []
    assert data["points"][1]["stored_size"] == {
        "relative": None, "linears_relative": None, "index": [],
        "reason": "no compression report with per-layer shapes in the results", "linear_share": None,
    }  # fmt: skip
    assert _rows(text)["magnitude-s0.2"].split(" | ")[6] == "–"


def test_the_size_figure_puts_pruning_and_quantization_on_one_size_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    drawn: dict[str, list[tuple[str, str, list[float], list[float]]]] = {}  # per panel: its lines
    tops: dict[str, list[tuple[str, tuple[float, float]]]] = {}  # per panel: its second x axis

    def capture(figure: Figure, path: object, *args: object, **kwargs: object) -> None:
        if Path(str(path)).name == "plot_stored_size.png":
            for axis in figure.axes:  # each series is an errorbar container; its first line holds the points
                series = [(c.get_label(), c.lines[0]) for c in axis.containers]
                series += [("dense", line) for line in axis.get_lines() if line.get_marker() == "*"]
                tops[axis.get_title()] = [(child.get_xlabel(), child.get_xlim()) for child in axis.child_axes]
                drawn[axis.get_title()] = [
                    (label, line.get_marker(), list(line.get_xdata()), list(line.get_ydata()))
                    for label, line in series
                ]

    monkeypatch.setattr(Figure, "savefig", capture)
    _table2_run(tmp_path)
    _, plots = write_report(tmp_path)
    assert plots[-1].name == "plot_stored_size.png"
    data = json.loads((tmp_path / "report.json").read_text())
    size = {p["id"]: p["stored_size"]["relative"] for p in data["points"]}
    lines = {label: (marker, xs, ys) for label, marker, xs, ys in drawn["task_a — acc"]}
    assert lines["dense"] == ("*", [1.0], [0.6])
    assert lines["gptq (quantization)"] == ("s", [size["gptq-4bit"], size["gptq-8bit"]], [0.45, 0.598])
    assert lines["llm_int8 (quantization)"] == ("s", [size["llm_int8-8bit"]], [0.6])
    assert lines["wanda (pruning)"] == ("o", [size["wanda-s0.5"]], [0.4])
    assert lines["magnitude (pruning)"] == ("o", [size["magnitude-2of4"]], [0.35])
    assert len(lines) == 6  # dense, and one series per method (rtn's 4 bit)
    assert set(drawn) == {"task_a — acc", "ppl — word_perplexity"}
    # on top, the linears-only ratio: half of this model's parameters are in its linears
    [(label, (low, high))] = tops["task_a — acc"]
    main_low, main_high = 2 * size["gptq-4bit"] - 1, 1.1  # x -> 1 - (1 - x) / 0.5 at the main axis' ends
    assert label == "decoder linears only" and high == pytest.approx(main_high) and low < main_low
