"""Sweep points as submitit jobs (Slurm, or submitit's local executor): the same ``execute_point`` the local
workers run, so each point's folder, log, fingerprint and results are the same."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmkick_models.workflow.point_processes import Slot, ignore_stop_signals
from llmkick_models.workflow.preflight import SweepPlan
from llmkick_models.workflow.sweep import SweepOutcome, execute_point, say
from llmkick_models.workflow.sweep_plan import KILL_GRACE_S, SweepError, SweepPoint

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
                    say(f"{progress} {point.point_id}: submitted as job {job.job_id}")
                    running[job] = (progress, point)
                if fail_fast and outcome.failed and not running:
                    break
                for job in [j for j in running if j.done()]:
                    progress, point = running.pop(job)
                    try:
                        ok, message = job.result()
                    except Exception as error:  # the job itself died (node failure, time limit, scancel)
                        ok, message = False, f"FAILED (job {job.job_id}: {str(error).strip()[-2000:]})"
                    say(f"{progress} {point.point_id}: {message}")
                    if ok:
                        outcome.finished.append(run_dir / "points" / point.point_id / "results.json")
                    else:
                        outcome.failed.append(point.point_id)
                if running:
                    time.sleep(self.poll_s)
        except BaseException:
            ignore_stop_signals()
            for job in running:
                with contextlib.suppress(Exception):
                    job.cancel(check=False)
            deadline = time.monotonic() + KILL_GRACE_S + 5
            while time.monotonic() < deadline and not all(j.done() for j in running):
                time.sleep(0.2)
            raise
