"""Running ``llmkick`` as a child process, and finding the lm-eval processes it starts (through /proc), for
the tests that stop a sweep with a signal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CLI = [sys.executable, "-m", "llmkick_models.workflow.cli"]


def run_cli(argv: Sequence[str], **popen: object) -> subprocess.CompletedProcess[str]:
    """``llmkick ARGV`` to completion, its output captured."""
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, env=os.environ, **popen)


def start_cli(argv: Sequence[str], new_session: bool = False) -> subprocess.Popen[str]:
    """``llmkick ARGV`` started in the background (in a session of its own: a signal can reach its group)."""
    return subprocess.Popen(
        [*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ,
        start_new_session=new_session,
    )  # fmt: skip


def children(pid: int) -> list[int]:
    """The direct children of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``."""
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def lm_eval_processes(pid: int) -> list[int]:
    """The lm-eval processes below ``pid``."""
    pids = []
    for child in descendants(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"lm_eval" in command:
            pids.append(child)
    return pids


def wait_for_processes(
    find: Callable[[int], list[int]], process: subprocess.Popen[str], count: int, poll_s: float
) -> list[int]:
    """``find(process.pid)`` once it gives ``count`` processes, or what it gives when ``process`` ends or
    two minutes have passed."""
    deadline = time.monotonic() + 120
    found: list[int] = []
    while len(found) < count and time.monotonic() < deadline and process.poll() is None:
        time.sleep(poll_s)
        found = find(process.pid)
    return found


def stop_cli(process: subprocess.Popen[str], signum: int, whole_session: bool) -> str:
    """Send ``signum`` to ``process`` (or, as a closed terminal does, to its whole session) and wait for it
    to end; its stderr."""
    if whole_session:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    return err
