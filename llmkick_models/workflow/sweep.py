"""Sweeps: one lm-eval run per compression point, resumable, results kept per point.

A run directory holds ``points/<point id>/results.json`` (lm-eval's results JSON, copied into place only
after the run succeeded) and ``sweep.json`` (the command that built it).  A point whose ``results.json``
exists is finished and skipped, so an interrupted sweep is resumed by running the same command again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkick_models.engine.methods import METHODS, build_spec, method_class

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPoint:
    """One compression setting of a sweep."""

    method: str = "none"
    sparsity: float | None = None
    pattern: str | None = None
    bits: int | None = None

    @property
    def point_id(self) -> str:
        """File-system safe, human-readable id, e.g. ``dense``, ``wanda-s0.5``, ``sparsegpt-2of4``."""
        if self.method == "none":
            return "dense"
        parts = [self.method]
        if self.pattern:
            parts.append(self.pattern.replace(":", "of"))
        elif self.sparsity is not None:
            parts.append(f"s{self.sparsity:g}")
        if self.bits is not None:
            parts.append(f"{self.bits}bit")
        return "-".join(parts)

    def model_args(self) -> str:
        """This point's compressed-hf arguments."""
        args = {"method": self.method, "sparsity": self.sparsity, "pattern": self.pattern, "bits": self.bits}
        return ",".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in args.items() if value is not None)  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """For the report: the point's coordinates."""
        return {"id": self.point_id, "method": self.method, "sparsity": self.sparsity,
                "pattern": self.pattern, "bits": self.bits}  # fmt: skip


def plan_points(
    methods: Iterable[str],
    sparsities: Iterable[float] = (),
    patterns: Iterable[str] = (),
    bits: Iterable[int] = (),
) -> list[SweepPoint]:
    """The grid: dense first; every pruning method at every sparsity and pattern; quantizers at every bits.

    Sparsity 0 is the dense point (listed once).  Every point is validated here, before any run starts.
    """
    points = [SweepPoint()]
    for method in methods:
        if method not in METHODS or method == "none":
            allowed = ", ".join(m for m in METHODS if m != "none")
            raise ValueError(f"--methods: unknown method {method!r}; allowed: {allowed}")
        implementation = method_class(method)
        candidates: list[SweepPoint] = []
        if any(option.name == "sparsity" for option in implementation.options):
            candidates += [SweepPoint(method, sparsity=s) for s in sparsities if s > 0]
            candidates += [SweepPoint(method, pattern=p) for p in patterns]
        if implementation.always_quantizes():
            candidates += [SweepPoint(method, bits=b) for b in bits]
        if not candidates:
            raise ValueError(f"--methods {method}: no --sparsities/--patterns/--bits value applies to it")
        for point in candidates:
            # Raises, naming the bad value (bits outside 2..8 included).
            build_spec(point.method, point.sparsity, point.pattern, bits=point.bits)
        points += candidates
    seen: set[str] = set()
    return [p for p in points if not (p.point_id in seen or seen.add(p.point_id))]


def point_args(point: SweepPoint, base_model_args: str, compress_args: dict[str, str]) -> str:
    """Full --model_args for a point: the base (pretrained=..., dtype=...), the point, and the extra
    compression args that this point's method accepts (calibration args are not given to magnitude)."""
    implementation = method_class(point.method)
    # e.g. percdamp= reaches Wanda only when it quantizes with GPTQ
    quantizes = implementation.always_quantizes() or point.bits is not None
    accepted = {option.name for option in implementation.offered_options(quantizes)}
    extra = [f"{key}={value}" for key, value in compress_args.items() if key in accepted]
    return ",".join(part for part in (base_model_args, point.model_args(), *extra) if part)


def run_sweep(
    points: Sequence[SweepPoint],
    run_dir: Path,
    *,
    base_model_args: str,
    tasks: str,
    compress_args: dict[str, str],
    lm_eval_args: Sequence[str] = (),
) -> list[Path]:
    """Run lm-eval for every unfinished point (one process each, so memory is returned between points)."""
    from tqdm.auto import tqdm

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "sweep.json").write_text(json.dumps({
        "base_model_args": base_model_args, "tasks": tasks, "compress_args": compress_args,
        "lm_eval_args": list(lm_eval_args), "points": [p.as_dict() for p in points],
    }, indent=1))  # fmt: skip
    finished = []
    bar = tqdm(points, desc="llmkick sweep", unit="point")
    for index, point in enumerate(bar, 1):
        point_dir = run_dir / "points" / point.point_id
        results_file = point_dir / "results.json"
        if results_file.is_file():
            print(f"[{index}/{len(points)}] {point.point_id}: done earlier, skipped", flush=True)
            finished.append(results_file)
            continue
        bar.set_postfix_str(point.point_id)
        start = time.perf_counter()
        raw_dir = point_dir / "lm_eval"
        command = [
            sys.executable, "-m", "lm_eval", "--model", "compressed-hf",
            "--model_args", point_args(point, base_model_args, compress_args),
            "--tasks", tasks, "--output_path", str(raw_dir), *lm_eval_args,
        ]  # fmt: skip
        # Per-document samples are what `llmkick report` pairs with dense for its intervals and verdicts.
        if "--log_samples" not in command and "-s" not in command:
            command.append("--log_samples")
        point_dir.mkdir(parents=True, exist_ok=True)
        with (point_dir / "lm_eval.log").open("w") as log_file:
            completed = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT)
        if completed.returncode != 0:
            raise RuntimeError(
                f"point {point.point_id} failed (exit {completed.returncode}); see {point_dir}/lm_eval.log"
            )
        newest = max(raw_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
        tmp = results_file.with_suffix(".tmp")
        tmp.write_text(newest.read_text())
        os.replace(tmp, results_file)  # the point counts as finished only once this file exists
        summary = summarize_point(json.loads(results_file.read_text()))
        print(
            f"[{index}/{len(points)}] {point.point_id}: {summary} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        finished.append(results_file)
    return finished


def summarize_point(results: dict[str, Any]) -> str:
    """One line: each task's headline metric."""
    from llmkick_models.workflow.sweep_report import headline_metrics

    return " ".join(f"{task}={value:.4g}" for task, (_metric, value) in headline_metrics(results).items())
