"""Running a sweep: one lm-eval run per compression point, resumable, results kept per point.

A run directory holds ``sweep.json`` (the command that built it), and per point ``points/<id>/results.json``
(lm-eval's results JSON, moved into place only after the run succeeded), ``fingerprint.json`` (everything
that determines the point's numbers, see ``fingerprints.py``; ``stale_points.py`` refuses the points whose
fingerprint differs; plus a ``provenance`` that is recorded but not compared) and ``lm_eval.log``.  While a
point is unfinished, ``responses/<digest>/`` holds lm-eval's response cache of its fingerprint
(``response_cache.py``), so a point that failed after its model generated (e.g. its judge refused the key)
resumes without generating again, and ``generations/`` the judged tasks' answers in readable form.  A
failing point prints the end of its log and the others go on; SIGINT/SIGTERM/SIGHUP stop the running
lm-eval process groups (``point_processes.py``).  Points run one at a time, several at once (``slots``: one
worker per device, or CPU workers sharing the cores), or as submitit jobs (``slurm.py``); every launcher
runs :func:`execute_point`, so each point's folder, log, fingerprint and results are the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkick_models.workflow.fingerprints import PROVENANCE_KEY
from llmkick_models.workflow.point_processes import (
    DEFAULT_SLOT,
    HANGUP_SIGNALS,
    ProcessGroups,
    Slot,
    forward_stop_signals,
    ignore_stop_signals,
    raise_on,
    stop_group,
    worker_threads,
)
from llmkick_models.workflow.preflight import SweepPlan, lm_eval_parser
from llmkick_models.workflow.response_cache import drop_other_caches, kept_answers, response_cache
from llmkick_models.workflow.stale_points import describe_stale, stale_points
from llmkick_models.workflow.sweep_plan import (
    LOG_TAIL_LINES,
    SweepError,
    SweepPoint,
    point_args,
)
from llmkick_tasks.judge.generations import GENERATIONS_ENV

log = logging.getLogger(__name__)

#: Per point: the judged tasks' answers in readable form.
GENERATIONS_DIR = "generations"


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


#: The lm-eval processes this sweep runs, so that a stop reaches every worker.
_PROCESSES = ProcessGroups()


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


def say(text: str) -> None:
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
    slots: Sequence[Slot] = (DEFAULT_SLOT,),
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
            say(f"{point_id}: computed with other settings, recomputing ({stale[point_id][0]})")
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
                say(f"[{index}/{total}] {point.point_id}: done earlier, skipped (same settings)")
                outcome.finished.append(results_file)
            else:
                todo.append((f"[{index}/{total}]", point))
        with forward_stop_signals():
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
        ignore_stop_signals()  # a second Ctrl-C must not cut the clean-up short
        _PROCESSES.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        raise
    pool.shutdown(wait=True)
    bar.close()


def _point_command(plan: SweepPlan, point: SweepPoint, raw_dir: Path, slot: Slot, cache: Path) -> list[str]:
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
    # Last, so it replaces a --use_cache of the user's (lm-eval's parser keeps the last value); lm-eval adds
    # "_rank<N>.db" to the name.
    return [*command, "--use_cache", str(cache / "lm_eval")]


def _pass_through(plan: SweepPlan) -> argparse.Namespace:
    """lm-eval's own reading of the pass-through options (abbreviations and aliases resolved; the
    pre-flight has already validated them)."""
    return lm_eval_parser().parse_args(
        ["run", "--model", "compressed-hf", "--tasks", plan.tasks, *plan.lm_eval_args]
    )


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
    plan: SweepPlan, point: SweepPoint, point_dir: Path, slot: Slot = DEFAULT_SLOT
) -> tuple[bool, str]:
    """Run one point's lm-eval and move its results into place; ``(finished, one-line summary)``.

    Prints nothing: the same function runs in a worker thread and inside a Slurm job, and the sweep prints
    the summary where the user reads it.  lm-eval answers from the point's response cache what an earlier
    attempt with the same fingerprint computed; the cache is removed once the point finished.
    """
    start = time.perf_counter()
    results_file = point_dir / "results.json"
    raw_dir = point_dir / "lm_eval"
    options = _pass_through(plan)
    cache = response_cache(plan, point, point_dir, options)
    generations = point_dir / GENERATIONS_DIR
    command = _point_command(plan, point, raw_dir, slot, cache)
    point_dir.mkdir(parents=True, exist_ok=True)
    (point_dir / "fingerprint.json").unlink(missing_ok=True)
    shutil.rmtree(raw_dir, ignore_errors=True)  # results of an earlier attempt must not be picked up
    drop_other_caches(cache)
    if not cache.exists():  # readable answers of an attempt with other settings (or of a finished one)
        shutil.rmtree(generations, ignore_errors=True)
    log_path = point_dir / "lm_eval.log"
    with log_path.open("w") as log_file:
        # Its own process group, so that stopping the sweep stops lm-eval and whatever it started.
        process = _PROCESSES.start(command, log_file, {**slot.env(), GENERATIONS_ENV: str(generations)})
        if process is None:
            return False, "not started (the sweep is stopping)"
        try:
            # In a submitit job (the main thread) a hangup would otherwise end the job and orphan lm-eval;
            # SIGINT (submitit's cancel) raises KeyboardInterrupt and SIGTERM is submitit's own.
            with raise_on(HANGUP_SIGNALS):
                returncode = process.wait()
        except BaseException:  # e.g. a Slurm/submitit job cancelled with SIGINT: take lm-eval down too
            ignore_stop_signals()  # a second signal must not cut the clean-up
            stop_group(process)
            raise
        finally:
            _PROCESSES.finished(process)
    newest = sorted(raw_dir.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if returncode != 0 or not newest:
        why = f"exit {returncode}" if returncode != 0 else "lm-eval wrote no results file"
        kept = kept_answers(generations, options)
        return False, f"FAILED ({why}){kept}; last lines of {log_path}:\n{log_tail(log_path)}"
    # The thread count is provenance, not a setting: recorded, never compared (see PROVENANCE_KEY).
    fingerprint = {**plan.fingerprints[point.point_id], PROVENANCE_KEY: {"threads": worker_threads(slot)}}
    _write_atomic(point_dir / "fingerprint.json", json.dumps(fingerprint, indent=1))
    _write_atomic(results_file, newest[-1].read_text())  # the point counts as finished only once this exists
    shutil.rmtree(cache, ignore_errors=True)  # nothing resumes a finished point; results are the record
    with contextlib.suppress(OSError):
        cache.parent.rmdir()  # only if empty
    summary = summarize_point(json.loads(results_file.read_text()))
    where = f", {slot.device}" if slot.device else ""
    return True, f"{summary} ({time.perf_counter() - start:.0f} s{where})"


def _run_point(
    plan: SweepPlan, point: SweepPoint, point_dir: Path, progress: str, slot: Slot = DEFAULT_SLOT
) -> bool:
    ok, message = execute_point(plan, point, point_dir, slot)
    if not _PROCESSES.stopping:  # a point cut short by a stop is not a failure worth a log tail
        say(f"{progress} {point.point_id}: {message}")
    return ok


def summarize_point(results: dict[str, Any]) -> str:
    """One line: each task's headline metric."""
    from llmkick_models.workflow.run_results import headline_metrics

    return " ".join(f"{task}={value:.4g}" for task, (_metric, value) in headline_metrics(results).items())
