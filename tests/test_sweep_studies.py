"""``llmkick sweep`` studies: --grid axes, scoped --compress_args, joint prune-then-quantize points, the
llmkick-paper preset and --dry-run; the report's table and figure per axis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_fixtures import write_point, write_sweep

from llmkick_models.engine.methods import METHODS
from llmkick_models.workflow.cli import main
from llmkick_models.workflow.fingerprints import fingerprint_changes, point_fingerprint
from llmkick_models.workflow.grid_axes import check_axes
from llmkick_models.workflow.model_grid import model_identities, per_model
from llmkick_models.workflow.preflight import check_compress_args
from llmkick_models.workflow.run_results import comparisons, load_run
from llmkick_models.workflow.study_args import parse_compress_args
from llmkick_models.workflow.sweep_plan import SweepError, plan_grid, point_args
from llmkick_models.workflow.sweep_report import write_report
from llmkick_tasks.errors import UserError


def _ids(grid: object) -> list[str]:
    return [p.point_id for p in grid.points]  # type: ignore[attr-defined]


def test_a_grid_axis_crosses_the_points_of_the_methods_that_take_it() -> None:
    axes = check_axes([("group_size", ["64", "128"])], ["wanda", "gptq"])
    grid = plan_grid(["wanda", "gptq"], sparsities=[0.5], bits=[4], axes=axes)
    # wanda takes group_size only when it quantizes: its pruned-only point is not crossed
    assert _ids(grid) == [
        "dense", "wanda-s0.5", "wanda-s0.5-4bit-group_size_64", "wanda-s0.5-4bit-group_size_128",
        "gptq-4bit-group_size_64", "gptq-4bit-group_size_128",
    ]  # fmt: skip
    point = grid.points[2]
    assert point.model_args() == "method=wanda,sparsity=0.5,bits=4,group_size=64"
    assert point.as_dict()["axes"] == {"group_size": "64"}
    assert point.series == "wanda+4bit group_size=64"


def test_a_changed_axis_value_is_another_point_and_its_fingerprint_names_it() -> None:
    eight, sixteen = (
        plan_grid(["wanda"], sparsities=[0.5], axes=check_axes([("nsamples", [n])], ["wanda"])).points[1]
        for n in ("8", "16")
    )
    assert (eight.point_id, sixteen.point_id) == ("wanda-s0.5-nsamples_8", "wanda-s0.5-nsamples_16")
    before = point_fingerprint(eight, {}, "pretrained=m", {"calibration": "c4"})
    assert before["model_args"]["nsamples"] == "8" and before["model_args"]["calibration"] == "c4"
    assert (
        fingerprint_changes(before, point_fingerprint(eight, {}, "pretrained=m", {"calibration": "c4"})) == []
    )


@pytest.mark.parametrize(
    ("given", "methods", "message"),
    [
        ([("int8_threshold", ["6"])], ["gptq"], r"^--grid int8_threshold: no method of --methods \(gptq\) "
         r"takes int8_threshold; methods that take it: llm_int8$"),
        ([("nsample", ["8"])], ["wanda"], r"^--grid: unknown option 'nsample'; did you mean 'nsamples'\?"),
        ([("sparsity", ["0.1"])], ["wanda"], r"^--grid sparsity: sparsity has its own flag"),
        ([("nsamples", ["0"])], ["wanda"],
         r"^--grid nsamples=0 \(method wanda\): nsamples='0' is out of range"),
        ([("sym", ["true", "yes"])], ["gptq"], r"^--grid sym: value 'yes' given twice \(as 'true'\)"),
        ([("nsamples", ["8"]), ("nsamples", ["16"])], ["wanda"], r"^--grid nsamples: given twice"),
    ],
)  # fmt: skip
def test_bad_grid_axes_are_refused_naming_grid(given: list, methods: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        check_axes(given, methods)


def test_an_axis_value_is_checked_with_the_compress_args_it_receives() -> None:
    axes = check_axes([("nsamples", ["8"])], ["magnitude"])
    with pytest.raises(
        SweepError, match=r"^point magnitude-s0.5-nsamples_8: nsamples='8' needs calibration="
    ):
        plan_grid(["magnitude"], sparsities=[0.5], axes=axes)
    grid = plan_grid(
        ["magnitude"], sparsities=[0.5], axes=axes, compress_args={"magnitude:calibration": "c4"}
    )
    assert _ids(grid) == ["dense", "magnitude-s0.5-nsamples_8"]


def test_a_grid_axis_also_in_compress_args_is_refused() -> None:
    with pytest.raises(UserError, match=r"^--grid nsamples: also set by --compress_args nsamples="):
        check_axes([("nsamples", ["8"])], ["wanda"], {"nsamples"})


def test_pruning_methods_with_bits_get_joint_prune_then_quantize_points() -> None:
    grid = plan_grid(["wanda", "gptq"], sparsities=[0.5], patterns=["2:4"], bits=[4])
    assert _ids(grid) == [
        "dense",
        "wanda-s0.5",
        "wanda-2of4",
        "wanda-s0.5-4bit",
        "wanda-2of4-4bit",
        "gptq-4bit",
    ]
    assert grid.points[3].model_args() == "method=wanda,sparsity=0.5,bits=4"
    assert grid.notes == []
    assert _ids(plan_grid(["wanda"], sparsities=[0.5], bits=[4], joint=False)) == ["dense", "wanda-s0.5"]


def test_scoped_compress_args_reach_their_method_over_the_unscoped_ones() -> None:
    args = parse_compress_args("calibration=c4,nsamples=64") | parse_compress_args(
        "gptq:calibration=wikitext2,sym=false"
    )
    assert args == {
        "calibration": "c4",
        "nsamples": "64",
        "gptq:calibration": "wikitext2",
        "gptq:sym": "false",
    }
    grid = plan_grid(["wanda", "gptq"], sparsities=[0.5], bits=[4], joint=False)
    wanda, gptq = grid.points[1], grid.points[2]
    assert point_args(wanda, "pretrained=m", args) == (
        "pretrained=m,method=wanda,sparsity=0.5,calibration=c4,nsamples=64"
    )
    assert point_args(gptq, "pretrained=m", args) == (
        "pretrained=m,method=gptq,bits=4,calibration=wikitext2,nsamples=64,sym=false"
    )
    with pytest.raises(
        SweepError, match=r"^--compress_args sparsegpt:nsamples=: method sparsegpt is not in "
    ):
        check_compress_args(grid.points, {"sparsegpt:nsamples": "8"})
    refused = r"^--compress_args wanda:int8_threshold=: method wanda does not take int8_threshold; methods "
    with pytest.raises(SweepError, match=refused + "that take it: llm_int8$"):
        check_compress_args(grid.points, {"wanda:int8_threshold": "6"})
    with pytest.raises(SweepError, match=r"^--compress_args gptq:sparsity=: sparsity is a sweep axis"):
        check_compress_args(grid.points, {"gptq:sparsity": "0.5"})


def _sweep(tmp_path: Path, *extra: str) -> list[str]:
    return ["sweep", "--model", "m", "--output", str(tmp_path / "run"), *extra]


def test_repeated_compress_args_are_merged_and_a_scope_outside_the_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(_sweep(tmp_path, "--methods", "wanda", "--sparsities", "0.5", "--tasks", "t", "--compress_args",
                    "nsamples=8", "--compress_args", "gptq:calibration=wikitext2"))  # fmt: skip
    assert (
        "--compress_args gptq:calibration=: method gptq is not in --methods (wanda)"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "run").exists()


def test_the_paper_preset_expands_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmkick_models.workflow.study_plan import paper_preset

    preset = paper_preset()
    assert preset.methods == ["magnitude", "sparsegpt", "wanda", "gptq", "awq", "llm_int8"]
    assert preset.patterns == ["2:4", "4:8"] and preset.sparsities[-1] == 0.5 and 8 in preset.bits
    assert preset.compress_args == {"sparsegpt:calibration": "c4", "wanda:calibration": "c4",
                                    "gptq:calibration": "wikitext2", "awq:calibration": "wikitext2",
                                    "llm_int8:calibration": "wikitext2"}  # fmt: skip
    assert preset.tasks == "llmkick_paper,llmkick_wikitext2_ppl"
    monkeypatch.delitem(METHODS, "awq")  # a method not registered is not in the preset
    without = paper_preset()
    assert "awq" not in without.methods and "awq:calibration" not in without.compress_args


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--methods", "wanda"], "--methods contradicts --preset llmkick-paper, which sets it"),
        (["--tasks", "t"], "--tasks contradicts --preset llmkick-paper, which sets it"),
        (
            ["--compress_args", "calibration=random"],
            "--compress_args calibration= contradicts --preset llmkick-paper",
        ),
    ],
)
def test_a_flag_contradicting_the_preset_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str], message: str
) -> None:
    with pytest.raises(SystemExit):
        main(_sweep(tmp_path, "--preset", "llmkick-paper", *flag))
    assert message in capsys.readouterr().err


def test_dry_run_prints_the_points_and_the_requests_and_runs_nothing(
    tmp_path: Path, local_task_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(_sweep(tmp_path, "--methods", "wanda,gptq", "--sparsities", "0.5", "--bits", "4",
                       "--grid", "nsamples=8,32", "--tasks", "local_fixture_choice,local_fixture_generate",
                       "--include_path", str(local_task_dir), "--limit", "4", "--dry-run"))  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and not (tmp_path / "run").exists()
    assert out[0] == "7 points, tasks local_fixture_choice,local_fixture_generate:"
    assert out[1] == "  dense: pretrained=m,method=none; ~16 requests"  # 4 docs x 3 choices + 4 generations
    assert (
        out[2] == "  wanda-s0.5-nsamples_8: pretrained=m,method=wanda,sparsity=0.5,nsamples=8; ~16 requests"
    )
    assert out[8].startswith("per point: ~16 requests (generate_until 4, loglikelihood 12)")


def test_dry_run_of_several_models_counts_each_with_its_own_tokenizer(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiny_models import build_tokenizer

    bytewise = shutil.copytree(tiny_llama_dir, tmp_path / "bytewise")
    build_tokenizer(vocab_size=260).save_pretrained(bytewise)  # ~one token per byte: more windows
    data = tmp_path / "data" / "wikitext2"
    data.mkdir(parents=True)
    (data / "test.txt").write_text(" = Title = \n" + "The capital of France is Paris . \n" * 40)
    metadata = json.dumps({"data_dir": str(tmp_path / "data"), "wikitext2_seqlen": 16})
    code = main(["sweep", "--models", f"{tiny_llama_dir},{bytewise}", "--output", str(tmp_path / "run"),
                 "--methods", "wanda", "--sparsities", "0.5", "--tasks", "llmkick_wikitext2_ppl",
                 "--metadata", metadata, "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    counted = {line.split(":")[0]: int(line.split("~")[1].split()[0]) for line in out if "per point" in line}
    small, large = counted[f"per point of {tiny_llama_dir.name}"], counted["per point of bytewise"]
    assert code == 0 and large > small > 0
    assert out[1].startswith(f"  {tiny_llama_dir.name}--dense: pretrained={tiny_llama_dir}") and out[
        1
    ].endswith(f"; ~{small} requests")
    assert out[4].startswith("  bytewise--wanda-s0.5: ") and out[4].endswith(f"; ~{large} requests")
    assert out[-1].startswith(f"all points: ~{2 * small + 2 * large} requests.")


def test_the_report_has_a_table_and_a_figure_per_axis(tmp_path: Path) -> None:
    axes = check_axes([("nsamples", ["8", "32"])], ["wanda", "sparsegpt"])
    points = plan_grid(["wanda", "sparsegpt"], sparsities=[0.5], axes=axes).points
    write_sweep(tmp_path, points)
    scores = {"dense": 10, "wanda-s0.5-nsamples_8": 6, "wanda-s0.5-nsamples_32": 8,
              "sparsegpt-s0.5-nsamples_8": 7, "sparsegpt-s0.5-nsamples_32": 9}  # fmt: skip
    for point in points:
        right = scores[point.point_id]
        write_point(tmp_path, point.point_id, {"task_a": {"acc": [1] * right + [0] * (10 - right)}})
    report, plots = write_report(tmp_path)
    text = report.read_text()
    assert "## Axis nsamples" in text
    assert "| wanda s0.5 | 8 | 0.6 " in text and "| sparsegpt s0.5 | 32 | 0.9 " in text
    assert tmp_path / "axis_nsamples.png" in plots and (tmp_path / "axis_nsamples.png").stat().st_size > 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert [p["axes"] for p in data["points"]][1] == {"nsamples": "8"}


def test_several_models_each_get_their_points_and_their_own_dense() -> None:
    grid = per_model(plan_grid(["wanda"], sparsities=[0.5]), ["org/Small-1", "/models/Big"])
    assert _ids(grid) == ["Small-1--dense", "Small-1--wanda-s0.5", "Big--dense", "Big--wanda-s0.5"]
    assert point_args(grid.points[3], "dtype=float32", {}) == (
        "pretrained=/models/Big,dtype=float32,method=wanda,sparsity=0.5"
    )
    assert grid.points[3].as_dict()["model"] == "Big" and grid.points[3].series == "Big: wanda"
    with pytest.raises(SweepError, match=r"^--models: a/m given twice$"):
        per_model(grid, ["a/m", "a/m"])


def test_two_models_of_the_same_weights_are_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_llama_dir, tmp_path / "copy")
    identities = model_identities([str(tiny_llama_dir)], "")
    assert point_fingerprint(
        per_model(plan_grid(["wanda"], sparsities=[0.5]), [str(tiny_llama_dir)]).points[1],
        {"model": None}, "", {}, identities,
    )["model"] == identities[str(tiny_llama_dir)]  # fmt: skip
    with pytest.raises(
        SweepError, match=rf"^--models: {tiny_llama_dir} and {copy} resolve to the same weights"
    ):
        model_identities([str(tiny_llama_dir), str(copy)], "")


def test_each_point_is_paired_with_its_own_models_dense_and_each_model_has_a_section(tmp_path: Path) -> None:
    points = per_model(plan_grid(["wanda"], sparsities=[0.5]), ["org/small", "org/big"]).points
    write_sweep(tmp_path, points)
    right = {"small--dense": 6, "small--wanda-s0.5": 5, "big--dense": 9, "big--wanda-s0.5": 8}
    for point, parameters in zip(points, [1e6, 1e6, 4e6, 4e6], strict=True):
        answers = [1] * right[point.point_id] + [0] * (10 - right[point.point_id])
        write_point(tmp_path, point.point_id, {"task_a": {"acc": answers}}, parameters=int(parameters))
    compared = comparisons(load_run(tmp_path))
    assert compared[("big--wanda-s0.5", "task_a", "acc,none")].dense == 0.9
    assert compared[("small--wanda-s0.5", "task_a", "acc,none")].dense == 0.6
    report, plots = write_report(tmp_path)
    text = report.read_text()
    assert "## Model small (`org/small`)" in text and "## Model big (`org/big`)" in text
    assert tmp_path / "models.png" in plots and tmp_path / "models" / "big" / "plot_task_a.png" in plots
