"""``llmkick sweep --parallel N`` / ``--devices`` / ``--launcher``: same points, same results, same files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_processes import children as child_processes
from sweep_processes import lm_eval_processes, run_cli, start_cli, stop_cli, wait_for_processes

from llmkick_models.workflow import slurm, sweep
from llmkick_models.workflow.cli import build_parser, main
from llmkick_models.workflow.commands import plan_workers
from llmkick_models.workflow.sweep import Slot
from llmkick_models.workflow.sweep_plan import SweepError, SweepPoint

POINT_FILES = {"results.json", "fingerprint.json", "lm_eval.log", "lm_eval"}


def _argv(model: Path, tasks_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "sweep", "--model", str(model), "--methods", "magnitude", "--sparsities", "0.3,0.5",
        "--patterns", "2:4", "--tasks", "local_fixture_choice", "--output", str(run_dir),
        "--include_path", str(tasks_dir), "--device", "cpu", "--limit", "4", *extra,
    ]  # fmt: skip


def _scores(run_dir: Path) -> dict[str, object]:
    """Every point's metric values and every document's log-likelihoods, as lm-eval wrote them."""
    scores: dict[str, object] = {}
    for point_dir in sorted((run_dir / "points").iterdir()):
        results = json.loads((point_dir / "results.json").read_text())
        samples = []
        for file in sorted((point_dir / "lm_eval").rglob("samples_*.jsonl")):
            samples += [
                (s["doc_id"], s["filtered_resps"]) for s in map(json.loads, file.read_text().splitlines())
            ]
        scores[point_dir.name] = {"results": results["results"], "samples": sorted(samples)}
    return scores


@pytest.mark.e2e
def test_parallel_and_submitit_give_the_sequential_results(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("submitit")
    runs = {
        "sequential": (),
        "parallel": ("--parallel", "2"),
        "submitit": ("--launcher", "submitit-local", "--parallel", "2"),
    }
    outputs = {}
    for name, extra in runs.items():
        argv = _argv(tiny_llama_dir, local_task_dir, tmp_path / name, *extra)
        argv[argv.index("0.3,0.5")] = "0.5"  # dense and one compressed point: one lm-eval process each
        del argv[argv.index("--patterns") : argv.index("--patterns") + 2]
        result = run_cli(argv)
        assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
        outputs[name] = result.stdout
    expected = ["dense", "magnitude-s0.5"]
    reference = _scores(tmp_path / "sequential")
    assert sorted(reference) == expected
    # The threads each point's lm-eval started with: torch's default in this environment, or cores / 2.
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                             capture_output=True, text=True, env=os.environ, check=True).stdout  # fmt: skip
    threads = {"sequential": int(default), "parallel": max(1, len(os.sched_getaffinity(0)) // 2)}
    threads["submitit"] = threads["parallel"]
    for name in ("sequential", "parallel", "submitit"):
        run_dir = tmp_path / name
        assert _scores(run_dir) == reference, name
        for point in expected:  # the layout of the sequential path, and the same fingerprint
            folder = run_dir / "points" / point
            assert {p.name for p in folder.iterdir()} == POINT_FILES
            fingerprint = json.loads((folder / "fingerprint.json").read_text())
            sequential = json.loads(
                (tmp_path / "sequential" / "points" / point / "fingerprint.json").read_text()
            )
            # Recorded, not compared: the threads differ, and that is why they are provenance.
            assert fingerprint.pop("provenance") == {"threads": threads[name]}, name
            del sequential["provenance"]
            assert fingerprint == sequential
        assert (run_dir / "report.md").is_file()
    assert outputs["submitit"].count("submitted as job") == 2
    # Resume holds for every launcher: the sequential command finds the parallel run's points done.
    again = _argv(tiny_llama_dir, local_task_dir, tmp_path / "parallel")
    again[again.index("0.3,0.5")] = "0.5"
    del again[again.index("--patterns") : again.index("--patterns") + 2]
    result = run_cli(again)
    assert result.returncode == 0 and result.stdout.count("done earlier, skipped") == 2


def _workers(*extra: str, device: str | None = "cpu") -> tuple[list[str], list[Slot], object]:
    argv = ["sweep", "--model", "m", "--methods", "magnitude", "--tasks", "t", "--output", "o", *extra]
    args, passthrough = build_parser().parse_known_args(argv)
    if device is not None:
        passthrough += ["--device", device]
    return plan_workers(args, passthrough)


def test_cpu_workers_split_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)), raising=False)
    _, slots, launcher = _workers("--parallel", "2")
    assert launcher is None and slots == [Slot(threads=4), Slot(threads=4)]
    assert slots[0].env() == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert _workers()[1] == [Slot()]  # sequential: nothing changes
    passthrough, slots, _ = _workers("--devices", "cpu:0,cpu:1,cpu:2", "--parallel", "2", device=None)
    assert passthrough[-2:] == ["--device", "cpu:0"]  # the device type enters the fingerprint
    assert [s.device for s in slots] == ["cpu:0", "cpu:1"] and slots[0].threads == 4


@pytest.mark.parametrize(
    ("extra", "device", "message"),
    [
        (("--parallel", "2"), None, "--parallel 2 without --devices runs CPU workers"),
        (("--parallel", "2"), "cuda:0", "--devices cuda:0,cuda:1"),
        (("--devices", "cuda:0,cpu"), None, "distinct devices of one kind"),
        (("--devices", "cuda:0,cuda:0"), None, "distinct devices of one kind"),
        (("--devices", "cuda:7"), None, "cuda:7 is not available"),
        (("--devices", "cpu:0", "--parallel", "2"), None, "--parallel 2 needs as many --devices"),
        (("--devices", "cpu:0"), "cuda:0", "contradicts --devices"),
        (("--slurm_args", "timeout_min=5"), "cpu", "--slurm_args needs --launcher slurm"),
    ],
)
def test_bad_worker_options_are_refused(extra: tuple[str, ...], device: str | None, message: str) -> None:
    with pytest.raises(SweepError, match=message.replace("(", r"\(")):
        _workers(*extra, device=device)


def test_bad_worker_options_exit_2_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sweep", "--model", str(tmp_path), "--methods", "magnitude", "--sparsities", "0.5",
            "--tasks", "t", "--output", str(tmp_path / "run"), "--parallel", "2"]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and "add --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_slurm_without_submitit_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    argv = ["sweep", "--model", str(tmp_path), "--methods", "magnitude", "--sparsities", "0.5",
            "--tasks", "t", "--output", str(tmp_path / "run"), "--launcher", "slurm"]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "pip install 'llmkick[slurm]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_slurm_needs_sbatch_and_known_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SweepError, match="timeout_min=240"):
        _workers("--launcher", "slurm")
    with pytest.raises(SweepError, match="sbatch is not on PATH"):
        _workers("--launcher", "slurm", "--slurm_args", "timeout_min=60")
    with pytest.raises(SweepError, match="--slurm_args"):
        _workers("--launcher", "submitit-local", "--slurm_args", "no_such_parameter=1")
    _, _, launcher = _workers("--launcher", "submitit-local", "--slurm_args", "timeout_min=30")
    assert launcher.executor.parameters["timeout_min"] == 30
    _, _, launcher = _workers("--launcher", "submitit-local")  # not submitit's 5 minutes
    assert launcher.executor.parameters["timeout_min"] == 7 * 24 * 60


def test_each_worker_gets_its_own_device() -> None:
    plan = sweep.SweepPlan([SweepPoint()], "pretrained=m", "t", {}, ["--device=cuda:0", "--limit", "4"], {})
    command = sweep._point_command(plan, SweepPoint(), Path("raw"), Slot(device="cuda:1"), Path("cache"))
    assert "--device=cuda:0" not in command and command[-6:-3] == ["4", "--device", "cuda:1"]
    assert command[-3:] == ["--log_samples", "--use_cache", str(Path("cache") / "lm_eval")]
    assert sweep.option_value(plan.lm_eval_args, "--device") == "cuda:0"


def test_one_sweep_at_a_time_per_run_directory(tmp_path: Path) -> None:
    from filelock import FileLock

    plan = sweep.SweepPlan([SweepPoint()], "pretrained=m", "t", {}, [], {}, {"dense": {}})
    with FileLock(str(tmp_path / ".sweep.lock")), pytest.raises(SweepError, match="another llmkick sweep"):
        sweep.run_sweep(plan, tmp_path)
    assert not (tmp_path / "sweep.json").exists()


def test_fail_fast_with_parallel_workers_starts_nothing_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = [SweepPoint(), *(SweepPoint("magnitude", s) for s in (0.1, 0.2, 0.3, 0.4, 0.5))]
    plan = sweep.SweepPlan(points, "pretrained=m", "t", {}, [], {}, {p.point_id: {} for p in points})
    attempted: list[str] = []

    def fail(plan, point, point_dir, progress, slot) -> bool:
        attempted.append(point.point_id)
        time.sleep(0.2)
        return False

    monkeypatch.setattr(sweep, "_run_point", fail)
    outcome = sweep.run_sweep(plan, tmp_path / "a", slots=[Slot(), Slot()])
    assert sorted(outcome.failed) == sorted(attempted) and len(attempted) == 6
    assert outcome.failed == [p.point_id for p in points]  # reported in the sweep's order
    attempted.clear()
    outcome = sweep.run_sweep(plan, tmp_path / "b", slots=[Slot(), Slot()], fail_fast=True)
    # The two points in flight when the first failed finish; no later point starts.
    assert len(attempted) == 2 and sorted(outcome.failed) == sorted(attempted)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the child processes")
def test_sigterm_stops_every_parallel_worker(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path
) -> None:
    swept = start_cli(_argv(tiny_llama_dir, local_task_dir, tmp_path / "run", "--parallel", "2"))
    children = wait_for_processes(child_processes, swept, 2, poll_s=0.1)
    assert len(children) == 2, "the sweep never ran two lm-eval processes at once"
    swept.send_signal(signal.SIGTERM)
    _, err = swept.communicate(timeout=60)
    assert swept.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.killpg(child, 0)  # nothing of either worker's process group is left
    # A point that completed just before the signal is kept (finished points always are), but only whole:
    # results and fingerprint both in place; the point stopped mid-run has neither.
    finished = list((tmp_path / "run").glob("points/*/results.json"))
    for results in finished:
        json.loads(results.read_text())
        assert (results.parent / "fingerprint.json").is_file()
    assert len(finished) < 2, "SIGTERM came while two points were running; at most one can have finished"


def test_lm_evals_device_is_not_taken_for_devices() -> None:
    argv = ["sweep", "--model", "m", "--methods", "x", "--tasks", "t", "--output", "o", "--device", "cpu"]
    args, passthrough = build_parser().parse_known_args(argv)
    assert args.devices is None and passthrough == ["--device", "cpu"]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the child processes")
@pytest.mark.parametrize(
    ("signum", "to_session"),
    # SIGHUP as a closed terminal sends it: to the sweep, submitit's controller and the jobs at once
    [(signal.SIGTERM, False), (getattr(signal, "SIGHUP", None), True)],
    ids=["SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_cancels_the_submitit_jobs_and_their_lm_eval(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, signum: int | None, to_session: bool
) -> None:
    pytest.importorskip("submitit")
    if signum is None:
        pytest.skip("no SIGHUP on this platform")
    argv = _argv(
        tiny_llama_dir, local_task_dir, tmp_path / "run", "--launcher", "submitit-local", "--parallel", "2"
    )
    swept = start_cli(argv, new_session=to_session)
    workers = wait_for_processes(lm_eval_processes, swept, 2, poll_s=0.2)
    assert len(workers) == 2, "the jobs never ran two lm-eval processes at once"
    err = stop_cli(swept, signum, whole_session=to_session)
    name = signal.Signals(signum).name
    assert swept.returncode == 128 + signum and f"stopped by {name}" in err, err[-3000:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.2)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], (
        "an lm-eval process outlived the sweep"
    )
    # A point that completed just before the signal is kept (finished points always are), but only whole:
    # results and fingerprint both in place; the point stopped mid-run has neither.
    finished = list((tmp_path / "run").glob("points/*/results.json"))
    for results in finished:
        json.loads(results.read_text())
        assert (results.parent / "fingerprint.json").is_file()
    assert len(finished) < 2, f"{name} came while two points were running; at most one can have finished"
    # Stopped, not left to finish on its own (an orphan would have written its results by now).
    for raw in (tmp_path / "run").glob("points/*/lm_eval/**/results_*.json"):
        point = raw.relative_to(tmp_path / "run" / "points").parts[0]
        assert (tmp_path / "run" / "points" / point / "results.json").is_file(), f"{point}'s lm-eval ran on"


class _Refused(Exception):
    """What sbatch's refusal looks like to the executor's caller."""


class _FakeJob:
    def __init__(self, number: int, outcome: object) -> None:
        self.job_id = str(number)
        self.outcome = outcome
        self.polls = 0
        self.cancelled = False

    def done(self) -> bool:
        self.polls += 1
        return self.polls > 1

    def result(self) -> object:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


class _FakeExecutor:
    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.jobs: list[_FakeJob] = []
        self.in_flight_at_submit: list[int] = []

    def submit(self, function, plan, point, point_dir, slot) -> _FakeJob:
        assert function is sweep.execute_point  # the local workers' function, nothing else
        outcome = self.outcomes[len(self.jobs)]
        if isinstance(outcome, _Refused):
            raise outcome
        self.in_flight_at_submit.append(sum(1 for j in self.jobs if j.polls <= 1))
        self.jobs.append(_FakeJob(len(self.jobs), outcome))
        return self.jobs[-1]


def _fake_launcher(outcomes: list[object], parallel: int | None) -> slurm.SubmititLauncher:
    launcher = object.__new__(slurm.SubmititLauncher)
    launcher.executor, launcher.parallel, launcher.slot, launcher.poll_s = (
        _FakeExecutor(outcomes),
        parallel,
        Slot(),
        0,
    )
    return launcher


def test_submitit_jobs_in_flight_failures_and_refused_submissions(tmp_path: Path) -> None:
    points = [SweepPoint(), *(SweepPoint("magnitude", s) for s in (0.1, 0.2, 0.3))]
    plan = sweep.SweepPlan(points, "pretrained=m", "t", {}, [], {}, {p.point_id: {} for p in points})
    died = RuntimeError("Job 2 (task: 0) failed: DUE TO TIME LIMIT")
    launcher = _fake_launcher([(True, "ok"), (False, "FAILED (exit 1)"), died, (True, "ok")], parallel=2)
    outcome = sweep.run_sweep(plan, tmp_path / "a", launcher=launcher)
    assert max(launcher.executor.in_flight_at_submit) <= 1  # never more than 2 jobs at once
    assert outcome.failed == ["magnitude-s0.1", "magnitude-s0.2"]
    assert [f.parent.name for f in outcome.finished] == ["dense", "magnitude-s0.3"]

    refused = _fake_launcher([(True, "ok"), _Refused("sbatch: error: invalid partition")], parallel=None)
    with pytest.raises(
        SweepError, match=r"submitting magnitude-s0\.1 failed: sbatch: error: invalid partition"
    ):
        sweep.run_sweep(plan, tmp_path / "b", launcher=refused)
    assert refused.executor.jobs[0].cancelled  # what was already queued does not keep running
