"""Turn a sweep's run directory into LLM-KICK's picture: verdicts with intervals, a table, plots.

"Matching" follows the paper: a compressed point matches when its score is within 5% of the dense model's
(>= 0.95x dense for higher-is-better metrics, <= 1.05x for perplexity-like ones).  With the per-document
samples a sweep keeps, every point is compared with dense on the same documents
(:mod:`llmkick_models.workflow.paired_stats`) and the verdict is taken on the 95% interval of the relative
change: ``matching``, ``not matching`` or ``inconclusive``.

Only top-level tasks and groups with a score are reported as columns (a group's subtasks go to
``report.json``); a judged task shows every headline judge score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkick_models.workflow import paired_stats
from llmkick_models.workflow.paired_stats import MATCHING_TOLERANCE, Comparison

REPORT_SCHEMA = "llmkick-report/1"
#: Which metric headlines a task when it reports several (first present wins).
PREFERRED_METRICS = (
    "contains",
    "exact_match",
    "acc",
    "strict_em",
    "em",
    "f1",
    "token_perplexity",
    "word_perplexity",
    "score",
)
#: Judged tasks headline every one of these they report (summarization's four dimensions; win rates).
JUDGED_HEADLINES = ("coherence", "consistency", "fluency", "relevance", "score", "win_rate")
#: Corpus-level metrics: per-document (log-likelihood, weight) pairs, aggregated as a ratio of sums.
RATIO_METRICS = ("token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "perplexity")
SYMBOLS = {
    paired_stats.MATCHING: "✓",
    paired_stats.NOT_MATCHING: "✗",
    paired_stats.INCONCLUSIVE: "~",
    paired_stats.NO_VERDICT: "",
}


def _numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in metrics.items()
        if "," in key
        and "_stderr" not in key
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    }


def _children(results: dict[str, Any]) -> dict[str, list[str]]:
    return {group: list(subtasks) for group, subtasks in results.get("group_subtasks", {}).items()}


def reported_tasks(results: dict[str, Any]) -> list[str]:
    """Top-level tasks and groups that carry a score, in results order.

    A group without an aggregate score (``llmkick_exact_match``) is looked through to its members; the
    members of a scored group (MMLU's subjects) are not columns of their own.
    """
    entries = results.get("results", {})
    children = _children(results)
    nested = {child for members in children.values() for child in members}
    roots = [name for name in [*entries, *children] if name not in nested]
    out: list[str] = []

    def visit(name: str) -> None:
        if name in out:
            return
        if _numeric_metrics(entries.get(name, {})):
            out.append(name)
        else:
            for child in children.get(name, []):
                visit(child)

    for root in dict.fromkeys(roots):
        visit(root)
    return out


def task_headlines(results: dict[str, Any], task: str) -> list[tuple[str, float]]:
    """The headline ``(metric key, value)`` pairs of one task: all judge scores, else the preferred one."""
    candidates = _numeric_metrics(results.get("results", {}).get(task, {}))
    if not candidates:
        return []
    judged = [key for key in candidates if key.split(",")[0] in JUDGED_HEADLINES]
    if (judged and any(key.split(",")[0] != "score" for key in judged)) or len(judged) > 1:
        order = {name: i for i, name in enumerate(JUDGED_HEADLINES)}
        return [(key, candidates[key]) for key in sorted(judged, key=lambda k: order[k.split(",")[0]])]
    ranked = sorted(
        candidates,
        key=lambda k: (
            PREFERRED_METRICS.index(k.split(",")[0])
            if k.split(",")[0] in PREFERRED_METRICS
            else len(PREFERRED_METRICS)
        ),
    )
    return [(ranked[0], candidates[ranked[0]])]


def headline_metrics(results: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """Each reported task's (or group's) first headline metric: ``{task: (metric key, value)}``."""
    out = {}
    for task in reported_tasks(results):
        headlines = task_headlines(results, task)
        if headlines:
            out[task] = headlines[0]
    return out


def _higher_is_better(results: dict[str, Any], task: str, metric_key: str) -> bool:
    metric = metric_key.split(",")[0]
    known = results.get("higher_is_better", {}).get(task, {})
    if metric in known and known[metric] is not None:
        return bool(known[metric])
    return "perplexity" not in metric and "bits_per_byte" not in metric


@dataclass
class PointResult:
    """One finished point of a run: its coordinates, lm-eval's results and its per-document samples."""

    point: dict[str, Any]
    results: dict[str, Any]
    point_dir: Path | None = None
    _samples: dict[str, list[dict[str, Any]] | None] = field(default_factory=dict, repr=False)

    @property
    def measured_sparsity(self) -> float | None:
        """Overall sparsity measured on the weights (from the compression report), if recorded."""
        report = self.results.get("config", {}).get("llmkick_compression")
        return report.get("overall_sparsity") if report else None

    def _samples_folder(self) -> tuple[Path, str] | None:
        """The lm-eval output folder and date id of the run whose results this point kept."""
        if self.point_dir is None:
            return None
        for results_file in sorted(self.point_dir.rglob("results_*.json"), reverse=True):
            try:
                raw = json.loads(results_file.read_text())
            except (OSError, ValueError):
                continue
            # Only samples of the very run whose scores we report: the same file, or (if the sweep added
            # fields of its own) the same lm-eval start time and the same scores.
            same_run = raw == self.results or (
                raw.get("date") is not None
                and raw.get("date") == self.results.get("date")
                and raw.get("results") == self.results.get("results")
            )
            if same_run:
                return results_file.parent, results_file.stem[len("results_") :]
        return None

    def samples(self, task: str) -> list[dict[str, Any]] | None:
        """lm-eval's logged samples of ``task`` (``None`` when the run kept none)."""
        if task not in self._samples:
            found = self._samples_folder()
            path = found[0] / f"samples_{task}_{found[1]}.jsonl" if found else None
            if path is None or not path.is_file():
                self._samples[task] = None
            else:
                with path.open(encoding="utf-8") as handle:
                    self._samples[task] = [json.loads(line) for line in handle if line.strip()]
        return self._samples[task]


def load_run(run_dir: Path) -> list[PointResult]:
    """Finished points of a run directory, in the sweep's order."""
    sweep_file = run_dir / "sweep.json"
    if not sweep_file.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a sweep run directory (no sweep.json); run `llmkick sweep` first"
        )
    planned = json.loads(sweep_file.read_text())["points"]
    loaded = []
    for point in planned:
        point_dir = run_dir / "points" / point["id"]
        results_file = point_dir / "results.json"
        if results_file.is_file():
            loaded.append(PointResult(point, json.loads(results_file.read_text()), point_dir))
    if not loaded:
        raise FileNotFoundError(f"{run_dir} holds no finished point yet")
    return loaded


def matches(value: float, dense: float, higher_is_better: bool) -> bool | None:
    """LLM-KICK's "matching" on point estimates alone: within 5% of the dense score, in the good direction.

    None when the dense model scores 0 on a higher-is-better metric: every point would "match" a model
    that knows nothing, which says nothing.
    """
    if higher_is_better and dense <= 0:
        return None
    if higher_is_better:
        return value >= (1 - MATCHING_TOLERANCE) * dense
    return value <= (1 + MATCHING_TOLERANCE) * dense


# ---- per-document values -------------------------------------------------------------------------------


class SamplesUnusable(ValueError):
    """The samples cannot support a paired comparison (the reason is shown in the report)."""


def _leaf_tasks(results: dict[str, Any], task: str) -> list[str]:
    children = _children(results)
    if not children.get(task):  # lm-eval lists plain tasks as groups of nothing
        return [task]
    return [leaf for child in children[task] for leaf in _leaf_tasks(results, child)]


def _document_values(point: PointResult, task: str, metric_key: str) -> dict[tuple[str, Any], Any]:
    """``{(leaf task, doc_id): value}`` of one metric, checked to reproduce the reported score."""
    metric, _, filter_key = metric_key.partition(",")
    values: dict[tuple[str, Any], Any] = {}
    for leaf in _leaf_tasks(point.results, task):
        samples = point.samples(leaf)
        if samples is None:
            raise SamplesUnusable(f"no per-document samples of {leaf} for point {point.point['id']}")
        for sample in samples:
            if sample.get("filter", filter_key) != filter_key or metric not in sample:
                continue
            values[(leaf, sample["doc_id"])] = sample[metric]
    if not values:
        raise SamplesUnusable(f"the samples of {task} hold no {metric!r} per document")
    reported = point.results["results"][task][metric_key]
    recomputed = _aggregate(metric, list(values.values()))
    if not math.isclose(recomputed, reported, rel_tol=1e-6, abs_tol=1e-9):
        raise SamplesUnusable(
            f"{task} {metric} is not the mean (or corpus ratio) of its samples at point {point.point['id']} "
            f"(reported {reported:.6g}, samples give {recomputed:.6g}), so it cannot be paired per document"
        )
    return values


def _aggregate(metric: str, values: list[Any]) -> float:
    if metric in RATIO_METRICS:
        if not all(isinstance(v, (list, tuple)) and len(v) == 2 for v in values):
            raise SamplesUnusable(f"{metric} samples are not (log-likelihood, weight) pairs")
        return float(paired_stats.ratio_aggregate(metric, [v[0] for v in values], [v[1] for v in values]))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise SamplesUnusable(f"{metric} samples are not numbers")
    return sum(values) / len(values)


def compare_point(dense: PointResult, point: PointResult, task: str, metric_key: str) -> Comparison:
    """The paired comparison of ``point`` with ``dense`` on ``task``'s headline ``metric_key``."""
    dense_values = _document_values(dense, task, metric_key)
    point_values = _document_values(point, task, metric_key)
    if dense_values.keys() != point_values.keys():
        raise SamplesUnusable(
            f"{task}: dense and {point.point['id']} scored different documents "
            f"({len(dense_values)} vs {len(point_values)}); re-run both with the same --limit"
        )
    keys = sorted(dense_values, key=str)
    metric = metric_key.split(",")[0]
    higher = _higher_is_better(dense.results, task, metric_key)
    a, b = [dense_values[k] for k in keys], [point_values[k] for k in keys]
    if metric in RATIO_METRICS:
        return paired_stats.compare_ratios(metric, a, b, higher)
    return paired_stats.compare_means(a, b, higher)


# ---- the report ------------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


def _columns(points: list[PointResult]) -> dict[tuple[str, str], None]:
    columns: dict[tuple[str, str], None] = {}
    for point in points:
        for task in reported_tasks(point.results):
            for metric, _ in task_headlines(point.results, task):
                columns[(task, metric)] = None
    return columns


def _dense(points: list[PointResult]) -> PointResult | None:
    return next((p for p in points if p.point["method"] == "none"), None)


def comparisons(points: list[PointResult]) -> dict[tuple[str, str, str], Comparison | str]:
    """``{(point id, task, metric key): Comparison or why there is none}`` for every non-dense point."""
    dense = _dense(points)
    out: dict[tuple[str, str, str], Comparison | str] = {}
    if dense is None:
        return out
    for point in points:
        if point is dense:
            continue
        for task, metric in _columns(points):
            if metric not in point.results.get("results", {}).get(task, {}):
                continue
            if metric not in dense.results.get("results", {}).get(task, {}):
                out[(point.point["id"], task, metric)] = "dense has no such score"
                continue
            try:
                out[(point.point["id"], task, metric)] = compare_point(dense, point, task, metric)
            except SamplesUnusable as error:
                out[(point.point["id"], task, metric)] = str(error)
    return out


def markdown_table(points: list[PointResult], compared: dict | None = None) -> str:
    """Rows = compression points; columns = coordinates, measured sparsity, each task's headline metrics.

    Marks: the interval verdict where per-document samples exist, else the point estimate's (labelled so).
    """
    compared = comparisons(points) if compared is None else compared
    dense = _dense(points)
    columns = _columns(points)
    header = ["point", "method", "sparsity", "pattern", "bits", "measured sparsity"]
    header += [f"{task} ({metric.split(',')[0]})" for task, metric in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    estimate_only = False
    for point in points:
        coords = point.point
        row = [coords["id"], coords["method"], _fmt(coords["sparsity"]), coords["pattern"] or "–",
               _fmt(coords["bits"]), _fmt(point.measured_sparsity)]  # fmt: skip
        for task, metric in columns:
            value = point.results.get("results", {}).get(task, {}).get(metric)
            cell = _fmt(value)
            result = compared.get((coords["id"], task, metric))
            if isinstance(result, Comparison):
                cell += f" {SYMBOLS[result.verdict]}".rstrip()
            elif value is not None and dense is not None and point is not dense:
                dense_value = dense.results.get("results", {}).get(task, {}).get(metric)
                if dense_value is not None:
                    ok = matches(value, dense_value, _higher_is_better(point.results, task, metric))
                    cell += "" if ok is None else " ✓*" if ok else " ✗*"
                    estimate_only = estimate_only or ok is not None
            row.append(cell)
        lines.append("| " + " | ".join(row) + " |")
    if dense is None:
        legend = "\nNo dense point in this run: matching verdicts need one."
    else:
        legend = (
            f"\n✓ matching, ✗ not matching, ~ inconclusive: the 95% interval of the change from dense"
            f" lies within {MATCHING_TOLERANCE:.0%} of dense (LLM-KICK), beyond it, or straddles it; no mark:"
            " dense scores 0 or there are no samples."
        )
        if estimate_only:
            legend += (
                " ✓*/✗*: point estimate only, no per-document samples (sweep with --log_samples), so"
                " sampling error is not accounted for."
            )
    return "\n".join(lines) + "\n" + legend + "\n"


def comparison_tables(points: list[PointResult], compared: dict) -> str:
    """One table per headline metric: each point against dense, with intervals, n and the verdict."""
    blocks = []
    for task, metric in _columns(points):
        rows = [(pid, result) for (pid, t, m), result in compared.items() if (t, m) == (task, metric)]
        if not rows:
            continue
        name = metric.split(",")[0]
        lines = [
            f"### {task} — {name}",
            "",
            "| point | n | dense | point | difference [95% CI] | relative [95% CI] | McNemar p | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pid, result in rows:
            if not isinstance(result, Comparison):
                lines.append(f"| {pid} | – | – | – | – | – | – | no verdict: {result} |")
                continue
            relative = (
                f"{_pct(result.relative)} [{_pct(result.relative_ci[0])}, {_pct(result.relative_ci[1])}]"
                if result.relative is not None and result.relative_ci is not None
                else "– (dense is 0)"
            )
            lo, hi = result.difference_ci
            p_value = "–" if result.mcnemar_p is None else f"{result.mcnemar_p:.3g}"
            lines.append(
                f"| {pid} | {result.n} | {_fmt(result.dense)} | {_fmt(result.point)} | "
                f"{result.difference:+.4g} [{lo:+.4g}, {hi:+.4g}] | {relative} | {p_value} | "
                f"{result.verdict} |"
            )
        methods = sorted({r.method for _, r in rows if isinstance(r, Comparison)})
        if methods:
            lines += ["", "Intervals: " + "; ".join(methods) + "."]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def report_json(points: list[PointResult], compared: dict, sweep: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable report (schema documented in the README)."""
    columns = _columns(points)
    out_points = []
    for point in points:
        entries = point.results.get("results", {})
        top = reported_tasks(point.results)
        scores: dict[str, dict[str, float]] = {}
        for task, metric in columns:
            if metric in entries.get(task, {}):
                scores.setdefault(task, {})[metric.split(",")[0]] = entries[task][metric]
        compared_here: dict[str, dict[str, Any]] = {}
        for (pid, task, metric), result in compared.items():
            if pid == point.point["id"]:
                compared_here.setdefault(task, {})[metric.split(",")[0]] = (
                    result.as_dict()
                    if isinstance(result, Comparison)
                    else {"verdict": paired_stats.NO_VERDICT, "reason": result}
                )
        subtasks = {
            name: {key.split(",")[0]: value for key, value in _numeric_metrics(metrics).items()}
            for name, metrics in entries.items()
            if name not in top and _numeric_metrics(metrics)
        }
        out_points.append({
            **point.point, "measured_sparsity": point.measured_sparsity, "scores": scores,
            "comparisons": compared_here, "subtasks": subtasks,
        })  # fmt: skip
    return {
        "schema": REPORT_SCHEMA,
        "tolerance": MATCHING_TOLERANCE,
        "confidence": paired_stats.CONFIDENCE,
        "run": {key: sweep.get(key) for key in ("base_model_args", "tasks", "compress_args", "lm_eval_args")},
        "headlines": [{"task": task, "metric": metric.split(",")[0]} for task, metric in columns],
        "points": out_points,
    }


def _is_perplexity(metric: str) -> bool:
    return metric.split(",")[0] in RATIO_METRICS


def _series(points: list[PointResult]) -> Iterator[tuple[str, list[PointResult]]]:
    for method in sorted({p.point["method"] for p in points}):
        yield method, [p for p in points if p.point["method"] == method]


def plot_run(points: list[PointResult], out_dir: Path, compared: dict | None = None) -> list[Path]:
    """One PNG per headline metric: score vs sparsity per method with paired 95% interval bars, and below
    it (same x axis) the relative change from dense of that score and of perplexity; N:M and bits panels
    only when the run has such points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = comparisons(points) if compared is None else compared
    dense = _dense(points)
    columns = list(_columns(points))
    perplexity = next(((t, m) for t, m in columns if _is_perplexity(m)), None)
    unstructured = [p for p in points if p.point["sparsity"] is not None and not p.point["pattern"]]
    nm = [p for p in points if p.point["pattern"]]
    quantized = [p for p in points if p.point["bits"] is not None and p.point["sparsity"] is None]
    panels = [
        name for name, members in (("sparsity", unstructured), ("N:M", nm), ("bits", quantized)) if members
    ]
    panels = panels or ["sparsity"]
    methods = sorted({p.point["method"] for p in points if p.point["method"] != "none"})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}
    markers = dict(zip(methods, "osD^vP*X", strict=False))
    written = []
    for task, metric in columns:
        name = metric.split(",")[0]

        def value(point: PointResult, task: str = task, metric: str = metric) -> float | None:
            return point.results.get("results", {}).get(task, {}).get(metric)

        def comparison(point: PointResult, task: str = task, metric: str = metric) -> Comparison | None:
            found = compared.get((point.point["id"], task, metric))
            return found if isinstance(found, Comparison) else None

        dense_value = value(dense) if dense else None
        show_relative = dense is not None
        figure, axes = plt.subplots(
            2 if show_relative else 1, len(panels), figsize=(5.2 * len(panels), 7 if show_relative else 4),
            squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 2]} if show_relative else None,
        )  # fmt: skip
        for column, panel in enumerate(panels):
            top, bottom = axes[0][column], axes[1][column] if show_relative else None
            members = {"sparsity": unstructured, "N:M": nm, "bits": quantized}[panel]
            labels: list[Any] = []
            if panel == "N:M":
                labels = sorted(
                    {p.point["pattern"] for p in nm}, key=lambda s: [int(x) for x in s.split(":")]
                )
            elif panel == "bits":
                labels = sorted({p.point["bits"] for p in quantized}, reverse=True)
            group = [m for m in methods if any(p.point["method"] == m for p in members)]
            for k, method in enumerate(group):
                offset = (k - (len(group) - 1) / 2) * (0.006 if panel == "sparsity" else 0.12)
                chosen = [p for p in members if p.point["method"] == method]
                if panel == "sparsity":
                    chosen.sort(key=lambda p: p.point["sparsity"])
                    xs = [p.point["sparsity"] for p in chosen]
                else:
                    key = "pattern" if panel == "N:M" else "bits"
                    chosen.sort(key=lambda p, key=key: labels.index(p.point[key]))
                    xs = [labels.index(p.point[key]) for p in chosen]
                ys = [value(p) for p in chosen]
                if panel == "sparsity" and dense_value is not None:
                    xs, ys = [0.0, *xs], [dense_value, *ys]
                lows, highs = [], []
                for p in ([dense] if panel == "sparsity" and dense_value is not None else []) + chosen:
                    c = comparison(p) if p is not dense else None
                    v = value(p)
                    # Drawn only down to 0 for scores: the conservative interval may reach below a
                    # score that cannot be negative (report.json keeps the interval as computed).
                    floor = -math.inf if _is_perplexity(metric) else 0.0
                    lows.append(
                        0.0
                        if c is None or v is None
                        else v - max(floor, v + c.difference_ci[0] - c.difference)
                    )
                    highs.append(
                        0.0 if c is None or v is None else (v + c.difference_ci[1] - c.difference) - v
                    )
                xs_plot = [x + offset for x in xs]
                face = "white" if k % 2 else colors[method]
                style = {"color": colors[method], "marker": markers[method], "label": method, "capsize": 3,
                         "markersize": 6, "markerfacecolor": face}  # fmt: skip
                line = "-" if panel == "sparsity" else "none"
                top.errorbar(xs_plot, ys, yerr=[lows, highs], linestyle=line, **style)
                if bottom is not None and dense is not None:
                    rel_x, rel_y, rel_lo, rel_hi = [], [], [], []
                    for x, p in zip(xs_plot[-len(chosen) :], chosen, strict=True):
                        c = comparison(p)
                        if c is not None and c.relative is not None and c.relative_ci is not None:
                            rel_x.append(x)
                            rel_y.append(100 * c.relative)
                            rel_lo.append(100 * (c.relative - max(-1.0, c.relative_ci[0])))  # >= -100%
                            rel_hi.append(100 * (c.relative_ci[1] - c.relative))
                    if panel == "sparsity" and rel_x:
                        rel_x, rel_y = [0.0 + offset, *rel_x], [0.0, *rel_y]
                        rel_lo, rel_hi = [0.0, *rel_lo], [0.0, *rel_hi]
                    if rel_x:
                        bottom.errorbar(rel_x, rel_y, yerr=[rel_lo, rel_hi], linestyle=line,
                                        **{**style, "label": f"{name} ({method})"})  # fmt: skip
                    if perplexity is not None and perplexity != (task, metric):
                        ppl_x, ppl_y = [], []
                        for x, p in zip(xs_plot[-len(chosen) :], chosen, strict=True):
                            found = compared.get((p.point["id"], *perplexity))
                            if isinstance(found, Comparison) and found.relative is not None:
                                ppl_x.append(x)
                                ppl_y.append(100 * found.relative)
                        if panel == "sparsity" and ppl_x:
                            ppl_x, ppl_y = [0.0 + offset, *ppl_x], [0.0, *ppl_y]
                        if ppl_x:
                            dashed = "--" if panel == "sparsity" else "none"
                            label = f"perplexity ({method})"
                            bottom.plot(
                                ppl_x, ppl_y, color=colors[method], linestyle=dashed, marker="x", label=label
                            )
            if dense_value is not None:
                top.axhline(dense_value, color="black", linestyle="--", linewidth=1, label="dense")
                higher = _higher_is_better(dense.results, task, metric)
                limit = dense_value * (1 - MATCHING_TOLERANCE if higher else 1 + MATCHING_TOLERANCE)
                top.axhline(limit, color="grey", linestyle=":", linewidth=1, label="matching limit (5%)")
            if bottom is not None:
                bottom.axhspan(-100 * MATCHING_TOLERANCE, 100 * MATCHING_TOLERANCE, color="grey", alpha=0.2,
                               label="±5% of dense")  # fmt: skip
                bottom.axhline(0, color="black", linewidth=0.8)
                bottom.set_ylabel("change from dense (%)")
                # Perplexity can grow by thousands of percent while a score cannot fall below -100%:
                # linear within +-100%, logarithmic beyond, so both stay readable on one axis.
                if max((abs(v) for line in bottom.get_lines() for v in line.get_ydata()), default=0) > 200:
                    bottom.set_yscale("symlog", linthresh=100)
                bottom.grid(alpha=0.3)
                if column == 0:
                    bottom.legend(fontsize=7, ncol=2)
            axis = bottom if bottom is not None else top
            if panel == "sparsity":
                axis.set_xlabel("sparsity")
            else:
                axis.set_xticks(range(len(labels)), [str(label) for label in labels])
                axis.set_xlim(-0.6, len(labels) - 0.4)
                axis.set_xlabel("N:M pattern (N zeros per M)" if panel == "N:M" else "bits per weight")
            if _is_perplexity(metric):
                top.set_yscale("log")
            top.set_ylabel(name)
            top.set_title(panel if len(panels) > 1 else "")
            top.grid(alpha=0.3)
            if column == 0:
                top.legend(fontsize=7)
        figure.suptitle(f"{task} — {name}\n(bars: paired 95% interval vs dense)", fontsize=10)
        figure.tight_layout()
        stem = task if len([c for c in columns if c[0] == task]) == 1 else f"{task}_{name}"
        path = out_dir / f"plot_{stem}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def write_report(run_dir: Path) -> tuple[Path, list[Path]]:
    """Write ``report.md``, ``report.json`` and ``plot_<task>.png`` files into the run directory."""
    points = load_run(run_dir)
    compared = comparisons(points)
    plots = plot_run(points, run_dir, compared)
    sweep = json.loads((run_dir / "sweep.json").read_text())
    body = [
        f"# llmkick sweep: {sweep.get('base_model_args', '')}",
        "",
        f"Tasks: `{sweep.get('tasks', '')}`; extra lm-eval args: `{' '.join(sweep.get('lm_eval_args', []))}`",
        "",
        markdown_table(points, compared),
        "## Each point against dense, on the same documents",
        "",
        comparison_tables(points, compared) or "No comparison: the run has no dense point.\n",
        *[f"![{plot.stem}]({plot.name})" for plot in plots],
        "",
    ]
    report = run_dir / "report.md"
    report.write_text("\n".join(body))
    (run_dir / "report.json").write_text(json.dumps(report_json(points, compared, sweep), indent=1))
    return report, plots
