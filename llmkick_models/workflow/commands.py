"""What each ``llmkick`` command does, once ``cli.py`` has parsed its arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmkick_tasks.errors import UserError

if TYPE_CHECKING:
    from llmkick_models.storage.model_cache import CacheEntry, ModelCache


class UsageError(UserError):
    """A command refuses its arguments: printed as one message, exit status 2 (the traceback with --debug)."""


def sweep_command(args: argparse.Namespace, passthrough: list[str]) -> int:
    """Plan, pre-flight and run a sweep; unknown options go to every lm_eval run; the report at the end."""
    from llmkick_models.workflow.backend import use_backend
    from llmkick_models.workflow.point_processes import SweepInterrupted
    from llmkick_models.workflow.preflight import preflight
    from llmkick_models.workflow.study_plan import base_model_args, plan_study
    from llmkick_models.workflow.sweep import run_sweep
    from llmkick_models.workflow.sweep_report import write_report

    base = base_model_args(args)
    study = plan_study(args)
    grid = study.grid
    if args.dry_run:
        from llmkick_models.workflow.dry_run import dry_run

        return dry_run(study, args, passthrough)
    for note in grid.notes:  # before any check or point runs: what the grid left out and why
        print(f"llmkick sweep: {note}")
    points = grid.points
    passthrough, slots, launcher = plan_workers(args, passthrough)
    plan = preflight(points, base_model_args=base, tasks=study.tasks, compress_args=study.compress_args,
                     lm_eval_args=passthrough)  # fmt: skip
    use_backend(plan, args.backend, args.devices)
    print(f"llmkick sweep: {len(points)} points -> {args.output}: " + ", ".join(p.point_id for p in points))
    try:
        outcome = run_sweep(plan, args.output, rerun=args.rerun, fail_fast=args.fail_fast, slots=slots,
                            launcher=launcher)  # fmt: skip
    except SweepInterrupted as stop:
        print(
            f"llmkick sweep: {stop}; the running points were stopped, finished points are kept",
            file=sys.stderr,
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


def plan_workers(args: argparse.Namespace, passthrough: list[str]) -> tuple[list[str], list[Any], Any]:
    """Check --parallel/--devices/--launcher before anything runs; the pass-through options (a --device
    added when --devices names them), the local worker slots and the submitit launcher (or None)."""
    from llmkick_models.workflow.point_processes import Slot
    from llmkick_models.workflow.slurm import SubmititLauncher, import_submitit
    from llmkick_models.workflow.sweep import option_value
    from llmkick_models.workflow.sweep_plan import SweepError

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    device = option_value(passthrough, "--device")
    if args.launcher != "local":
        if args.devices:
            raise SweepError(f"--devices is for --launcher local; each {args.launcher} job gets its own GPU "
                             f"(gpus_per_node in --slurm_args) and uses --device cuda")  # fmt: skip
        import_submitit()  # before any point runs: the message names the extra to install
        parameters: dict[str, Any] = {k: _number(v) for k, v in args.slurm_args.items()}
        if device and device.startswith("cuda"):
            parameters.setdefault("gpus_per_node", 1)
        if "timeout_min" not in parameters:
            # submitit's default limit is 5 minutes, which would kill nearly every real point.
            if args.launcher == "slurm":
                raise SweepError(
                    "--launcher slurm: give each job's time limit in minutes, e.g. --slurm_args "
                    "timeout_min=240 (submitit's default, 5, is too short for a point)"
                )
            parameters["timeout_min"] = 7 * 24 * 60
        threads = parameters.get("cpus_per_task")
        if args.launcher == "submitit-local" and threads is None:
            threads = max(1, cores // (args.parallel or 1))  # the jobs share this machine's cores
        slot = Slot(threads=int(threads) if threads else None)
        cluster = "slurm" if args.launcher == "slurm" else "local"
        # Slurm queues every point by default; local jobs share this machine, one at a time by default.
        parallel = args.parallel or (None if cluster == "slurm" else 1)
        launcher = SubmititLauncher(cluster, args.output / "submitit", parameters, parallel, slot)
        return passthrough, [], launcher
    if args.slurm_args:
        raise SweepError("--slurm_args needs --launcher slurm or submitit-local")
    if args.devices:
        kinds = {d.split(":")[0] for d in args.devices}
        if len(kinds) != 1 or len(set(args.devices)) != len(args.devices):
            raise SweepError(f"--devices {','.join(args.devices)}: give distinct devices of one kind, e.g. "
                             f"cuda:0,cuda:1")  # fmt: skip
        _check_devices(args.devices)
        if device is not None and device.split(":")[0] not in kinds:
            raise SweepError(f"--device {device} contradicts --devices {','.join(args.devices)}; give one")
        parallel = args.parallel or len(args.devices)
        if parallel > len(args.devices):
            raise SweepError(f"--parallel {parallel} needs as many --devices (got {len(args.devices)}): "
                             f"one point per device")  # fmt: skip
        if device is None:  # the device type enters the fingerprint, as a --device of the command would
            passthrough = [*passthrough, "--device", args.devices[0]]
        threads = max(1, cores // parallel) if kinds == {"cpu"} else None
        return passthrough, [Slot(device=d, threads=threads) for d in args.devices[:parallel]], None
    parallel = args.parallel or 1
    if parallel == 1:
        return passthrough, [Slot()], None
    if device is None or not device.startswith("cpu"):
        raise SweepError(
            f"--parallel {parallel} without --devices runs CPU workers: add --device cpu, or give one GPU "
            f"per worker with --devices cuda:0,cuda:1,..."
        )
    # N workers with cores/N threads each, so that they do not oversubscribe the cores.
    return passthrough, [Slot(threads=max(1, cores // parallel))] * parallel, None


def _number(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            continue
    return text


def _check_devices(devices: Sequence[str]) -> None:
    import torch

    from llmkick_models.workflow.sweep_plan import SweepError

    for device in devices:
        try:
            parsed = torch.device(device)
        except (RuntimeError, ValueError):
            raise SweepError(f"--devices: {device!r} is not a device; allowed: cpu, cuda:N, ...") from None
        if parsed.type == "cuda":
            count = torch.cuda.device_count()
            if parsed.index is None or parsed.index >= count:
                raise SweepError(f"--devices: {device} is not available ({count} CUDA devices; name each as "
                                 f"cuda:N)")  # fmt: skip


def cache_command(args: argparse.Namespace) -> int:
    """``llmkick cache ls | rm KEY | prune``: the compressed-model cache."""
    from llmkick_models.storage.model_cache import ModelCache

    cache = ModelCache(args.dir)
    if args.cache_command == "ls":
        return _cache_ls(cache)
    if args.cache_command == "rm":
        return _cache_rm(cache, args.keys)
    return _cache_prune(cache, args.max_bytes)


def _cache_line(entry: CacheEntry) -> str:
    import datetime

    used = datetime.datetime.fromtimestamp(entry.last_used).isoformat(timespec="seconds")
    return f"{entry.key}  {entry.size_bytes / 1e9:8.3f} GB  {used}  {entry.describe()}"


def _cache_ls(cache: ModelCache) -> int:
    scanned = cache.scan()
    entries = [entry for entry in scanned if entry.problem is None]
    for entry in scanned:
        suffix = f" (skipped; `llmkick cache rm {entry.key}` deletes it)" if entry.problem else ""
        print(_cache_line(entry) + suffix)
    total = sum(e.size_bytes for e in entries)
    malformed = len(scanned) - len(entries)
    skipped = f"; {malformed} malformed entries skipped" if malformed else ""
    print(f"{len(entries)} entries, {total / 1e9:.3f} GB in {cache.root}{skipped}")
    return 0


def _cache_rm(cache: ModelCache, keys: list[str]) -> int:
    from llmkick_models.storage.model_cache import CacheDeleteError

    try:
        entries = cache.resolve(keys)  # every argument checked before anything is deleted
    except ValueError as error:
        raise UsageError(f"rm: nothing was deleted: {error}") from None
    errors = []
    for entry in entries:
        try:
            removed = cache.remove(entry.key)
        except CacheDeleteError as error:
            errors.append(str(error))
            continue
        print(f"removed {entry.key}" if removed else f"{entry.key} was already removed by another process")
    if errors:
        raise UsageError("rm: " + "; ".join(errors))
    return 0


def _cache_prune(cache: ModelCache, max_bytes: int | None) -> int:
    from llmkick_models.storage.cache_settings import MAX_GB_ENV
    from llmkick_models.storage.model_cache import CacheLockError, CacheLockTimeout

    limit = max_bytes if max_bytes is not None else cache.max_bytes
    if limit is None:
        raise UsageError(f"give --max-gb or set ${MAX_GB_ENV}")
    try:
        try:
            result = cache.prune(limit, timeout=0)
        except CacheLockTimeout:  # say why we wait, then wait like any other user of the cache
            print(f"llmkick cache: another prune of {cache.root} is running; waiting for it", file=sys.stderr)
            result = cache.prune(limit)
    except CacheLockError as error:
        raise UsageError(f"prune: nothing was evicted: {error}") from None
    for entry in result.evicted:
        print(f"evicted {entry.key} ({entry.size_bytes / 1e9:.3f} GB) {entry.describe()}")
    for entry in result.busy:
        print(f"kept {entry.key}: in use by another process")
    for entry, reason in result.failed:
        print(f"could not evict {entry.key}: {reason}", file=sys.stderr)
    print(f"{len(result.evicted)} entries evicted; {result.left_bytes / 1e9:.3f} GB left in {cache.root}")
    return 1 if result.failed else 0


def report_command(args: argparse.Namespace) -> int:
    """Write report.md, report.json and the plots of a run directory."""
    from llmkick_models.workflow.sweep_report import write_report

    report, plots = write_report(args.run_dir)
    print(report.read_text())
    print(f"report: {report}; plots: {', '.join(str(p) for p in plots)}")
    return 0


def check_int8_format(output_format: str, model_args: dict[str, Any]) -> None:
    """LLM.int8() models are saved in the bitsandbytes format, and only they: refused before loading."""
    from llmkick_models.engine.methods import parse_method
    from llmkick_models.storage.int8_checkpoint import INT8_FORMAT

    method = parse_method(model_args.get("method"))
    if method == "llm_int8" and output_format != INT8_FORMAT:
        raise UsageError(
            f"--format {output_format} cannot hold method=llm_int8, whose activations are quantized at run "
            f"time (fake stores dequantized weights, compressed-tensors weight-only grids); use --format "
            f"{INT8_FORMAT} (transformers' 8-bit bitsandbytes checkpoint)"
        )
    if output_format == INT8_FORMAT and method != "llm_int8":
        raise UsageError(
            f"--format {INT8_FORMAT} saves LLM.int8() models (method=llm_int8); for method={method} use "
            f"--format fake or compressed-tensors"
        )


def compress_command(args: argparse.Namespace) -> int:
    """Compress a model once and save it (fake-quantized floats, or packed compressed-tensors)."""
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.compressed_hf import CompressedHFLM

    if args.output.exists():
        raise UsageError(f"--output {args.output} exists; choose a new folder")
    model_args = simple_parse_args_string(args.model_args)
    check_int8_format(args.format, model_args)
    packed = args.format == "compressed-tensors"
    if packed:
        from llmkick_models.engine.methods import build_spec, option_names
        from llmkick_models.storage.export import ExportError, _import_compressed_tensors

        # Fail before loading anything: the library is there and the run will quantize.
        try:
            _import_compressed_tensors()
        except ExportError as error:
            raise UsageError(str(error)) from None
        spec_args = {k: v for k, v in model_args.items() if k in option_names()}
        if build_spec(**spec_args).bits is None:
            raise UsageError("--format compressed-tensors needs a quantized model: add bits= to --model_args")
        # The packed codes come from the grids of this run; a cached model has none.
        model_args["cache"] = False
    try:
        lm = CompressedHFLM(pretrained=args.model, device=args.device, **model_args)
    except OSError as error:  # transformers' word for a model id or folder it cannot find or read
        raise UsageError(f"--model {args.model} could not be loaded: {error}") from error
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
            raise UsageError(str(error)) from None
    elif args.format == "bitsandbytes":
        from llmkick_models.storage.int8_checkpoint import save_int8_checkpoint

        save_int8_checkpoint(model, args.output, lm.compression_spec)
    else:
        model.save_pretrained(args.output)
    lm.tokenizer.save_pretrained(args.output)
    (args.output / "llmkick_compression.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"saved {args.output} (overall sparsity {report.get('overall_sparsity', 0):.4f})")
    return 0
