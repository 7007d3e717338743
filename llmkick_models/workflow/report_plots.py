"""The report's figures: per task, score vs sparsity per method with paired interval bars, and on the same
x axis the relative change from dense (perplexity beside the task score); N:M and bits panels when present."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkick_models.workflow.paired_stats import MATCHING_TOLERANCE, Comparison
from llmkick_models.workflow.run_results import (
    RATIO_METRICS,
    PointResult,
    comparisons,
    dense_point,
    higher_is_better,
    report_columns,
)

# Ticks of the change-from-dense axis once it turns logarithmic beyond +-100% (perplexity can grow 1000x).
SYMLOG_TICKS = (-100, -50, -25, 0, 25, 50, 100, 1_000, 10_000, 100_000, 1_000_000)
MARKERS = "osD^vP*X"


def _percent(value: float, _position: Any) -> str:
    return f"{value:+.0f}%" if value else "0"


def is_perplexity(metric: str) -> bool:
    """True for corpus-level metrics drawn on a log axis (perplexity, bits per byte)."""
    return metric.split(",")[0] in RATIO_METRICS


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class MetricView:
    """One headline metric of a run, as the figures read it."""

    points: list[PointResult]
    compared: dict
    task: str
    metric: str

    @property
    def dense(self) -> PointResult | None:
        """The dense point of the figure's points, which are one model's (a --models run is drawn per model:
        one dense line for several models would pair points with another model's dense)."""
        if len({p.point.get("model") for p in self.points}) > 1:
            raise ValueError("a figure against dense takes one model's points; draw each model on its own")
        return dense_point(self.points)

    def value(self, point: PointResult | None) -> float | None:
        """The point's score, None when listed under Problems (not drawn)."""
        return None if point is None else point.trusted_score(self.task, self.metric)

    def comparison(self, point: PointResult, key: tuple[str, str] | None = None) -> Comparison | None:
        """The point's paired comparison with dense on this metric (or on ``key``), if there is one."""
        found = self.compared.get((point.point["id"], *(key or (self.task, self.metric))))
        return found if isinstance(found, Comparison) else None

    def bar(self, point: PointResult) -> tuple[float, float]:
        """The (below, above) lengths of the point's paired 95% interval bar around its score; (0, 0)
        without an interval.  A score's bar stops at 0: the conservative interval may reach below a score
        that cannot be negative (report.json keeps the interval as computed)."""
        c, v = self.comparison(point), self.value(point)
        if c is None or v is None or c.difference_ci is None:
            return 0.0, 0.0
        floor = -math.inf if is_perplexity(self.metric) else 0.0
        return v - max(floor, v + c.difference_ci[0] - c.difference), c.difference_ci[1] - c.difference


def dense_lines(axis: Any, view: MetricView) -> None:
    """Dense's score (dashed) and LLM-KICK's matching limit, 5% on the worse side (dotted)."""
    dense_value = view.value(view.dense)
    if dense_value is None:
        return
    axis.axhline(dense_value, color="black", linestyle="--", linewidth=1, label="dense")
    higher = higher_is_better(view.dense.results, view.task, view.metric)  # type: ignore[union-attr]
    limit = dense_value * (1 - MATCHING_TOLERANCE if higher else 1 + MATCHING_TOLERANCE)
    axis.axhline(limit, color="grey", linestyle=":", linewidth=1, label="matching limit (5%)")


def score_axis(axis: Any, metric: str) -> None:
    """Label the score axis; perplexity on a log axis in plain numbers (40, 60, 100), not 4x10^1."""
    from matplotlib.ticker import LogFormatter

    if is_perplexity(metric):
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(LogFormatter())
        axis.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    axis.set_ylabel(metric.split(",")[0])
    axis.grid(alpha=0.3)


def model_prefix(points: list[PointResult]) -> str:
    """``"LABEL: "`` when the points are one model's of a --models run (its figure names the model, which
    its file name under ``models/LABEL/`` alone would not show once the PNG is opened), else ``""``."""
    labels = {p.point.get("model") or "" for p in points}
    return f"{labels.pop()}: " if len(labels) == 1 and "" not in labels else ""


def series(point: PointResult) -> str:
    """The line a point belongs to: its method, with joint bits and --grid values (older runs: method);
    without the model of a --models run, which the figure or section that shows it names."""
    name = point.point.get("series") or point.point["method"]
    model = point.point.get("model")
    return name.removeprefix(f"{model}: ") if model else name


@dataclass
class _Panels:
    """The run's panels (sparsity, N:M, bits: those with points), their x labels and each method's style."""

    members: dict[str, list[PointResult]]
    labels: dict[str, list[Any]]
    methods: list[str]
    colors: dict[str, Any]

    @classmethod
    def of(cls, points: list[PointResult], plt: Any) -> _Panels:
        groups = {
            "sparsity": [p for p in points if p.point["sparsity"] is not None and not p.point["pattern"]],
            "N:M": [p for p in points if p.point["pattern"]],
            "bits": [p for p in points if p.point["bits"] is not None and p.point["sparsity"] is None],
        }
        members = {name: group for name, group in groups.items() if group} or {"sparsity": []}
        patterns = {p.point["pattern"] for p in groups["N:M"]}
        labels = {
            "sparsity": [],
            "N:M": sorted(patterns, key=lambda s: [int(x) for x in s.split(":")]),
            "bits": sorted({p.point["bits"] for p in groups["bits"]}, reverse=True),
        }
        methods = sorted({series(p) for p in points if p.point["method"] != "none"})
        return cls(members, labels, methods, {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)})

    def x(self, panel: str, point: PointResult) -> float:
        """Sparsity, or the index of the point's pattern / bits among the panel's labels."""
        if panel == "sparsity":
            return point.point["sparsity"]
        return self.labels[panel].index(point.point["pattern" if panel == "N:M" else "bits"])

    def style(self, method: str, k: int) -> dict[str, Any]:
        """Each method its color and marker; every second one hollow, so that none hides another."""
        color = self.colors[method]
        return {"color": color, "marker": MARKERS[self.methods.index(method) % len(MARKERS)], "label": method,
                "capsize": 3, "markersize": 6, "markerfacecolor": "white" if k % 2 else color}  # fmt: skip


def plot_run(points: list[PointResult], out_dir: Path, compared: dict | None = None) -> list[Path]:
    """One PNG per headline metric: score vs sparsity per method with paired 95% interval bars, and below
    it (same x axis) the relative change from dense of that score and of perplexity; N:M and bits panels
    only when the run has such points."""
    plt = pyplot()
    compared = comparisons(points) if compared is None else compared
    panels = _Panels.of(points, plt)
    columns = list(report_columns(points))
    written = []
    for task, metric in columns:
        view = MetricView(points, compared, task, metric)
        name = metric.split(",")[0]
        figure = _draw_metric(plt, view, panels, next((c for c in columns if is_perplexity(c[1])), None))
        figure.suptitle(f"{model_prefix(points)}{task} — {name}\n(bars: paired 95% interval vs dense)",
                        fontsize=10)  # fmt: skip
        figure.tight_layout()
        stem = task if len([c for c in columns if c[0] == task]) == 1 else f"{task}_{name}"
        written.append(save_figure(plt, figure, out_dir / f"plot_{stem}.png"))
    return written


def _draw_metric(plt: Any, view: MetricView, panels: _Panels, perplexity: tuple[str, str] | None) -> Any:
    """The figure of one metric: per panel the scores on top and, with a dense point, the changes below."""
    relative = view.dense is not None
    figure, axes = plt.subplots(
        2 if relative else 1, len(panels.members), figsize=(5.2 * len(panels.members), 7 if relative else 4),
        squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 2]} if relative else None,
    )  # fmt: skip
    shown: tuple[set[str], set[str]] = (set(), set())  # legend entries already given (top, bottom)
    for column, (panel, members) in enumerate(panels.members.items()):
        top, bottom = axes[0][column], axes[1][column] if relative else None
        group = [m for m in panels.methods if any(series(p) == m for p in members)]
        for k, method in enumerate(group):
            chosen = sorted((p for p in members if series(p) == method), key=lambda p: panels.x(panel, p))
            offset = (k - (len(group) - 1) / 2) * (0.006 if panel == "sparsity" else 0.12)
            xs = [panels.x(panel, p) + offset for p in chosen]
            dense_x = 0.0 + offset if panel == "sparsity" else None  # lines start at dense: sparsity 0
            _draw_series(view, (xs, dense_x), chosen, (top, bottom), panels.style(method, k), perplexity)
        dense_lines(top, view)
        if bottom is not None:
            style_changes(bottom)
            # below the panel: the changes (perplexity's thousands of percent) fill every corner of it
            new_legend(bottom, shown[1], ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.3))
        _style_x(bottom if bottom is not None else top, panel, panels.labels[panel])
        score_axis(top, view.metric)
        top.set_title(panel if len(panels.members) > 1 else "")
        new_legend(top, shown[0])
    return figure


def legend_below(figure: Any, axis: Any, ncol: int, row_height: float = 0.03) -> None:
    """One figure legend of ``axis``'s entries below the panels (inside a panel it hides points: every corner
    can hold some), and the panels laid out above it."""
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    figure.tight_layout(rect=(0, row_height * math.ceil(len(labels) / ncol) + 0.02, 1, 1))


def save_figure(plt: Any, figure: Any, path: Path, dpi: int = 110) -> Path:
    """Write ``figure`` to ``path`` and close it (pyplot keeps every open figure alive otherwise)."""
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def new_legend(axis: Any, shown: set[str], ncol: int = 1, **where: Any) -> None:
    """A legend of the panel's entries that no panel to its left has given (added to ``shown``): a series
    drawn only in a later panel (a quantizer in the bits panel) is named where it is drawn."""
    entries = [(handle, label) for handle, label in zip(*axis.get_legend_handles_labels(), strict=True)
               if label not in shown]  # fmt: skip
    if entries:
        axis.legend([h for h, _ in entries], [label for _, label in entries], fontsize=7, ncol=ncol, **where)
        shown.update(label for _, label in entries)


def _draw_series(
    view: MetricView,
    where: tuple[list[float], float | None],
    chosen: list[PointResult],
    axes: tuple[Any, Any],
    style: dict[str, Any],
    perplexity: tuple[str, str] | None,
) -> None:
    """One method's points at ``where`` (their xs, and dense's x when the line starts at dense): scores
    with interval bars on top; below, the change from dense in this metric and (dashed) in perplexity."""
    (xs, dense_x), (top, bottom) = where, axes
    line = "-" if dense_x is not None else "none"
    ys = [math.nan if (v := view.value(p)) is None else v for p in chosen]  # a gap, not a crash
    bars = [view.bar(p) for p in chosen]
    if dense_x is not None and (dense_value := view.value(view.dense)) is not None:
        top_xs, ys, bars = [dense_x, *xs], [dense_value, *ys], [(0.0, 0.0), *bars]
    else:
        top_xs = xs
    top.errorbar(top_xs, ys, yerr=[[b[0] for b in bars], [b[1] for b in bars]], linestyle=line, **style)
    if bottom is None:
        return
    changes = [(x, c) for x, p in zip(xs, chosen, strict=True) if (c := view.comparison(p)) is not None]
    _draw_changes(bottom, changes, dense_x, line,
                  {**style, "label": f"{view.metric.split(',')[0]} ({style['label']})"})  # fmt: skip
    if perplexity is not None and perplexity != (view.task, view.metric):
        found = [(x, 100 * c.relative) for x, p in zip(xs, chosen, strict=True)
                 if (c := view.comparison(p, perplexity)) is not None and c.relative is not None]  # fmt: skip
        if dense_x is not None and found:
            found = [(dense_x, 0.0), *found]
        if found:
            bottom.plot([x for x, _ in found], [r for _, r in found], color=style["color"], marker="x",
                        linestyle="--" if dense_x is not None else "none",
                        label=f"perplexity ({style['label']})")  # fmt: skip


def _draw_changes(
    bottom: Any,
    changes: list[tuple[float, Comparison]],
    dense_x: float | None,
    line: str,
    style: dict[str, Any],
) -> None:
    """The relative change from dense with its interval (bars stop at -100%); from (dense_x, 0) if given."""
    rows = []
    for x, c in changes:
        if c.relative is not None:
            ci = c.relative_ci or (c.relative, c.relative)  # no interval: no bar
            rows.append(
                (x, 100 * c.relative, 100 * (c.relative - max(-1.0, ci[0])), 100 * (ci[1] - c.relative))
            )
    if dense_x is not None and rows:
        rows = [(dense_x, 0.0, 0.0, 0.0), *rows]
    if rows:
        bottom.errorbar([r[0] for r in rows], [r[1] for r in rows], yerr=[[r[2] for r in rows],
                        [r[3] for r in rows]], linestyle=line, **style)  # fmt: skip


def style_changes(bottom: Any) -> None:
    """The change-from-dense axis: the ±5% band, signed percents, symlog beyond ±100% when needed."""
    from matplotlib.ticker import FuncFormatter

    bottom.axhspan(-100 * MATCHING_TOLERANCE, 100 * MATCHING_TOLERANCE, color="grey", alpha=0.2,
                   label="±5% of dense")  # fmt: skip
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel("change from dense (%)")
    # Perplexity can grow by thousands of percent while a score cannot fall below -100%: linear within
    # +-100%, logarithmic beyond, so both stay readable on one axis.
    if max((abs(v) for line in bottom.get_lines() for v in line.get_ydata()), default=0) > 200:
        bottom.set_yscale("symlog", linthresh=100)
        low, high = bottom.get_ylim()  # symlog's own ticks skip the linear part: name it
        bottom.set_yticks([t for t in SYMLOG_TICKS if low <= t <= high])
    bottom.yaxis.set_major_formatter(FuncFormatter(_percent))
    bottom.grid(alpha=0.3)


def _style_x(axis: Any, panel: str, labels: list[Any]) -> None:
    if panel == "sparsity":
        axis.set_xlabel("sparsity")
        return
    axis.set_xticks(range(len(labels)), [str(label) for label in labels])
    axis.set_xlim(-0.6, len(labels) - 0.4)
    axis.set_xlabel("N:M pattern (N zeros per M)" if panel == "N:M" else "bits per weight")
