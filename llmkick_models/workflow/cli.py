"""The ``llmkick`` command: ``sweep`` compression points through lm-eval, ``report``, ``compress`` a model.

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

from llmkick_models.engine.options import SPARSITY, parse_pattern


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``llmkick`` (subcommands sweep, report, compress)."""
    parser = argparse.ArgumentParser(prog="llmkick", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser("sweep", help="run lm-eval at every compression point (resumable)")
    sweep.add_argument("--model", required=True, help="pretrained model id or local folder")
    sweep.add_argument(
        "--model_args", default="", help="extra HFLM args for every point, e.g. dtype=bfloat16"
    )
    sweep.add_argument("--methods", type=_csv(str), default=[], help="e.g. magnitude,wanda,sparsegpt")
    sweep.add_argument("--sparsities", type=_csv(SPARSITY.parse), default=[], help="e.g. 0,0.1,0.3,0.5")
    sweep.add_argument(
        "--patterns", type=_csv(lambda p: str(parse_pattern(p))), default=[], help="e.g. 2:4,4:8"
    )
    sweep.add_argument("--bits", type=_csv(int), default=[], help="quantization bits for gptq/rtn, e.g. 8,4")
    sweep.add_argument(
        "--compress_args",
        type=_parse_kv,
        default={},
        help="extra compression args, given only to methods that take them (calibration=..)",
    )
    sweep.add_argument("--tasks", required=True, help="lm-eval tasks, e.g. llmkick_exact_match")
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

    report = commands.add_parser("report", help="markdown table + PNG plots of a sweep's run directory")
    report.add_argument("run_dir", type=Path)

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
        choices=("fake", "compressed-tensors"),
        help="fake: plain HF checkpoint with dequantized (fake-quantized) weights; compressed-tensors: "
        "packed integer weights + scales that vLLM serves (quantized methods only; needs the [export] extra)",
    )

    commands.add_parser("model-args", help="print the table of compression model_args (markdown)")
    judge = commands.add_parser(
        "judge", help="re-judge answers saved by --log_samples (no model is loaded, nothing is generated)"
    )
    judge.add_argument(
        "path", type=Path, help="a samples_<task>_<date>.jsonl, an lm-eval output folder or a sweep"
    )
    judge.add_argument("--metadata", type=json.loads, default={}, help="judge settings as JSON, as lm_eval's")
    judge.add_argument(
        "--label", default=None, help="name of the re-judged results (default: model-protocol)"
    )
    judge.add_argument("--tasks", type=_csv(str), default=None, help="only these judged tasks")
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
    remove = cache_commands.add_parser("rm", help="delete entries by key")
    remove.add_argument("keys", nargs="+", metavar="KEY")
    prune = cache_commands.add_parser("prune", help="evict least recently used entries down to a size")
    prune.add_argument(
        "--max-gb", "--max_gb", dest="max_gb", type=float, default=None,
        help="size to prune down to, in GB (default: $LLMKICK_CACHE_MAX_GB)",
    )  # fmt: skip

    convert = commands.add_parser("convert-gguf", help="save a .gguf checkpoint as a plain HF folder (once)")
    convert.add_argument("gguf_file", type=Path)
    convert.add_argument("output", type=Path)
    return parser


def _sweep(args: argparse.Namespace, passthrough: list[str]) -> int:
    from llmkick_models.workflow.sweep import SweepInterrupted, plan_points, preflight, run_sweep
    from llmkick_models.workflow.sweep_report import write_report

    points = plan_points(args.methods, args.sparsities, args.patterns, args.bits)
    base = ",".join(part for part in (f"pretrained={args.model}", args.model_args) if part)
    plan = preflight(points, base_model_args=base, tasks=args.tasks, compress_args=args.compress_args,
                     lm_eval_args=passthrough)  # fmt: skip
    print(f"llmkick sweep: {len(points)} points -> {args.output}: " + ", ".join(p.point_id for p in points))
    try:
        outcome = run_sweep(plan, args.output, rerun=args.rerun, fail_fast=args.fail_fast)
    except SweepInterrupted as stop:
        print(
            f"llmkick sweep: {stop}; the running point was stopped, finished points are kept", file=sys.stderr
        )
        return 128 + stop.signum
    if not args.no_report and outcome.finished:
        report, plots = write_report(args.output)
        print(f"report: {report} ({len(plots)} plots)")
    if outcome.failed:
        logs = ", ".join(str(args.output / "points" / p / "lm_eval.log") for p in outcome.failed)
        print(f"llmkick sweep: {len(outcome.failed)} of {len(points)} points failed: "
              f"{', '.join(outcome.failed)} (logs: {logs})", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _cache(args: argparse.Namespace) -> int:
    import datetime

    from llmkick_models.storage.model_cache import ModelCache, max_cache_bytes

    cache = ModelCache(args.dir)
    if args.cache_command == "ls":
        entries = cache.entries()
        for entry in entries:
            used = datetime.datetime.fromtimestamp(entry.last_used).isoformat(timespec="seconds")
            print(f"{entry.key}  {entry.size_bytes / 1e9:8.3f} GB  {used}  {entry.describe()}")
        total = sum(e.size_bytes for e in entries)
        print(f"{len(entries)} entries, {total / 1e9:.3f} GB in {cache.root}")
        return 0
    if args.cache_command == "rm":
        missing = [key for key in args.keys if not cache.remove(key)]
        for key in args.keys:
            if key not in missing:
                print(f"removed {key}")
        if missing:
            print(
                f"no such entry in {cache.root}: {', '.join(missing)} (see `llmkick cache ls`)",
                file=sys.stderr,
            )
            return 1
        return 0
    limit = int(args.max_gb * 1e9) if args.max_gb is not None else max_cache_bytes()
    if limit is None:
        raise SystemExit("llmkick cache prune: give --max-gb or set $LLMKICK_CACHE_MAX_GB")
    if limit < 0:
        raise SystemExit(f"llmkick cache prune: --max-gb {args.max_gb} is negative; allowed: a size >= 0")
    evicted = cache.prune(limit)
    for entry in evicted:
        print(f"evicted {entry.key} ({entry.size_bytes / 1e9:.3f} GB) {entry.describe()}")
    left = sum(e.size_bytes for e in cache.entries())
    print(f"{len(evicted)} entries evicted; {left / 1e9:.3f} GB left in {cache.root}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from llmkick_models.workflow.sweep_report import write_report

    report, plots = write_report(args.run_dir)
    print(report.read_text())
    print(f"report: {report}; plots: {', '.join(str(p) for p in plots)}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.compressed_hf import CompressedHFLM

    if args.output.exists():
        raise SystemExit(f"--output {args.output} exists; choose a new folder")
    model_args = simple_parse_args_string(args.model_args)
    packed = args.format == "compressed-tensors"
    if packed:
        from llmkick_models.engine.methods import build_spec, option_names
        from llmkick_models.storage.export import ExportError, _import_compressed_tensors

        # Fail before loading anything: the library is there and the run will quantize.
        try:
            _import_compressed_tensors()
        except ExportError as error:
            raise SystemExit(str(error)) from None
        spec_args = {k: v for k, v in model_args.items() if k in option_names()}
        if build_spec(**spec_args).bits is None:
            raise SystemExit("--format compressed-tensors needs a quantized model: add bits= to --model_args")
        # The packed codes come from the grids of this run; a cached model has none.
        model_args["cache"] = False
    lm = CompressedHFLM(pretrained=args.model, device=args.device, **model_args)
    model = lm.model
    # Models loaded from GGUF carry a quantization_config that save_pretrained refuses; the weights are
    # already dequantized floats, so the saved folder is a plain HF checkpoint.
    if (
        getattr(model.config, "quantization_config", None) is not None
        and getattr(model, "is_quantized", False) is False
    ):
        del model.config.quantization_config
    report = lm.get_model_info().get("llmkick_compression", {})
    if packed:
        from llmkick_models.storage.export import ExportError, export_compressed_tensors

        assert lm.compression_report is not None
        try:
            export_compressed_tensors(model, lm.compression_report, args.output)
        except ExportError as error:
            raise SystemExit(str(error)) from None
    else:
        model.save_pretrained(args.output)
    lm.tokenizer.save_pretrained(args.output)
    (args.output / "llmkick_compression.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"saved {args.output} (overall sparsity {report.get('overall_sparsity', 0):.4f})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmkick`` console script."""
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if args.command != "sweep" and passthrough:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    if args.command == "sweep":
        if not args.methods:
            parser.error("sweep: --methods is required (e.g. --methods magnitude,wanda)")
        try:
            return _sweep(args, passthrough)
        except ValueError as error:
            parser.error(str(error))
    if args.command == "report":
        return _report(args)
    if args.command == "model-args":
        from llmkick_models.arguments import model_args_table

        print(model_args_table())
        return 0
    if args.command == "judge":
        from llmkick_tasks.judge.rejudge import rejudge_path

        try:
            written = rejudge_path(args.path, args.metadata, label=args.label, tasks=args.tasks)
        except ValueError as error:  # bad path, settings, protocol files: the message says which
            raise SystemExit(f"llmkick judge: {error}") from None
        print("\n".join(f"llmkick judge: wrote {file}" for file in written))
        return 0
    if args.command == "cache":
        return _cache(args)
    if args.command == "convert-gguf":
        from llmkick_models.storage.gguf import convert_gguf

        print(f"saved {convert_gguf(args.gguf_file, args.output)}")
        return 0
    return _compress(args)


if __name__ == "__main__":
    sys.exit(main())
