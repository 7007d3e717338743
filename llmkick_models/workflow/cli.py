"""The llmkick command: sweep compression points through lm-eval, report them, compress a model.

    llmkick sweep --model X --methods magnitude,wanda --sparsities 0,0.3,0.5 --patterns 2:4 \\
        --tasks llmkick_exact_match,llmkick_wikitext2_ppl --output runs/x [lm_eval options: --device cpu ...]
    llmkick report runs/x
    llmkick judge runs/x --metadata '{"judge_model": "gpt-4o", "judge_protocol": "paper"}'   # re-judge
    llmkick cache ls | rm KEY | prune --max-gb 50
    llmkick compress --model X --model_args method=magnitude,sparsity=0.5 --output compressed/
    llmkick compress --model X --model_args method=gptq,bits=4,calibration=c4 --format compressed-tensors \
        --output packed/   # vLLM-loadable (needs the [export] extra)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmkick_models.engine.options import SPARSITY, CompressionArgumentError, parse_pattern
from llmkick_models.workflow.commands import (
    UsageError,
    cache_command,
    compress_command,
    report_command,
    sweep_command,
)
from llmkick_models.workflow.study_args import add_study_options
from llmkick_models.workflow.upstream_cli import UPSTREAM_COMMANDS, add_upstream_commands, upstream_command
from llmkick_tasks.errors import UserError

DESCRIPTION = "LLM-KICK for lm-evaluation-harness: sweep compression points, report them, compress a model."

EXAMPLES = """\
examples:
  llmkick sweep --model HuggingFaceTB/SmolLM2-360M --methods magnitude,wanda --sparsities 0,0.3,0.5 \\
      --patterns 2:4 --tasks llmkick_exact_match --output runs/x --device cuda:0
  llmkick report runs/x
  llmkick judge runs/x --metadata '{"judge_model": "gpt-4o", "judge_protocol": "paper"}'
  llmkick cache ls
  llmkick compress --model X --model_args method=sparsegpt,pattern=2:4 --output X-2of4
  llmkick model-args
  llmkick task-knobs

'llmkick COMMAND --help' shows a command's options. A user error (bad argument, missing file) prints one
message and exits 2; add --debug (anywhere on the command line) for the traceback.
"""

SWEEP_EPILOG = """\
Any option not listed above is passed through to lm_eval for every point, e.g. --device cpu, --batch_size 16,
--limit 100, --num_fewshot 5, --include_path DIR, --seed 0; lm-eval's own parser checks them before the
first point runs. The sweep sets --model, --model_args, --tasks and --output_path itself.

examples:
  # every method at every sparsity and 2:4, on one GPU (resumable: run it again to continue)
  llmkick sweep --model X --methods magnitude,wanda,sparsegpt --sparsities 0,0.3,0.5 --patterns 2:4 \\
      --compress_args calibration=wikitext2,nsamples=64 --tasks llmkick_exact_match,llmkick_wikitext2_ppl \\
      --output runs/x --device cuda:0 --batch_size 16
  # a calibration-count study: GPTQ calibrated on wikitext2, the others on c4; wanda also 4-bit after pruning
  llmkick sweep --model X --methods sparsegpt,wanda,gptq --sparsities 0.5 --bits 4 --grid nsamples=8,32,128 \
      --compress_args calibration=c4 --compress_args gptq:calibration=wikitext2 --tasks t --output runs/n
  # LLM-KICK's grid: print its points and estimated lm-eval requests, run nothing
  llmkick sweep --preset llmkick-paper --model X --output runs/paper --dry-run
  # four points at once on a 4-GPU node
  llmkick sweep ... --output runs/x --devices cuda:0,cuda:1,cuda:2,cuda:3
  # two CPU workers sharing the cores
  llmkick sweep ... --output runs/x --device cpu --parallel 2
  # one Slurm job per point (pip install 'llmkick[slurm]')
  llmkick sweep ... --output runs/x --device cuda --launcher slurm --parallel 8 \\
      --slurm_args slurm_partition=gpu,timeout_min=240,gpus_per_node=1
"""


class UserErrorExit(SystemExit):
    """Exit status 2 (as argparse's own errors) after the message was printed; ``str()`` is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def user_error_types() -> tuple[type[Exception], ...]:
    """What counts as the user's error: our own types only (UsageError, SweepError, JudgeConfigError, ...
    are UserErrors); anything else is a bug or the system's failure and keeps its traceback.

    The engine's validation errors predate UserError and are named here; the model-layout one only when its
    module (which imports torch) was loaded, as it must have been to raise it.
    """
    types: list[type[Exception]] = [UserError, CompressionArgumentError]
    layout = sys.modules.get("llmkick_models.engine.model_layout")
    if layout is not None:
        types.append(layout.UnsupportedModelError)
    return tuple(types)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmkick")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown (not installed)"


def _csv(convert: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [convert(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as error:  # keep our message (it names the value and what is allowed)
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _parse_kv(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected key=value pairs separated by commas, got {item!r}")
        pairs[key] = value
    return pairs


def _max_gb(text: str) -> int:
    from llmkick_models.storage.cache_settings import parse_max_gb

    try:
        return parse_max_gb(text)
    except ValueError as error:  # argparse names the flag in front of our message
        raise argparse.ArgumentTypeError(str(error)) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error.msg}, character {error.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object such as \'{{"judge_model": "gpt-4o"}}\', got {text!r}'
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llmkick``: one subcommand per command, each added by its own function."""
    parser = argparse.ArgumentParser(
        prog="llmkick",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"llmkick {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_sweep(commands)
    report = commands.add_parser("report", help="markdown table + PNG plots of a sweep's run directory")
    report.add_argument("run_dir", type=Path)
    _add_compress(commands)
    commands.add_parser("model-args", help="print the table of compression model_args (markdown)")
    commands.add_parser("task-knobs", help="print the tables of the tasks' and the judge's --metadata knobs")
    _add_judge(commands)
    _add_cache(commands)
    convert = commands.add_parser("convert-gguf", help="save a .gguf checkpoint as a plain HF folder (once)")
    convert.add_argument("gguf_file", type=Path)
    convert.add_argument("output", type=Path)
    add_upstream_commands(commands)
    return parser


Subcommands = argparse._SubParsersAction  # what add_subparsers returns (argparse does not export the name)


def _add_sweep(commands: Subcommands) -> None:
    # No abbreviations: lm-eval's --device must pass through, not be taken as a prefix of --devices.
    sweep = commands.add_parser(
        "sweep",
        help="run lm-eval at every compression point (resumable)",
        description="Run lm-eval once per compression point (dense first), resumable, with a report at the "
        "end.",
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    sweep.add_argument("--model", help="pretrained model id or local folder")
    sweep.add_argument(
        "--models", type=_csv(str), default=[], help="several models, each with its own dense, e.g. A,B"
    )
    sweep.add_argument(
        "--model_args", default="", help="extra HFLM args for every point, e.g. dtype=bfloat16"
    )
    sweep.add_argument("--methods", type=_csv(str), default=[], help="e.g. magnitude,wanda,sparsegpt")
    sweep.add_argument("--sparsities", type=_csv(SPARSITY.parse), default=[], help="e.g. 0,0.1,0.3,0.5")
    sweep.add_argument(
        "--patterns", type=_csv(lambda p: str(parse_pattern(p))), default=[], help="e.g. 2:4,4:8"
    )
    sweep.add_argument(
        "--bits",
        type=_csv(int),
        default=[],
        help="bits for the quantization methods, e.g. 8,4 (each method at those its bits= allows)",
    )
    add_study_options(sweep)
    sweep.add_argument("--tasks", default="", help="lm-eval tasks, e.g. llmkick_exact_match")
    sweep.add_argument("--output", required=True, type=Path, help="run directory (re-run to resume)")
    sweep.add_argument("--no_report", action="store_true", help="do not write the report at the end")
    sweep.add_argument(
        "--rerun",
        action="store_true",
        help="recompute finished points whose settings differ from this command's (default: refuse)",
    )
    sweep.add_argument(
        "--fail_fast", action="store_true", help="stop at the first failing point (default: run the others)"
    )
    sweep.add_argument(
        "--parallel",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run N points at once: one per --devices entry, or N CPU workers sharing the cores; with "
        "--launcher slurm, N jobs in flight (default: 1, every point at once on Slurm)",
    )
    sweep.add_argument(
        "--devices",
        type=_csv(str),
        default=None,
        help="one worker per device, e.g. cuda:0,cuda:1,cuda:2,cuda:3 (replaces --device per point)",
    )
    sweep.add_argument(
        "--launcher",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="local: worker processes on this machine; slurm: one job per point through submitit (needs "
        "the [slurm] extra); submitit-local: the same jobs as processes on this machine (testing)",
    )
    sweep.add_argument(
        "--slurm_args",
        type=_parse_kv,
        default={},
        help="submitit parameters of each job, e.g. slurm_partition=gpu,timeout_min=240,gpus_per_node=1,"
        "cpus_per_task=8,mem_gb=64",
    )


def _add_compress(commands: Subcommands) -> None:
    compress = commands.add_parser("compress", help="compress a model and save it (for --model hf or vLLM)")
    compress.add_argument("--model", required=True, help="pretrained model id or local folder")
    compress.add_argument(
        "--model_args", default="", help="compressed-hf args, e.g. method=magnitude,sparsity=0.5"
    )
    compress.add_argument("--output", required=True, type=Path, help="folder to write (must not exist)")
    compress.add_argument("--device", default="cpu", help="where compression runs (cpu, cuda:0, ...)")
    compress.add_argument(
        "--format",
        default="fake",
        choices=("fake", "compressed-tensors", "bitsandbytes"),
        help="fake: plain HF checkpoint with dequantized (fake-quantized) weights; compressed-tensors: "
        "packed integer weights + scales that vLLM serves (quantized methods only; needs the [export] "
        "extra); bitsandbytes: transformers' 8-bit bitsandbytes checkpoint (method=llm_int8 only)",
    )


def _add_judge(commands: Subcommands) -> None:
    judge = commands.add_parser(
        "judge", help="re-judge answers saved by --log_samples (no model is loaded, nothing is generated)"
    )
    judge.add_argument(
        "path", type=Path, help="a samples_<task>_<date>.jsonl, an lm-eval output folder or a sweep"
    )
    judge.add_argument(
        "--metadata", type=_json_object, default={}, help="judge settings as a JSON object, as lm_eval's"
    )
    judge.add_argument(
        "--label",
        default=None,
        help="name of the re-judged results (default: the judge model and protocol used, model-protocol)",
    )
    judge.add_argument("--overwrite", action="store_true", help="replace results of an existing --label")
    judge.add_argument("--tasks", type=_csv(str), default=None, help="only these judged tasks")


def _add_cache(commands: Subcommands) -> None:
    cache = commands.add_parser("cache", help="list, remove or prune compressed models in the model cache")
    cache.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="cache folder (default: $LLMKICK_CACHE_DIR or ~/.cache/llmkick/models)",
    )
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_commands.add_parser(
        "ls", help="entries, least recently used first: key, size, last use, model, spec"
    )
    remove = cache_commands.add_parser(
        "rm", help="delete entries by key (as `ls` shows it, or a unique prefix of 8+ hex digits)"
    )
    remove.add_argument("keys", nargs="+", metavar="KEY")
    prune = cache_commands.add_parser(
        "prune",
        help="evict malformed, then least recently used entries down to a size (one prune at a time: "
        "a second one waits for the first)",
    )
    prune.add_argument(
        "--max-gb", "--max_gb", dest="max_bytes", type=_max_gb, default=None, metavar="GB",
        help="size to prune down to, in GB, finite and >= 0 (default: $LLMKICK_CACHE_MAX_GB)",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmkick`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Accepted anywhere (after `sweep` it would otherwise be passed through to lm_eval).
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if args.command == "upstream-score":  # its lm-eval arguments follow `--`
        passthrough = [arg for arg in passthrough if arg != "--"]
    elif args.command != "sweep" and passthrough:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    try:
        return _run_command(args, passthrough)
    except user_error_types() as error:
        if debug:
            raise
        prefix = f"llmkick {args.command}: "
        message = str(error).removeprefix(prefix)  # some messages already name the command
        print(f"{prefix}error: {message}", file=sys.stderr)
        raise UserErrorExit(message) from None


def _run_command(args: argparse.Namespace, passthrough: list[str]) -> int:
    if args.command == "sweep":
        return sweep_command(args, passthrough)
    if args.command == "report":
        return report_command(args)
    if args.command == "model-args":
        from llmkick_models.arguments import model_args_table

        print(model_args_table())
        return 0
    if args.command == "task-knobs":
        from llmkick_tasks.run_metadata import knob_tables

        print("\n\n".join(f"{readme}:\n\n{table}" for readme, table in knob_tables().items()))
        return 0
    if args.command == "judge":
        from llmkick_tasks.judge.client import JudgeRequestError
        from llmkick_tasks.judge.rejudge import rejudge_path

        try:
            written = rejudge_path(
                args.path, args.metadata, label=args.label, tasks=args.tasks, overwrite=args.overwrite
            )
        except JudgeRequestError as error:  # the judge failed (its message is redacted): no traceback
            raise UsageError(str(error)) from error
        print("\n".join(f"llmkick judge: wrote {file}" for file in written))
        return 0
    if args.command == "cache":
        return cache_command(args)
    if args.command in UPSTREAM_COMMANDS:
        return upstream_command(args, passthrough)
    if args.command == "convert-gguf":
        from llmkick_models.storage.gguf import convert_gguf

        print(f"saved {convert_gguf(args.gguf_file, args.output)}")
        return 0
    return compress_command(args)


if __name__ == "__main__":
    sys.exit(main())
