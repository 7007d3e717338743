"""The sweep's study options on the command line: --grid, --compress_args (scoped or not), --preset,
--dry-run and --backend (the grid itself is planned in :mod:`.study_plan`)."""

from __future__ import annotations

import argparse

from llmkick_models.workflow.grid_axes import parse_grid_arg

PRESET_NAMES = ("llmkick-paper",)


def parse_compress_args(text: str) -> dict[str, str]:
    """``calibration=c4,nsamples=64`` (for every method that takes them) or ``gptq:calibration=wikitext2,
    sym=false`` (for gptq only: a ``METHOD:`` prefix scopes its item and the items after it, up to the next
    prefix).  Keys come back scoped as given: ``{"gptq:calibration": "wikitext2", "gptq:sym": "false"}``."""
    pairs: dict[str, str] = {}
    scope = ""
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(
                f"expected key=value pairs separated by commas, optionally scoped to a method "
                f"(gptq:calibration=wikitext2), got {item!r}"
            )
        method, colon, name = key.strip().rpartition(":")
        if colon:
            scope = method.strip().lower()
        full = f"{scope}:{name.strip()}" if scope else name.strip()
        if full in pairs and pairs[full] != value:
            raise argparse.ArgumentTypeError(f"{full} given twice ({pairs[full]!r}, {value!r})")
        pairs[full] = value
    return pairs


def merge_compress_args(given: list[dict[str, str]] | None) -> dict[str, str]:
    """Every --compress_args in one mapping; a key given twice with different values is refused."""
    from llmkick_models.workflow.sweep_plan import SweepError

    merged: dict[str, str] = {}
    for pairs in given or []:
        for key, value in pairs.items():
            if key in merged and merged[key] != value:
                raise SweepError(
                    f"--compress_args {key}= given twice ({merged[key]!r}, {value!r}); give it once"
                )
            merged[key] = value
    return merged


def _grid(text: str) -> tuple[str, list[str]]:
    try:
        return parse_grid_arg(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_study_options(sweep: argparse.ArgumentParser) -> None:
    """--compress_args, --grid, --preset, --dry-run and --backend of ``llmkick sweep``."""
    sweep.add_argument(
        "--compress_args",
        type=parse_compress_args,
        action="append",
        metavar="[METHOD:]KEY=V,...",
        help="extra compression args, given only to methods that take them (calibration=c4,nsamples=64); "
        "METHOD:KEY=V for one method only (gptq:calibration=wikitext2,sym=false), overriding an unscoped "
        "KEY; repeatable",
    )
    sweep.add_argument(
        "--grid",
        type=_grid,
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="one more axis: any compression option, e.g. nsamples=16,32,64 or calibration=c4,wikitext2 "
        "(repeatable; each method's points are crossed with the axes it takes)",
    )
    sweep.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="a whole grid: llmkick-paper = LLM-KICK's methods, sparsities 0-0.5, 2:4 and 4:8, 8 and 4 bits, "
        "GPTQ-like methods calibrated on wikitext2 and pruning on c4, tasks llmkick_paper + "
        "llmkick_wikitext2_ppl",
    )
    sweep.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="print the points and the estimated lm-eval requests per point, run nothing",
    )
    sweep.add_argument(
        "--backend",
        choices=("hf", "vllm"),
        default="hf",
        help="what evaluates each point: hf = --model compressed-hf (default); vllm = --model "
        "compressed-vllm (the same compressed weights served by vLLM; needs the [vllm] extra)",
    )
