"""Everything a sweep point could fail on late, checked before the first point; the fingerprinted plan.

Every point's compressed-hf arguments go through compressed-hf's own ``check_model_args``, the lm-eval
options through lm-eval's own parser and config, the task names through its ``TaskManager``; the
calibration sources are read and judged tasks need their judge.  Finished points whose fingerprint differs
from the plan's are *stale*: the sweep refuses them unless asked to recompute.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# compressed-hf's own argument names: the one place the sweep takes them from.
from llmkick_models.arguments import compression_args
from llmkick_models.engine.methods import methods_taking
from llmkick_models.preload_checks import check_model_args
from llmkick_models.workflow.point_stack import PROVENANCE_KEY
from llmkick_models.workflow.sweep_plan import (
    CACHE_ARGS,
    COSMETIC_LM_EVAL_OPTIONS,
    OWN_LM_EVAL_OPTIONS,
    SWEEP_AXES,
    SweepError,
    SweepPoint,
    accepted_extra_args,
    point_args,
)


def check_compress_args(points: Sequence[SweepPoint], compress_args: dict[str, str]) -> list[str]:
    """Refuse --compress_args keys that compressed-hf does not know or that are sweep axes; return a
    warning for each key that reaches no point of this sweep (printed, so it is never dropped unseen)."""
    allowed = [name for name in compression_args() if name not in SWEEP_AXES]
    for key in compress_args:
        if key in SWEEP_AXES:
            raise SweepError(
                f"--compress_args {key}=: {key} is a sweep axis; use --methods, --sparsities, --patterns "
                f"or --bits"
            )
        if key not in compression_args():
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SweepError(f"--compress_args: unknown key {key!r}; {hint}allowed: {', '.join(allowed)}")
    reached = set().union(*(accepted_extra_args(p) for p in points))
    warnings = []
    for key in compress_args:
        if key not in reached:
            methods = sorted({p.method for p in points if p.method != "none"})
            takers = "|".join(methods_taking(key)) or "none"
            warnings.append(
                f"--compress_args {key}={compress_args[key]} reaches no point of this sweep (methods "
                f"{', '.join(methods)}; Wanda/magnitude take quantizer options only with bits=); methods "
                f"that take it: {takers}"
            )
    return warnings


def _hflm_args() -> frozenset[str]:
    from lm_eval.models.huggingface import HFLM

    return frozenset(inspect.signature(HFLM.__init__).parameters)


def check_point_args(
    points: Sequence[SweepPoint], base_model_args: str, compress_args: dict[str, str]
) -> None:
    """Validate every point's full model_args with compressed-hf's own pre-load checks, and read each
    calibration source once (an unreachable ``c4`` fails here, not at point 2)."""
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.engine.calibration import CalibrationDataError, load_documents

    hflm_args = _hflm_args()
    checked_sources: set[str] = set()
    for point in points:
        parsed = simple_parse_args_string(point_args(point, base_model_args, compress_args))
        pretrained = parsed.pop("pretrained", None)
        args = {k: v for k, v in parsed.items() if k not in CACHE_ARGS}
        try:
            # compressed-hf's own pre-load checks: names, values, dtypes, N:M / group widths vs the config
            spec = check_model_args(pretrained, args, hflm_args).spec
            if spec.calibration is not None and spec.calibration.source not in checked_sources:
                load_documents(spec.calibration)
                checked_sources.add(spec.calibration.source)
        except (ValueError, CalibrationDataError) as error:
            raise SweepError(f"point {point.point_id}: {error}") from None


def _lm_eval_parser() -> Any:
    from lm_eval._cli.harness import HarnessCLI

    return HarnessCLI()._parser


def parse_lm_eval_options(base_model_args: str, tasks: str, lm_eval_args: Sequence[str]) -> Any:
    """lm-eval's own parse and validation of the pass-through options; its message on error."""
    from lm_eval.config.evaluate_config import EvaluatorConfig

    for option in lm_eval_args:
        name = option.split("=", 1)[0].lstrip("-")
        if option.startswith("--") and name in OWN_LM_EVAL_OPTIONS:
            raise SweepError(
                f"{option.split('=', 1)[0]} is set by llmkick sweep for every point; use the sweep's "
                f"--model / --model_args / --tasks / --output"
            )
    argv = ["run", "--model", "compressed-hf", "--model_args", base_model_args, "--tasks", tasks,
            *lm_eval_args]  # fmt: skip
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            namespace = _lm_eval_parser().parse_args(argv)
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        raise SweepError(
            "lm-eval refuses the pass-through options: "
            + (message[-1] if message else " ".join(lm_eval_args))
        ) from None
    try:
        config = EvaluatorConfig.from_cli(namespace)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise SweepError(f"lm-eval refuses the pass-through options: {error}") from None
    return namespace, config


def check_tasks(config: Any) -> Any:
    """Check the tasks' --metadata knobs, resolve the task names with lm-eval's TaskManager (unknown names
    listed) and check the judge."""
    from llmkick_tasks.judge.config import JudgeConfigError
    from llmkick_tasks.judge.preflight import check_requested_tasks
    from llmkick_tasks.run_metadata import check_run_metadata

    try:
        check_run_metadata(config.metadata)
    except ValueError as error:
        raise SweepError(f"--metadata: {error}") from None
    try:
        manager = config.process_tasks(config.metadata)
    except ValueError as error:
        raise SweepError(
            f"--tasks: {error} (see `lm_eval ls tasks`; local tasks need --include_path)"
        ) from None
    try:
        check_requested_tasks(config.tasks, manager)
    except JudgeConfigError as error:
        raise SweepError(str(error)) from None
    return manager


def _listing_digest(folder: Path) -> dict[str, Any]:
    """A folder's identity without reading every byte: each file's relative name, size and mtime."""
    digest = hashlib.sha256()
    count = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        count += 1
    return {"path": str(folder.resolve()), "files": count, "listing_sha256": digest.hexdigest()}


def _path_identity(value: Any) -> Any:
    """A local file or folder by content (small files) or listing; anything else as given."""
    from llmkick_models.storage.cache_key import describe_source

    if isinstance(value, (list, tuple)):
        return [_path_identity(v) for v in value]
    if not isinstance(value, str) or not value or not Path(value).expanduser().exists():
        return value
    path = Path(value).expanduser()
    if path.is_dir() and sum(1 for _ in path.rglob("*")) > 2000:  # e.g. a data dir with evidence files
        return _listing_digest(path)
    return describe_source(str(path))


def _model_identity(base: dict[str, Any]) -> Any:
    """A local model folder by content, a hub id by the commit it resolves to (as the model cache does)."""
    from llmkick_models.storage.cache_key import describe_source

    pretrained = str(base.get("pretrained"))
    if Path(pretrained).expanduser().exists():
        return _path_identity(pretrained)
    revision = base.get("revision")
    source = describe_source(
        pretrained, str(revision) if revision else None, hub_cache_dir=base.get("cache_dir")
    )
    return {k: v for k, v in source.items() if v is not None}


def _data_dir(namespace: Any, base_model_args: str) -> str | None:
    from lm_eval.utils import simple_parse_args_string

    from llmkick_tasks.data_dir import ENV_VAR, METADATA_KEY

    metadata = simple_parse_args_string(base_model_args) | (namespace.metadata or {})
    return metadata.get(METADATA_KEY) or os.environ.get(ENV_VAR) or None


def _llmkick_source_digest() -> str:
    """sha256 of llmkick's own code, task YAMLs and templates: an editable install keeps its version number
    while its prompts and metrics change."""
    import llmkick_models
    import llmkick_tasks

    digest = hashlib.sha256()
    for package in (llmkick_models, llmkick_tasks):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*")):
            if "__pycache__" in path.parts or "workflow" in path.relative_to(root).parts:
                continue  # the sweep/report code itself does not change a point's numbers
            if path.is_file() and path.suffix not in (".pyc", ".md"):
                digest.update(f"{path.relative_to(root.parent)}\0".encode() + path.read_bytes())
    return digest.hexdigest()


#: The libraries whose versions change a point's numbers besides llmkick's own code: lm-eval (requests,
#: metrics), torch (kernels), transformers (model code, tokenizers, generation) and accelerate (placement).
STACK_PACKAGES = ("lm_eval", "torch", "transformers", "accelerate")


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _versions() -> dict[str, str]:
    from llmkick_models.storage.cache_key import llmkick_version

    return {
        "llmkick": llmkick_version(),
        "llmkick_source_sha256": _llmkick_source_digest(),
        **{name: _package_version(name) for name in STACK_PACKAGES},
    }


def common_fingerprint(base_model_args: str, tasks: str, namespace: Any, config: Any) -> dict[str, Any]:
    """What determines every point's numbers besides the point itself."""
    from lm_eval.utils import simple_parse_args_string

    defaults = asdict(type(config)())
    options: dict[str, Any] = {}
    for key, value in asdict(config).items():
        if key in COSMETIC_LM_EVAL_OPTIONS or value == defaults.get(key):
            continue
        if key == "device" and isinstance(value, str):
            value = value.split(":")[0]  # cuda:0 vs cuda:1 computes the same numbers
        if key == "include_path":
            value = _path_identity(value)
        options[key] = value
    metadata = {k: v for k, v in (namespace.metadata or {}).items() if k != "data_dir"}
    if metadata:
        options["metadata"] = metadata
    base = simple_parse_args_string(base_model_args)
    data_dir = _data_dir(namespace, base_model_args)
    return {
        "model": _model_identity(base),
        "tasks": sorted(t.strip() for t in tasks.split(",") if t.strip()),
        "lm_eval_options": json.loads(json.dumps(options, sort_keys=True, default=str)),
        "data_dir": _path_identity(data_dir) if data_dir else None,
        "versions": _versions(),
    }


def point_fingerprint(
    point: SweepPoint, common: dict[str, Any], base_model_args: str, compress_args: dict[str, str]
) -> dict[str, Any]:
    """The point's full fingerprint: its model_args (parsed, sorted), the calibration file and the rest."""
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(point_args(point, base_model_args, compress_args))
    model_args = {k: str(v) for k, v in sorted(args.items()) if k not in CACHE_ARGS}
    fingerprint = {"point": point.point_id, "model_args": model_args, **common}
    calibration = args.get("calibration")
    if isinstance(calibration, str) and Path(calibration).expanduser().exists():
        fingerprint["calibration_file"] = _path_identity(calibration)
    return fingerprint


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _compared(fingerprint: dict[str, Any]) -> dict[str, Any]:
    # The provenance is what may differ between the points of one sweep on purpose (the CPU threads of its
    # worker: a --parallel N sweep and a sequential one resume each other): recorded, shown, not compared.
    return {key: value for key, value in fingerprint.items() if key != PROVENANCE_KEY}


def _shown(flat: dict[str, Any], key: str) -> str:
    return repr(flat[key]) if key in flat else "(absent)"


def fingerprint_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Human-readable differences, e.g. ``model_args.pretrained: 'A' -> 'B'`` or, for a field an older
    llmkick did not record, ``versions.torch: (absent) -> '2.4.0'``; the provenance is not compared."""
    if old is None:
        return ["no fingerprint (written by an older llmkick, or the point was copied in)"]
    before, after = _flatten(_compared(old)), _flatten(_compared(new))
    return [
        f"{key}: {_shown(before, key)} -> {_shown(after, key)}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    """A short digest of everything a fingerprint compares: names the point's lm-eval response cache, so
    a point whose settings changed can never replay answers computed with other ones."""
    text = json.dumps(_compared(fingerprint), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class SweepPlan:
    """Validated points with their fingerprints, ready to run."""

    points: list[SweepPoint]
    base_model_args: str
    tasks: str
    compress_args: dict[str, str]
    lm_eval_args: list[str]
    common: dict[str, Any]
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)


def preflight(
    points: Sequence[SweepPoint],
    *,
    base_model_args: str,
    tasks: str,
    compress_args: dict[str, str],
    lm_eval_args: Sequence[str] = (),
) -> SweepPlan:
    """Everything a point could fail on late, checked before the first point; raises :class:`SweepError`."""
    for warning in check_compress_args(points, compress_args):
        print(f"llmkick sweep: warning: {warning}", file=sys.stderr, flush=True)
    namespace, config = parse_lm_eval_options(base_model_args, tasks, lm_eval_args)
    check_point_args(points, base_model_args, compress_args)
    check_tasks(config)
    common = common_fingerprint(base_model_args, tasks, namespace, config)
    plan = SweepPlan(list(points), base_model_args, tasks, dict(compress_args), list(lm_eval_args), common)
    plan.fingerprints = {
        p.point_id: point_fingerprint(p, common, base_model_args, compress_args) for p in points
    }
    return plan


def stale_points(plan: SweepPlan, run_dir: Path) -> dict[str, list[str]]:
    """Finished points that cannot be reused, with why: their stored fingerprint differs from the plan's,
    or their results do not match the samples logged with them (:func:`untrusted_results`)."""
    stale = {}
    for point in plan.points:
        folder = run_dir / "points" / point.point_id
        if (folder / "results.json").is_file():
            changes = fingerprint_changes(
                _read_json(folder / "fingerprint.json"), plan.fingerprints[point.point_id]
            ) or untrusted_results(folder)
            if changes:
                stale[point.point_id] = changes
    return stale


def untrusted_results(point_dir: Path) -> list[str]:
    """Why a finished point's ``results.json`` cannot be reused: a score its samples do not give back,
    samples missing, results unreadable (empty when sound).  A score that cannot be recomputed from its
    samples is reused, with a warning on stderr naming it."""
    from llmkick_models.workflow.sample_checks import NOT_RECOMPUTABLE, PointCheck

    results_file = point_dir / "results.json"
    results = _read_json(results_file)
    if not isinstance(results, dict):
        return [f"results unreadable: {results_file} is not a JSON object"]
    check = PointCheck(point_dir, results, results_file)
    for finding in check.findings:
        if finding.kind == NOT_RECOMPUTABLE:
            print(f"llmkick sweep: warning: {point_dir.name}: {finding.task}: {finding.message}; reused as "
                  "reported", file=sys.stderr, flush=True)  # fmt: skip
    return [finding.message for finding in check.problems()]


def describe_stale(stale: dict[str, list[str]], run_dir: Path) -> str:
    """The refusal message: which points, what changed (or which results disagree), what to do."""
    lines = [
        f"{run_dir} holds results that cannot be reused (computed with different settings, or not matching "
        "the samples logged with them); nothing was run:"
    ]
    for point_id, changes in stale.items():
        lines.append(f"  {point_id}: " + "; ".join(changes[:6]) + (" ..." if len(changes) > 6 else ""))
    lines.append("Re-run with --rerun to recompute these points, or choose another --output.")
    return "\n".join(lines)
