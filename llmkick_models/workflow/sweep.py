"""Sweeps: one lm-eval run per compression point, resumable, results kept per point with their provenance.

A run directory holds ``sweep.json`` (the command that built it), and per point ``points/<id>/results.json``
(lm-eval's results JSON, moved into place only after the run succeeded), ``fingerprint.json`` (everything
that determines the point's numbers) and ``lm_eval.log``.  A finished point is reused only when its
fingerprint equals the one the current command would produce; otherwise the sweep stops before running
anything and names what changed (``--rerun`` recomputes those points instead).

Before the first point, :func:`preflight` validates everything a point could fail on late: every point's
compressed-hf arguments (through the same ``build_spec`` compressed-hf uses), the lm-eval options (through
lm-eval's own parser and config), the task names (lm-eval's ``TaskManager``), the calibration sources and
the judge of judged tasks.  A point that fails prints the end of its log; the sweep goes on with the
others and reports every failure at the end.  SIGINT/SIGTERM stop the running lm-eval process groups too.

Points run one at a time, or several at once (:func:`run_sweep`'s ``slots``: one worker per device, or CPU
workers sharing the cores), or as submitit jobs (:class:`SubmititLauncher`, Slurm); every launcher runs
:func:`execute_point`, so each point's folder, log, fingerprint and results are the same.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import io
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# compressed-hf's own argument names: the one place the sweep takes them from.
from llmkick_models.arguments import compression_args, reject_misspelled_args
from llmkick_models.engine.methods import METHODS, build_spec, method_class, methods_taking

log = logging.getLogger(__name__)

QUANTIZATION_ARGS = frozenset({"bits"})
#: Set by the sweep grid itself (--methods, --sparsities, --patterns, --bits), never by --compress_args.
SWEEP_AXES = ("method", "sparsity", "pattern", "bits")
#: compressed-hf's cache switches: they change where weights come from, not what they are.
CACHE_ARGS = frozenset({"cache", "llmkick_cache_dir"})
#: lm-eval options the sweep sets for every point; giving them again would contradict the sweep.
OWN_LM_EVAL_OPTIONS = ("model", "model_args", "tasks", "output_path")
#: lm-eval settings that do not change any number (logging, display, trackers): left out of fingerprints.
COSMETIC_LM_EVAL_OPTIONS = frozenset({
    "config", "verbosity", "log_samples", "show_config", "write_out", "wandb_args", "wandb_config_args",
    "trackio_args", "hf_hub_log_args", "check_integrity", "metadata", "model", "model_args", "tasks",
    "output_path",
})  # fmt: skip
LOG_TAIL_LINES = 25
_KILL_GRACE_S = 10.0


class SweepError(ValueError):
    """The sweep cannot start as asked; the message says what to change."""


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


def _accepted_extra_args(point: SweepPoint) -> frozenset[str]:
    implementation = method_class(point.method)
    # e.g. percdamp= reaches Wanda only when it quantizes with GPTQ
    quantizes = implementation.always_quantizes() or point.bits is not None
    accepted = frozenset(option.name for option in implementation.offered_options(quantizes))
    if point.method != "none":
        accepted = accepted | CACHE_ARGS
    return accepted


def point_args(point: SweepPoint, base_model_args: str, compress_args: dict[str, str]) -> str:
    """Full --model_args for a point: the base (pretrained=..., dtype=...), the point, and the extra
    compression args that this point's method accepts (calibration args are not given to magnitude)."""
    accepted = _accepted_extra_args(point)
    extra = [f"{key}={value}" for key, value in compress_args.items() if key in accepted]
    return ",".join(part for part in (base_model_args, point.model_args(), *extra) if part)


# ---------------------------------------------------------------------------------------------- preflight


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
    reached = set().union(*(_accepted_extra_args(p) for p in points))
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
    """Validate every point's full model_args exactly as compressed-hf will, and read each calibration
    source once (an unreachable ``c4`` fails here, not at point 2)."""
    from lm_eval.utils import simple_parse_args_string

    from llmkick_models.engine.calibration import CalibrationDataError, load_documents

    hflm_args = _hflm_args()
    checked_sources: set[str] = set()
    for point in points:
        parsed = simple_parse_args_string(point_args(point, base_model_args, compress_args))
        spec_args = {k: v for k, v in parsed.items() if k in compression_args() and k not in CACHE_ARGS}
        try:
            reject_misspelled_args([k for k in parsed if k not in compression_args()], hflm_args)
            spec = build_spec(**spec_args)
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
    """Resolve the task names with lm-eval's TaskManager (unknown names listed) and check the judge."""
    from llmkick_tasks.judge.config import JudgeConfigError
    from llmkick_tasks.judge.preflight import check_requested_tasks

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


# -------------------------------------------------------------------------------------------- provenance


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
    from llmkick_models.storage.model_cache import describe_source

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
    from llmkick_models.storage.model_cache import describe_source

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


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from llmkick_models.storage.model_cache import llmkick_version

    return {
        "llmkick": llmkick_version(),
        "llmkick_source_sha256": _llmkick_source_digest(),
        "lm_eval": version("lm_eval"),
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


def fingerprint_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Human-readable differences, e.g. ``model_args.pretrained: 'A' -> 'B'``."""
    if old is None:
        return ["no fingerprint (written by an older llmkick, or the point was copied in)"]
    before, after = _flatten(old), _flatten(new)
    return [
        f"{key}: {before.get(key, '(absent)')!r} -> {after.get(key, '(absent)')!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


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
    """Finished points whose stored fingerprint differs from the plan's, with what changed."""
    stale = {}
    for point in plan.points:
        folder = run_dir / "points" / point.point_id
        if (folder / "results.json").is_file():
            changes = fingerprint_changes(
                _read_json(folder / "fingerprint.json"), plan.fingerprints[point.point_id]
            )
            if changes:
                stale[point.point_id] = changes
    return stale


def describe_stale(stale: dict[str, list[str]], run_dir: Path) -> str:
    """The refusal message: which points, what changed, what to do."""
    lines = [f"{run_dir} holds results computed with different settings; nothing was run:"]
    for point_id, changes in stale.items():
        lines.append(f"  {point_id}: " + "; ".join(changes[:6]) + (" ..." if len(changes) > 6 else ""))
    lines.append("Re-run with --rerun to recompute these points, or choose another --output.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ running


class SweepInterrupted(Exception):
    """SIGINT or SIGTERM reached the sweep; the running point's process group was stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def _forward_stop_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`SweepInterrupted` in the main thread (restored afterwards)."""

    def handler(signum: int, _frame: Any) -> None:
        raise SweepInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace period, and reap the child."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # grandchildren that outlived the child
        os.killpg(process.pid, signal.SIGKILL)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log, indented."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text)


@dataclass
class SweepOutcome:
    """What a sweep produced: finished results files and failed point ids."""

    finished: list[Path]
    failed: list[str]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Slot:
    """Where one point runs: the device it gets (replacing ``--device``) and its CPU thread count."""

    device: str | None = None
    threads: int | None = None

    def env(self) -> dict[str, str]:
        """Environment of the lm-eval process: thread counts, so that parallel workers share the cores."""
        if self.threads is None:
            return {}
        return {name: str(self.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


class _ProcessGroups:
    """The lm-eval processes this sweep started, so that a stop reaches every running worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def reset(self) -> None:
        with self._lock:
            self._running.clear()
            self.stopping = False

    def start(self, command: list[str], log_file: Any, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """Start ``command`` in its own process group, unless the sweep is being stopped."""
        with self._lock:  # a worker cannot start a point between the stop and the kill of the others
            if self.stopping:
                return None
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **env},
            )  # fmt: skip
            self._running.add(process)
            return process

    def finished(self, process: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(process)

    def stop_all(self) -> None:
        """No new point starts; every running lm-eval process group is stopped (in parallel)."""
        with self._lock:
            self.stopping = True
            running = list(self._running)
        stoppers = [threading.Thread(target=_stop_group, args=(p,)) for p in running]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()


_PROCESSES = _ProcessGroups()


@contextlib.contextmanager
def _run_dir_lock(run_dir: Path) -> Iterator[None]:
    """One sweep at a time per run directory: two would run the same points and overwrite each other."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(run_dir / ".sweep.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SweepError(
            f"another llmkick sweep is running in {run_dir} (it holds {lock.lock_file}); wait for it or "
            f"choose another --output"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _say(text: str) -> None:
    """One console line that does not land on the progress bar's line."""
    from tqdm.auto import tqdm

    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def run_sweep(
    plan: SweepPlan,
    run_dir: Path,
    *,
    rerun: bool = False,
    fail_fast: bool = False,
    slots: Sequence[Slot] = (Slot(),),
    launcher: Any = None,
) -> SweepOutcome:
    """Run lm-eval for every point not finished with the same fingerprint (one process each, so memory is
    returned between points).  Refuses (:class:`SweepError`) when finished points differ, unless ``rerun``.

    Points run in this machine's worker threads, one per slot (``--parallel``/``--devices``), or as jobs of
    ``launcher`` (:class:`SubmititLauncher`); either way each point gets the same folder, log and results.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_dir_lock(run_dir):  # held from the resume check on: another sweep cannot change what it read
        stale = stale_points(plan, run_dir)
        if stale and not rerun:
            raise SweepError(describe_stale(stale, run_dir))
        for point_id in stale:  # removed before sweep.json names the new settings: nothing stale is reported
            _say(f"{point_id}: computed with other settings, recomputing ({stale[point_id][0]})")
            for name in ("results.json", "fingerprint.json"):
                (run_dir / "points" / point_id / name).unlink(missing_ok=True)
        _write_atomic(run_dir / "sweep.json", json.dumps({
            "base_model_args": plan.base_model_args, "tasks": plan.tasks, "compress_args": plan.compress_args,
            "lm_eval_args": plan.lm_eval_args, "points": [p.as_dict() for p in plan.points],
            "fingerprint": plan.common,
        }, indent=1, default=str))  # fmt: skip
        outcome = SweepOutcome([], [])
        total = len(plan.points)
        todo: list[tuple[str, SweepPoint]] = []
        for index, point in enumerate(plan.points, 1):
            results_file = run_dir / "points" / point.point_id / "results.json"
            if results_file.is_file():
                _say(f"[{index}/{total}] {point.point_id}: done earlier, skipped (same settings)")
                outcome.finished.append(results_file)
            else:
                todo.append((f"[{index}/{total}]", point))
        with _forward_stop_signals():
            if launcher is not None:
                launcher.run(plan, run_dir, todo, outcome, fail_fast=fail_fast)
            else:
                _run_local(plan, run_dir, todo, outcome, list(slots), fail_fast=fail_fast)
    # Points finish in any order with parallel workers; the outcome follows the sweep's order.
    order = {p.point_id: i for i, p in enumerate(plan.points)}
    outcome.finished.sort(key=lambda f: order[f.parent.name])
    outcome.failed.sort(key=order.__getitem__)
    return outcome


def _run_local(
    plan: SweepPlan,
    run_dir: Path,
    todo: Sequence[tuple[str, SweepPoint]],
    outcome: SweepOutcome,
    slots: list[Slot],
    *,
    fail_fast: bool,
) -> None:
    """Points in worker threads, at most one per slot; each thread waits on its own lm-eval process.

    Dense is queued first like every other point and runs concurrently with the rest: the report reads the
    results once all are written, so nothing waits for it.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    _PROCESSES.reset()
    free: queue.SimpleQueue[Slot] = queue.SimpleQueue()
    for slot in slots:
        free.put(slot)
    failed = threading.Event()

    def work(progress: str, point: SweepPoint) -> bool | None:
        slot = free.get()  # never waits long: there are as many threads as slots
        try:
            if _PROCESSES.stopping or (fail_fast and failed.is_set()):
                return None
            ok = _run_point(plan, point, run_dir / "points" / point.point_id, progress, slot=slot)
            if not ok:
                failed.set()  # set by the worker itself, so no later point starts under --fail_fast
            return ok
        finally:
            free.put(slot)

    bar = tqdm(total=len(todo), desc="llmkick sweep", unit="point")
    pool = ThreadPoolExecutor(max_workers=max(1, len(slots)), thread_name_prefix="llmkick-point")
    futures = {pool.submit(work, progress, point): point for progress, point in todo}
    try:
        for future in as_completed(futures):
            point = futures[future]
            ok = future.result()
            if ok is None:
                continue
            bar.update()
            if ok:
                outcome.finished.append(run_dir / "points" / point.point_id / "results.json")
            else:
                outcome.failed.append(point.point_id)
    except BaseException:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        _PROCESSES.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        raise
    pool.shutdown(wait=True)
    bar.close()


def _point_command(plan: SweepPlan, point: SweepPoint, raw_dir: Path, slot: Slot) -> list[str]:
    lm_eval_args = list(plan.lm_eval_args)
    if slot.device is not None:  # this worker's device replaces the one of the command line
        lm_eval_args = [*_without_option(lm_eval_args, "--device"), "--device", slot.device]
    command = [
        sys.executable, "-m", "lm_eval", "--model", "compressed-hf",
        "--model_args", point_args(point, plan.base_model_args, plan.compress_args),
        "--tasks", plan.tasks, "--output_path", str(raw_dir), *lm_eval_args,
    ]  # fmt: skip
    # Per-document samples are what `llmkick report` pairs with dense for its intervals and verdicts.
    if "--log_samples" not in command and "-s" not in command:
        command.append("--log_samples")
    return command


def _without_option(args: Sequence[str], option: str) -> list[str]:
    """``args`` without ``option VALUE`` / ``option=VALUE``."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def option_value(args: Sequence[str], option: str) -> str | None:
    """The last value of ``option`` in a pass-through argument list (``--device cpu`` or ``--device=cpu``)."""
    value = None
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def execute_point(
    plan: SweepPlan, point: SweepPoint, point_dir: Path, slot: Slot = Slot()
) -> tuple[bool, str]:
    """Run one point's lm-eval and move its results into place; ``(finished, one-line summary)``.

    Prints nothing: the same function runs in a worker thread and inside a Slurm job, and the sweep prints
    the summary where the user reads it.
    """
    start = time.perf_counter()
    results_file = point_dir / "results.json"
    raw_dir = point_dir / "lm_eval"
    command = _point_command(plan, point, raw_dir, slot)
    point_dir.mkdir(parents=True, exist_ok=True)
    (point_dir / "fingerprint.json").unlink(missing_ok=True)
    shutil.rmtree(raw_dir, ignore_errors=True)  # results of an earlier attempt must not be picked up
    log_path = point_dir / "lm_eval.log"
    with log_path.open("w") as log_file:
        # Its own process group, so that stopping the sweep stops lm-eval and whatever it started.
        process = _PROCESSES.start(command, log_file, slot.env())
        if process is None:
            return False, "not started (the sweep is stopping)"
        try:
            returncode = process.wait()
        except BaseException:  # e.g. a Slurm/submitit job cancelled with SIGINT: take lm-eval down too
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up
                    signal.signal(sig, signal.SIG_IGN)
            _stop_group(process)
            raise
        finally:
            _PROCESSES.finished(process)
    newest = sorted(raw_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if returncode != 0 or not newest:
        why = f"exit {returncode}" if returncode != 0 else "lm-eval wrote no results file"
        return False, f"FAILED ({why}); last lines of {log_path}:\n{log_tail(log_path)}"
    _write_atomic(point_dir / "fingerprint.json", json.dumps(plan.fingerprints[point.point_id], indent=1))
    _write_atomic(results_file, newest[-1].read_text())  # the point counts as finished only once this exists
    summary = summarize_point(json.loads(results_file.read_text()))
    where = f", {slot.device}" if slot.device else ""
    return True, f"{summary} ({time.perf_counter() - start:.0f} s{where})"


def _run_point(
    plan: SweepPlan, point: SweepPoint, point_dir: Path, progress: str, slot: Slot = Slot()
) -> bool:
    ok, message = execute_point(plan, point, point_dir, slot)
    if not _PROCESSES.stopping:  # a point cut short by a stop is not a failure worth a log tail
        _say(f"{progress} {point.point_id}: {message}")
    return ok


# ------------------------------------------------------------------------------------------ Slurm/submitit

SLURM_EXTRA = "slurm"


def import_submitit() -> Any:
    """submitit, or a :class:`SweepError` naming the extra to install."""
    try:
        import submitit
    except ImportError:
        raise SweepError(
            f"--launcher slurm needs submitit: pip install 'llmkick[{SLURM_EXTRA}]' (or pip install submitit)"
        ) from None
    return submitit


class SubmititLauncher:
    """One submitit job per point (Slurm, or submitit's local executor), at most ``parallel`` in flight.

    The job runs :func:`execute_point`, the function the local workers run, so the point's folder, log,
    fingerprint and results are the same; this process waits, prints each point's line and, when stopped,
    cancels the jobs still running.
    """

    def __init__(
        self, cluster: str, folder: Path, parameters: dict[str, Any], parallel: int | None, slot: Slot
    ) -> None:
        submitit = import_submitit()
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise SweepError("--launcher slurm: sbatch is not on PATH (run the sweep on a Slurm login node)")
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        try:
            self.executor.update_parameters(**parameters)
        except (NameError, ValueError, TypeError) as error:  # submitit lists the keys it does not know
            raise SweepError(f"--slurm_args: {error}") from None
        self.parallel = parallel
        self.slot = slot
        self.poll_s = 1.0

    def run(
        self,
        plan: SweepPlan,
        run_dir: Path,
        todo: Sequence[tuple[str, SweepPoint]],
        outcome: SweepOutcome,
        *,
        fail_fast: bool,
    ) -> None:
        """Submit, wait, collect (see the class)."""
        pending = list(todo)
        running: dict[Any, tuple[str, SweepPoint]] = {}
        limit = self.parallel or len(pending) or 1
        try:
            while pending or running:
                while pending and len(running) < limit and not (fail_fast and outcome.failed):
                    progress, point = pending.pop(0)
                    point_dir = run_dir / "points" / point.point_id
                    try:
                        job = self.executor.submit(execute_point, plan, point, point_dir, self.slot)
                    except Exception as error:  # sbatch refused it (partition, account, limits)
                        raise SweepError(f"submitting {point.point_id} failed: {error}") from None
                    _say(f"{progress} {point.point_id}: submitted as job {job.job_id}")
                    running[job] = (progress, point)
                if fail_fast and outcome.failed and not running:
                    break
                for job in [j for j in running if j.done()]:
                    progress, point = running.pop(job)
                    try:
                        ok, message = job.result()
                    except Exception as error:  # the job itself died (node failure, time limit, scancel)
                        ok, message = False, f"FAILED (job {job.job_id}: {str(error).strip()[-2000:]})"
                    _say(f"{progress} {point.point_id}: {message}")
                    if ok:
                        outcome.finished.append(run_dir / "points" / point.point_id / "results.json")
                    else:
                        outcome.failed.append(point.point_id)
                if running:
                    time.sleep(self.poll_s)
        except BaseException:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)
            for job in running:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)
            deadline = time.monotonic() + _KILL_GRACE_S + 5
            while time.monotonic() < deadline and not all(j.done() for j in running):
                time.sleep(0.2)
            raise


def summarize_point(results: dict[str, Any]) -> str:
    """One line: each task's headline metric."""
    from llmkick_models.workflow.run_results import headline_metrics

    return " ".join(f"{task}={value:.4g}" for task, (_metric, value) in headline_metrics(results).items())
