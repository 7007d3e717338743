"""The lm-eval processes of a sweep: where each runs (its slot: device, CPU threads), each started in a
process group of its own, stopped as a group (SIGTERM, then SIGKILL) when the sweep is stopped, and the stop
signals turned into an exception the sweep handles."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llmkick_models.workflow.sweep_plan import KILL_GRACE_S

#: Ctrl-C, kill, and a closed terminal or SSH session: each lm-eval runs in a session of its own, so a
#: sweep that died of SIGHUP's default action would leave it running beside the next resume.
HANGUP_SIGNALS = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()  # none on Windows
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *HANGUP_SIGNALS)


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


#: A point run with the command line's device and the threads it inherits.
DEFAULT_SLOT = Slot()


def worker_threads(slot: Slot) -> int:
    """The CPU threads the point's lm-eval starts with: the slot's OMP/MKL setting, else torch's default
    in this environment, which the child inherits."""
    if slot.threads is not None:
        return slot.threads
    import torch

    return torch.get_num_threads()


class SweepInterrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP reached the sweep; the running point's process group was stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def forward_stop_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`SweepInterrupted` in the main thread (restored afterwards)."""
    with raise_on(STOP_SIGNALS):
        yield


@contextlib.contextmanager
def raise_on(signals: Sequence[int]) -> Iterator[None]:
    """Raise :class:`SweepInterrupted` for ``signals`` in the main thread; elsewhere (where Python cannot
    take signals) nothing changes."""

    def handler(signum: int, _frame: Any) -> None:
        raise SweepInterrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def ignore_stop_signals() -> None:
    """From now on a second stop signal cannot cut the clean-up short (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL it after a grace period, and reap the child."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):  # grandchildren that outlived the child
        os.killpg(process.pid, signal.SIGKILL)


class ProcessGroups:
    """The lm-eval processes this sweep started, so that a stop reaches every running worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def reset(self) -> None:
        """Forget the processes of an earlier sweep in this process; new points may start again."""
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
        """``process`` has ended: a stop no longer needs to reach it."""
        with self._lock:
            self._running.discard(process)

    def stop_all(self) -> None:
        """No new point starts; every running lm-eval process group is stopped (in parallel)."""
        with self._lock:
            self.stopping = True
            running = list(self._running)
        stoppers = [threading.Thread(target=stop_group, args=(p,)) for p in running]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
