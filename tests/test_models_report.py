"""The report of a --models run: every table, figure and reading that compares with dense uses the point's
own model's dense.  The fixture's two models have different dense scores (0.6 and 0.9) and different dense
answers, so a point paired with the other model's dense shows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import compression_report, write_point, write_sweep

from llmkick_models.engine.methods import build_spec
from llmkick_models.workflow.grid_axes import check_axes
from llmkick_models.workflow.model_grid import per_model
from llmkick_models.workflow.sweep_plan import plan_grid
from llmkick_models.workflow.sweep_report import write_report

SHAPE = (256, 512)  # one decoder linear per point
N = SHAPE[0] * SHAPE[1]
DOCUMENTS = 20
DENSE_RIGHT = {"small": 12, "big": 18}
#: Documents each point gets wrong beyond its dense, by the point id after the model label.
DROPS = {"wanda-s0.5-nsamples_8": 4, "wanda-s0.5-nsamples_32": 2, "wanda-s0.5-4bit-nsamples_8": 5,
         "wanda-s0.5-4bit-nsamples_32": 3, "gptq-4bit-nsamples_8": 1, "gptq-4bit-nsamples_32": 0}  # fmt: skip
#: Each model's dense answers: 2 words (small) and 7 words (big); every compressed point answers in 2.
DENSE_ANSWERS = {"small": "small {i}", "big": "big dense answer is number {i} today"}


def _spec(point: Any) -> dict[str, Any]:
    if point.method == "none":
        return build_spec("none").to_dict()
    return build_spec(point.method, point.sparsity, bits=point.bits).to_dict()


def _two_model_run(run_dir: Path) -> None:
    axes = check_axes([("nsamples", ["8", "32"])], ["wanda", "gptq"])
    grid = plan_grid(["wanda", "gptq"], sparsities=[0.5], bits=[4], axes=axes)
    points = per_model(grid, ["org/small", "org/big"]).points
    write_sweep(run_dir, points, "qa")
    for point in points:
        model, _, rest = point.point_id.partition("--")
        right = DENSE_RIGHT[model] - DROPS.get(rest, 0)
        template = DENSE_ANSWERS[model] if point.method == "none" else "pt {i}"
        zeros = N // 2 if point.sparsity else 0
        write_point(run_dir, point.point_id, {"qa": {"acc": [1] * right + [0] * (DOCUMENTS - right)}},
                    answers={"qa": [template.format(i=i) for i in range(DOCUMENTS)]},
                    compression=compression_report(_spec(point), SHAPE, zeros),
                    parameters=(2 if model == "small" else 4) * N)  # fmt: skip


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _dense_levels(figure: Any) -> list[float]:
    """Every dense reference a figure draws: the lines labelled dense, and the dense star."""
    levels = []
    for axis in figure.axes:
        for line in axis.get_lines():
            if line.get_label() == "dense" or line.get_marker() == "*":
                levels += [float(y) for y in line.get_ydata()]
    return levels


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Per figure written (its path under the run, as posix), the figure (still written)."""
    from matplotlib.figure import Figure

    found: dict[str, Any] = {}
    save = Figure.savefig

    def capture(figure: Figure, path: object, *args: object, **kwargs: object) -> None:
        where = Path(str(path))
        found["/".join(where.parts[-3:] if where.parent.parent.name == "models" else where.parts[-1:])] = (
            figure
        )
        save(figure, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", capture)
    return found


def test_the_title_names_every_model(tmp_path: Path) -> None:
    _two_model_run(tmp_path)
    report, _ = write_report(tmp_path)
    assert (
        report.read_text().splitlines()[0]
        == "# llmkick sweep of 2 models: small (`org/small`), big (`org/big`)"
    )


def test_every_figure_against_dense_is_drawn_per_model_with_its_own_dense(
    tmp_path: Path, drawn: dict[str, Any]
) -> None:
    _two_model_run(tmp_path)
    _, plots = write_report(tmp_path)
    for model, dense in [("small", 0.6), ("big", 0.9)]:
        for name in ("plot_qa.png", "plot_stored_size.png", "axis_nsamples.png"):
            assert tmp_path / "models" / model / name in plots
            levels = _dense_levels(drawn[f"models/{model}/{name}"])
            assert levels and levels == [pytest.approx(dense)] * len(levels), (model, name, levels)
    # no figure against dense at the top of the run: it would hold two models' points and one dense
    assert {name for name in drawn if "/" not in name} == {"models.png"}


def test_the_tables_against_dense_are_in_each_models_section(tmp_path: Path) -> None:
    _two_model_run(tmp_path)
    report, _ = write_report(tmp_path)
    text = report.read_text()
    big = _section(text, "## Model big (`org/big`)")
    assert "Dense reference: `big--dense`" in big
    quantization = _section(big, "### Quantization: method × bits against dense").splitlines()
    assert quantization[4].startswith("| dense | 16 | 1 | 1 | 0.9 |")
    assert quantization[5].startswith("| gptq nsamples=8 | 4 | ") and "0.85 · -5.6% [" in quantization[5]
    axis = _section(big, "### Axis nsamples")
    assert "| dense | – | 0.9 |" in axis and "| wanda s0.5 | 8 | 0.7 " in axis and "small" not in axis
    assert "![models/big/plot_stored_size](models/big/plot_stored_size.png)" in big
    assert "## Quantization" not in text.split("## Model small")[0]  # no table of both models' points
    assert "## Each point against its own model's dense, on the same documents" in text
    assert text.index("## Across models\n\n![models](models.png)") < text.index("## Model small")


def test_the_readings_pair_each_point_with_its_own_models_dense(tmp_path: Path) -> None:
    _two_model_run(tmp_path)
    report, _ = write_report(tmp_path)
    text = report.read_text()
    distinct = _section(text, "## Distinct tokens of generated answers")
    big_rows = _section(distinct, "### big · qa").splitlines()
    assert big_rows[4] == "| big--dense | 0.9 | 7 | 7 | 1 |"
    assert big_rows[5].startswith("| big--wanda-s0.5-nsamples_8 | 0.7 | 2 · -71.4% [")  # 2 words vs 7
    lost = _section(text, "## What was lost, by example")
    assert "| #14 | q14 | t14 | big dense answer is number 14 today | pt 14 |" in lost
    data = json.loads((tmp_path / "report.json").read_text())
    small, big = data["models"]
    assert (big["label"], big["pretrained"], big["dense"]) == ("big", "org/big", "big--dense")
    assert (
        big["parameters"] == 4 * N and isinstance(big["parameters"], int) and big["points"][0] == "big--dense"
    )
    assert big["distinct_tokens"]["tasks"]["qa"]["dense"]["tokens"] == 7
    assert small["distinct_tokens"]["tasks"]["qa"]["dense"]["tokens"] == 2
    gptq8 = next(entry for entry in big["quantization"] if entry["point"] == "big--gptq-4bit-nsamples_8")
    assert gptq8["tasks"]["qa"]["acc"]["relative"] == pytest.approx(0.85 / 0.9 - 1)
    assert "models/big/plot_qa.png" in big["figures"]
    assert "quantization" not in data and "distinct_tokens" not in data  # per model only
    [entry] = [e for e in data["lost"] if e["point"] == "big--wanda-s0.5-nsamples_8"]
    assert entry["documents"][0]["dense_answer"] == "big dense answer is number 14 today"


def test_a_model_without_its_dense_gets_no_verdict_and_is_still_named(tmp_path: Path) -> None:
    _two_model_run(tmp_path)
    shutil.rmtree(tmp_path / "points" / "big--dense")
    report, _ = write_report(tmp_path)
    text = report.read_text()
    assert "big (`org/big`)" in text.splitlines()[0]
    big = _section(text, "## Model big (`org/big`)")
    assert "This model has no finished dense point: its points get no verdict." in big
    assert "| big--gptq-4bit-nsamples_8 | gptq | – | – | 4 | 0 | 0.8145 | 0.85 |" in big  # no verdict mark
    assert "No dense point among these points: matching verdicts need one." in big
    assert "**big--dense**: not run yet" in text


def _legend_labels(axis: Any) -> list[str]:
    legend = axis.get_legend()
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


def test_each_series_is_named_in_a_legend_of_the_panel_it_is_drawn_in(tmp_path: Path, drawn: dict) -> None:
    _two_model_run(tmp_path)
    write_report(tmp_path)
    sparsity, bits = drawn["models/big/plot_qa.png"].axes[:2]  # the top row: scores
    assert "wanda nsamples=8" in _legend_labels(sparsity)  # the model is in the figure's title, not here
    assert _legend_labels(bits) == ["gptq nsamples=32", "gptq nsamples=8"]  # drawn only in the bits panel
    assert drawn["models/big/plot_qa.png"].texts[0].get_text().startswith("big: qa — acc")


def test_the_cross_model_figure_keeps_each_series_color_and_names_the_models(
    tmp_path: Path, drawn: dict
) -> None:
    _two_model_run(tmp_path)
    write_report(tmp_path)
    top, bottom = drawn["models.png"].axes
    colors = {line.get_label(): line.get_color() for line in top.get_lines()}
    changes = {line.get_label(): (line.get_color(), list(line.get_ydata())) for line in bottom.get_lines()
               if not line.get_label().startswith("_")}  # fmt: skip
    assert set(changes) == set(colors) and len(colors) == 7  # dense and six settings
    assert all(changes[label][0] == colors[label] for label in colors)
    assert changes["dense"][1] == [0.0, 0.0]
    assert changes["wanda-s0.5-nsamples_8"][1] == [
        pytest.approx(-100 / 3),
        pytest.approx(-200 / 9),
    ]  # 8/12, 14/18
    assert [tick.get_text() for tick in bottom.get_xticklabels()] == [
        f"small\n{2 * N:.3g}",
        f"big\n{4 * N:.3g}",
    ]


def test_the_by_group_figure_is_drawn_per_model_with_its_own_dense(tmp_path: Path, drawn: dict) -> None:
    points = per_model(plan_grid(["wanda"], sparsities=[0.5]), ["org/small", "org/big"]).points
    write_sweep(tmp_path, points, "summ")
    for point in points:
        level = (6.0 if point.model == "small" else 9.0) - (1.0 if point.sparsity else 0.0)
        summ = {"coherence": [level] * 12, "coherence_short": [level] * 6 + [None] * 6,
                "coherence_long": [None] * 6 + [level] * 6}  # fmt: skip
        write_point(tmp_path, point.point_id, {"summ": summ}, judged={"summ": "summarization"})
    report, plots = write_report(tmp_path)
    for model, dense in [("small", 6.0), ("big", 9.0)]:
        assert tmp_path / "models" / model / "plot_summ_by_group.png" in plots
        levels = _dense_levels(drawn[f"models/{model}/plot_summ_by_group.png"])
        assert levels and levels == [dense] * len(levels)
        assert (
            f"![models/{model}/plot_summ_by_group](models/{model}/plot_summ_by_group.png)"
            in report.read_text()
        )


def test_the_cross_model_figure_draws_a_line_per_setting_and_a_dense_only_model_gets_no_figure(
    tmp_path: Path, drawn: dict
) -> None:
    points = per_model(plan_grid(["wanda"], sparsities=[0.2, 0.5]), ["org/small", "org/big"]).points
    write_sweep(tmp_path, points, "qa")
    for point in points[:4]:  # big's pruned points are not run yet
        right = {None: 12, 0.2: 11, 0.5: 8}[point.sparsity] + (6 if point.model == "big" else 0)
        write_point(tmp_path, point.point_id, {"qa": {"acc": [1] * right + [0] * (DOCUMENTS - right)}},
                    parameters=(2 if point.model == "small" else 4) * N)  # fmt: skip
    report, plots = write_report(tmp_path)
    top = drawn["models.png"].axes[0]
    lines = {line.get_label(): list(line.get_xdata()) for line in top.get_lines()}
    assert lines == {
        "dense": [2 * N, 4 * N],
        "wanda-s0.2": [2 * N],
        "wanda-s0.5": [2 * N],
    }  # not one wanda line
    assert all("models/big" not in str(plot) for plot in plots)
    big = _section(report.read_text(), "## Model big (`org/big`)")
    assert "Dense reference: `big--dense`" in big and "![" not in big


def test_the_change_legend_is_below_its_panel_where_it_hides_no_point(tmp_path: Path, drawn: dict) -> None:
    _two_model_run(tmp_path)
    write_report(tmp_path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = drawn["models/big/plot_qa.png"]
    renderer = FigureCanvasAgg(figure).get_renderer()  # the figure is closed once written
    changes = figure.axes[2]  # the bottom row's first panel
    assert changes.get_ylabel() == "change from dense (%)"
    legend = changes.get_legend().get_window_extent(renderer)
    assert legend.y1 <= changes.get_window_extent(renderer).y0
    assert legend.y0 >= 0  # still inside the figure
