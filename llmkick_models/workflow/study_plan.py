"""From the sweep's command line to its grid: a --preset expanded, --compress_args merged, --grid axes
checked against the run's methods, then :func:`~.sweep_plan.plan_grid`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from llmkick_models.engine.methods import METHODS, build_spec
from llmkick_models.engine.options import CompressionArgumentError
from llmkick_models.workflow.grid_axes import check_axes
from llmkick_models.workflow.model_grid import per_model
from llmkick_models.workflow.study_args import merge_compress_args
from llmkick_models.workflow.sweep_plan import SweepError, SweepGrid, plan_grid

#: LLM-KICK's pruning and quantization methods, in the paper's order; a preset takes those registered.
PAPER_PRUNING = ("magnitude", "sparsegpt", "wanda")
PAPER_QUANTIZATION = ("gptq", "awq", "llm_int8")


@dataclass
class Preset:
    """A whole grid by name: what it sets on the command line."""

    methods: list[str]
    sparsities: list[float]
    patterns: list[str]
    bits: list[int]
    tasks: str
    compress_args: dict[str, str] = field(default_factory=dict)
    joint: bool = False  # the paper prunes or quantizes, never both


def _calibrates(method: str, **point: object) -> bool:
    """Whether ``method`` reads calibration data at such a point by default (magnitude does not)."""
    try:
        return build_spec(method, **point).calibration is not None
    except CompressionArgumentError:
        return False


def paper_preset() -> Preset:
    """LLM-KICK's grid, from the methods registered now (AWQ once it is): pruning at 0-50% and N:M 2:4,
    4:8; quantization at 8 and 4 bits; GPTQ-like methods calibrated on WikiText-2, pruning on C4."""
    pruning = [m for m in PAPER_PRUNING if m in METHODS]
    quantization = [m for m in PAPER_QUANTIZATION if m in METHODS]
    calibration = {f"{m}:calibration": "c4" for m in pruning if _calibrates(m, sparsity=0.5)}
    calibration |= {f"{m}:calibration": "wikitext2" for m in quantization if _calibrates(m, bits=8)}
    return Preset(
        methods=pruning + quantization,
        sparsities=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
        patterns=["2:4", "4:8"],
        bits=[8, 4],
        tasks="llmkick_paper,llmkick_wikitext2_ppl",
        compress_args=calibration,
    )


PRESETS = {"llmkick-paper": paper_preset}


def apply_preset(args: argparse.Namespace, compress_args: dict[str, str]) -> tuple[Preset, dict[str, str]]:
    """The preset named by --preset, refusing any flag that contradicts it; ``compress_args`` with the
    preset's own added."""
    preset = PRESETS[args.preset]()
    flag = f"--preset {args.preset}"
    for name in ("methods", "sparsities", "patterns", "bits", "tasks"):
        if getattr(args, name):
            raise SweepError(f"--{name} contradicts {flag}, which sets it; drop --{name} (or the preset)")
    for key in compress_args:
        name = key.rpartition(":")[2]
        clash = [own for own in preset.compress_args if own.rpartition(":")[2] == name]
        if clash:
            raise SweepError(
                f"--compress_args {key}= contradicts {flag}, which sets {', '.join(clash)} "
                f"({preset.compress_args[clash[0]]}); drop it (or the preset)"
            )
    return preset, compress_args | preset.compress_args


@dataclass
class Study:
    """What the command line asks for: the grid, the tasks and every --compress_args."""

    grid: SweepGrid
    tasks: str
    compress_args: dict[str, str]


def plan_study(args: argparse.Namespace) -> Study:
    """Plan the sweep's grid from its command line (everything validated; nothing run or loaded)."""
    compress_args = merge_compress_args(args.compress_args)
    if args.preset:
        preset, compress_args = apply_preset(args, compress_args)
    else:
        if not args.methods:
            raise SweepError("--methods is required (e.g. --methods magnitude,wanda), or give --preset")
        if not args.tasks:
            raise SweepError("--tasks is required (e.g. --tasks llmkick_exact_match), or give --preset")
        preset = Preset(args.methods, args.sparsities, args.patterns, args.bits, args.tasks, joint=True)
    names = {key.rpartition(":")[2] for key in compress_args}
    axes = check_axes(args.grid, preset.methods, names)
    grid = plan_grid(preset.methods, preset.sparsities, preset.patterns, preset.bits, axes, preset.joint,
                     compress_args)  # fmt: skip
    if args.models:
        grid = per_model(grid, args.models)
    return Study(grid, preset.tasks, compress_args)


def base_model_args(args: argparse.Namespace) -> str:
    """The model_args every point starts from: ``pretrained=--model`` (a --models run: per point) and
    --model_args."""
    if bool(args.model) == bool(args.models):
        raise SweepError("give --model M (one model) or --models A,B (several), not both nor neither")
    return ",".join(
        part for part in (f"pretrained={args.model}" if args.model else "", args.model_args) if part
    )
