"""``llmkick sweep`` never reuses results that do not match, and fails before point 1 on bad input."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from report_fixtures import edit_score, samples_file, write_point
from sweep_processes import children as child_processes
from sweep_processes import run_cli, start_cli, stop_cli, wait_for_processes

from llmkick_models.workflow.cli import main
from llmkick_models.workflow.fingerprints import fingerprint_changes
from llmkick_models.workflow.preflight import check_compress_args, preflight
from llmkick_models.workflow.stale_points import stale_points, untrusted_results
from llmkick_models.workflow.sweep_plan import SweepError, SweepPoint, plan_points


def _sweep_argv(model: Path, tasks_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "sweep", "--model", str(model), "--methods", "magnitude", "--patterns", "2:4",
        "--tasks", "local_fixture_choice", "--output", str(run_dir),
        "--include_path", str(tasks_dir), "--device", "cpu", "--limit", "2", *extra,
    ]  # fmt: skip


def _pretrained_in(results_file: Path) -> str:
    return json.loads(results_file.read_text())["config"]["model_args"]


@pytest.mark.e2e
def test_resume_with_another_model_refuses_then_reruns(
    tiny_model_dirs: dict[str, Path], local_task_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    model_a, model_b = tiny_model_dirs["llama"], tiny_model_dirs["qwen2"]
    first = run_cli(_sweep_argv(model_a, local_task_dir, run_dir, "--parallel", "2"))  # two at once: faster
    assert first.returncode == 0, first.stderr[-3000:]
    sweep_before = (run_dir / "sweep.json").read_text()
    results = run_dir / "points" / "magnitude-2of4" / "results.json"
    results_before = results.read_text()

    refused = run_cli(_sweep_argv(model_b, local_task_dir, run_dir))
    assert refused.returncode == 2
    assert "nothing was run" in refused.stderr and "--rerun" in refused.stderr
    assert f"model_args.pretrained: '{model_a}' -> '{model_b}'" in refused.stderr
    assert "done earlier" not in refused.stdout
    assert (run_dir / "sweep.json").read_text() == sweep_before  # the header still names what is held
    assert results.read_text() == results_before

    rerun = run_cli(_sweep_argv(model_b, local_task_dir, run_dir, "--rerun", "--parallel", "2"))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("computed with other settings, recomputing") == 2
    assert str(model_b) in json.loads((run_dir / "sweep.json").read_text())["base_model_args"]
    for point in ("dense", "magnitude-2of4"):
        held = _pretrained_in(run_dir / "points" / point / "results.json")
        assert str(model_b) in str(held) and str(model_a) not in str(held)
    report = (run_dir / "report.md").read_text()
    assert str(model_b) in report.splitlines()[0]

    again = run_cli(_sweep_argv(model_b, local_task_dir, run_dir))  # lm-eval's real files pass the check
    assert again.returncode == 0 and again.stdout.count("done earlier, skipped") == 2

    edited = edit_score(run_dir / "points" / "dense", "local_fixture_choice", "acc,none", 0.123)
    refused = run_cli(_sweep_argv(model_b, local_task_dir, run_dir))
    assert refused.returncode == 2 and "nothing was run" in refused.stderr
    assert (
        f"dense: results disagree with samples: {edited} reports local_fixture_choice acc,none = 0.123, "
        "recomputed from "
    ) in refused.stderr
    assert "/lm_eval/" in refused.stderr.split("recomputed from ")[1]  # the run's own samples file


def _plan(model: Path, tasks_dir: Path, compress: dict[str, str] | None = None, *lm_eval: str):
    points = plan_points(["wanda"], patterns=["2:4"])
    return preflight(
        points,
        base_model_args=f"pretrained={model}",
        tasks="local_fixture_choice",
        compress_args=compress or {"calibration": "random", "nsamples": "2"},
        lm_eval_args=["--include_path", str(tasks_dir), "--device", "cpu", *lm_eval],
    )


def _mark_finished(plan, run_dir: Path) -> None:
    for point_id, fingerprint in plan.fingerprints.items():
        folder = run_dir / "points" / point_id
        folder.mkdir(parents=True)
        (folder / "results.json").write_text("{}")
        (folder / "fingerprint.json").write_text(json.dumps(fingerprint))


def _finished_point(plan, run_dir: Path, point_id: str, tasks: dict | None = None, **options) -> Path:
    """A point finished with the plan's fingerprint: results.json and the samples logged with it."""
    tasks = tasks or {"local_fixture_choice": {"acc": [1, 0, 1, 1]}}
    folder = write_point(run_dir, point_id, tasks, **options)
    (folder / "fingerprint.json").write_text(json.dumps(plan.fingerprints[point_id]))
    return folder


def test_results_that_disagree_with_their_samples_are_refused_then_recomputed(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkick_models.workflow import sweep

    plan = _plan(tiny_llama_dir, local_task_dir)
    run_dir = tmp_path / "run"
    dense, wanda = (_finished_point(plan, run_dir, p) for p in ("dense", "wanda-2of4"))
    assert stale_points(plan, run_dir) == {}  # same settings, results as their samples give them
    edited = edit_score(dense, "local_fixture_choice", "acc,none", 0.8)  # 3 of 4 right: 0.75
    samples_file(wanda, "local_fixture_choice").unlink()
    attempted: list[str] = []

    def run(plan, point, point_dir, progress, **_slot) -> bool:
        attempted.append(point.point_id)
        return True

    monkeypatch.setattr(sweep, "_run_point", run)
    with pytest.raises(SweepError) as refused:
        sweep.run_sweep(plan, run_dir)
    message = str(refused.value)
    assert "nothing was run" in message and "Re-run with --rerun" in message
    assert (
        f"  dense: results disagree with samples: {edited} reports local_fixture_choice acc,none = 0.8, "
        f"recomputed from {samples_file(dense, 'local_fixture_choice')}: 0.75\n"
    ) in message
    assert f"  wanda-2of4: samples missing: {samples_file(wanda, 'local_fixture_choice')}\n" in message
    assert attempted == [] and edited.is_file() and not (run_dir / "sweep.json").exists()

    sweep.run_sweep(plan, run_dir, rerun=True)
    assert attempted == ["dense", "wanda-2of4"]
    assert not edited.exists() and not (wanda / "results.json").exists()  # deleted before recomputing


def test_an_unreadable_results_file_is_not_reused(tmp_path: Path) -> None:
    folder = write_point(tmp_path, "dense", {"t": {"acc": [1, 0]}})
    assert untrusted_results(folder) == []
    (folder / "results.json").write_text("[1, 2]")
    assert untrusted_results(folder) == [
        f"results unreadable: {folder / 'results.json'} is not a JSON object"
    ]


def test_a_score_that_cannot_be_recomputed_is_reused_with_a_warning(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(tiny_llama_dir, local_task_dir)
    for point in ("dense", "wanda-2of4"):
        _finished_point(plan, tmp_path, point, {"mt": {"bleu": [0.5, 0.25]}}, recorded={"bleu": "bleu"})
    assert stale_points(plan, tmp_path) == {}
    err = capsys.readouterr().err
    assert (
        "llmkick sweep: warning: dense: mt: mt bleu,none cannot be recomputed from samples: lm-eval "
        "aggregated it with 'bleu', which llmkick does not redo; reused as reported"
    ) in err


def test_fingerprint_covers_tasks_options_compression_and_data(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(tiny_llama_dir, local_task_dir, None, "--limit", "4")
    _mark_finished(plan, tmp_path)
    assert stale_points(_plan(tiny_llama_dir, local_task_dir, None, "--limit=4"), tmp_path) == {}
    # cuda:0 and cuda:1 compute the same numbers; the device type is what counts
    assert plan.common["lm_eval_options"].get("device") == "cpu"

    changed = stale_points(_plan(tiny_llama_dir, local_task_dir, None, "--limit", "3"), tmp_path)
    assert set(changed) == {"dense", "wanda-2of4"}
    assert any("lm_eval_options.limit: 4.0 -> 3.0" in c for c in changed["dense"])

    other = _plan(tiny_llama_dir, local_task_dir, {"calibration": "random", "nsamples": "4"}, "--limit", "4")
    changed = stale_points(other, tmp_path)
    assert list(changed) == ["wanda-2of4"]  # the dense point takes no calibration arguments
    assert changed["wanda-2of4"] == ["model_args.nsamples: '2' -> '4'"]

    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("a")
    monkeypatch.setenv("LLMKICK_DATA_DIR", str(data))
    changed = stale_points(_plan(tiny_llama_dir, local_task_dir, None, "--limit", "4"), tmp_path)
    assert any(c.startswith("data_dir") for c in changed["dense"])

    assert fingerprint_changes(None, plan.fingerprints["dense"])[0].startswith("no fingerprint")


def test_the_scoring_method_is_in_the_fingerprint(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMKICK_SCORING", raising=False)
    plan = _plan(tiny_llama_dir, local_task_dir)
    assert plan.common["environment"] == {"LLMKICK_SCORING": "chunked"}
    _mark_finished(plan, tmp_path)
    monkeypatch.setenv("LLMKICK_SCORING", "chunked")  # the default, named: the same setting
    assert stale_points(_plan(tiny_llama_dir, local_task_dir), tmp_path) == {}

    monkeypatch.setenv("LLMKICK_SCORING", "full-logits")  # scores differ in the last digits: not reused
    changed = stale_points(_plan(tiny_llama_dir, local_task_dir), tmp_path)
    assert changed == {
        point: ["environment.LLMKICK_SCORING: 'chunked' -> 'full-logits'"]
        for point in ("dense", "wanda-2of4")
    }

    older = (
        tmp_path / "points" / "dense" / "fingerprint.json"
    )  # as an llmkick that did not record it wrote it
    written = json.loads(older.read_text())
    del written["environment"]
    older.write_text(json.dumps(written))
    monkeypatch.delenv("LLMKICK_SCORING")
    assert stale_points(_plan(tiny_llama_dir, local_task_dir), tmp_path) == {
        "dense": ["environment.LLMKICK_SCORING: (absent) -> 'chunked'"]
    }

    monkeypatch.setenv("LLMKICK_SCORING", "fast")
    with pytest.raises(ValueError, match=r"\$LLMKICK_SCORING='fast': allowed chunked or full-logits"):
        _plan(tiny_llama_dir, local_task_dir)


def test_misspelled_compress_args_stop_before_point_1(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "sweep", "--model", str(tiny_llama_dir), "--methods", "wanda", "--sparsities", "0.5",
        "--compress_args", "calibration=random,nsample=2,seqln=16", "--tasks", "t",
        "--output", str(tmp_path / "r"),
    ]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "unknown key 'nsample'" in err and "did you mean 'nsamples'" in err
    assert not (tmp_path / "r").exists()


def test_compress_args_that_would_be_dropped_are_refused_or_shown() -> None:
    points = [SweepPoint(), SweepPoint("magnitude", 0.5)]
    with pytest.raises(SweepError, match="sweep axis"):
        check_compress_args(points, {"sparsity": "0.5"})
    warnings = check_compress_args(points, {"percdamp": "0.1"})  # magnitude has no Hessian
    assert len(warnings) == 1 and "percdamp=0.1 reaches no point of this sweep" in warnings[0]
    assert check_compress_args(points, {"calibration": "random"}) == []


def test_bad_compress_arg_values_fail_in_preflight(tiny_llama_dir: Path, local_task_dir: Path) -> None:
    with pytest.raises(SweepError, match=r"point wanda-2of4: nsamples='zero'"):
        _plan(tiny_llama_dir, local_task_dir, {"calibration": "random", "nsamples": "zero"})
    with pytest.raises(SweepError, match="calibration='/no/such/file'"):
        _plan(tiny_llama_dir, local_task_dir, {"calibration": "/no/such/file"})


def test_lm_eval_typo_fails_before_point_1_even_when_all_done(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(tiny_llama_dir, local_task_dir)
    _mark_finished(plan, tmp_path)
    argv = [
        "sweep", "--model", str(tiny_llama_dir), "--methods", "wanda", "--patterns", "2:4",
        "--compress_args", "calibration=random,nsamples=2", "--tasks", "local_fixture_choice",
        "--output", str(tmp_path), "--include_path", str(local_task_dir), "--limt", "4",
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    assert "lm-eval: error: unrecognized arguments: --limt 4" in err
    assert not (tmp_path / "sweep.json").exists()


def test_unknown_task_names_are_listed(tiny_llama_dir: Path, local_task_dir: Path) -> None:
    points = plan_points(["magnitude"], sparsities=[0.5])
    with pytest.raises(SweepError, match="Tasks not found: no_such_task"):
        preflight(points, base_model_args=f"pretrained={tiny_llama_dir}",
                  tasks="local_fixture_choice,no_such_task", compress_args={},
                  lm_eval_args=["--include_path", str(local_task_dir)])  # fmt: skip
    with pytest.raises(SweepError, match="set by llmkick sweep"):
        preflight(points, base_model_args=f"pretrained={tiny_llama_dir}", tasks="local_fixture_choice",
                  compress_args={}, lm_eval_args=["--output_path", "x"])  # fmt: skip


def test_malformed_task_knob_stops_the_sweep_before_point_one(
    tiny_llama_dir: Path, local_task_dir: Path
) -> None:
    points = plan_points(["magnitude"], sparsities=[0.5])
    message = r"--metadata: metadata wikitext2_windows='3': allowed a positive integer"
    with pytest.raises(SweepError, match=message):
        preflight(points, base_model_args=f"pretrained={tiny_llama_dir}", tasks="local_fixture_choice",
                  compress_args={}, lm_eval_args=["--include_path", str(local_task_dir),
                                                  "--metadata", '{"wikitext2_windows": "3"}'])  # fmt: skip


@pytest.mark.e2e
def test_failing_point_shows_its_log_and_the_others_run(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    # Pre-flight reads the calibration text; only the loaded model's tokenizer finds it too short, so the
    # compressed point fails at compression and the dense one (no calibration) runs.
    short = tmp_path / "short.txt"
    short.write_text("Too short to calibrate on.\n")
    result = run_cli(
        _sweep_argv(tiny_llama_dir, local_task_dir, run_dir, "--compress_args", f"calibration={short}")
    )
    assert result.returncode == 1
    assert "magnitude-2of4: FAILED (exit 1); last lines of" in result.stdout
    assert "no document has more than seqlen" in result.stdout  # the cause, from the log's tail
    assert "1 of 2 points failed: magnitude-2of4" in result.stderr
    assert (run_dir / "points" / "dense" / "results.json").is_file()
    assert not (run_dir / "points" / "magnitude-2of4" / "results.json").exists()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the child process")
@pytest.mark.parametrize(
    ("signum", "to_session"),
    # SIGHUP as a closed terminal sends it: to the whole session (lm-eval runs in a session of its own)
    [pytest.param(signal.SIGTERM, False, marks=pytest.mark.e2e), (getattr(signal, "SIGHUP", None), True)],
    ids=["SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_stops_the_lm_eval_child_and_the_sweep_resumes(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, signum: int | None, to_session: bool
) -> None:
    if signum is None:
        pytest.skip("no SIGHUP on this platform")
    argv = _sweep_argv(tiny_llama_dir, local_task_dir, tmp_path / "run")
    sweep = start_cli(argv, new_session=to_session)
    children = wait_for_processes(child_processes, sweep, 1, poll_s=0.2)
    assert children, "the sweep never started lm-eval"
    err = stop_cli(sweep, signum, whole_session=to_session)
    name = signal.Signals(signum).name
    assert sweep.returncode == 128 + signum, err[-3000:]
    assert f"stopped by {name}; the running points were stopped, finished points are kept" in err
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.killpg(child, 0)  # nothing of the child's process group is left
    assert not list((tmp_path / "run").glob("points/*/results.json"))
    # An immediate resume runs alone: every point ends with one lm-eval results file, the resume's.
    resumed = run_cli(argv)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for point in ("dense", "magnitude-2of4"):
        assert len(list((tmp_path / "run" / "points" / point / "lm_eval").rglob("results_*.json"))) == 1


def test_fail_fast_stops_after_the_first_failure(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkick_models.workflow import sweep

    plan = _plan(tiny_llama_dir, local_task_dir)
    attempted: list[str] = []

    def fail(plan, point, point_dir, progress, **_slot) -> bool:
        attempted.append(point.point_id)
        return False

    monkeypatch.setattr(sweep, "_run_point", fail)
    outcome = sweep.run_sweep(plan, tmp_path / "a")
    assert attempted == ["dense", "wanda-2of4"] and outcome.failed == attempted  # default: goes on
    attempted.clear()
    assert sweep.run_sweep(plan, tmp_path / "b", fail_fast=True).failed == ["dense"] == attempted


def test_hub_model_is_fingerprinted_by_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmkick_models.workflow import fingerprints

    commits = iter(["a" * 40, "b" * 40])
    monkeypatch.setattr(
        "llmkick_models.storage.cache_key._hub_commit",
        lambda model_id, revision, cache_dir=None: next(commits),
    )
    first = fingerprints.model_identity({"pretrained": "org/model"})
    second = fingerprints.model_identity({"pretrained": "org/model"})
    assert first["model_id"] == "org/model" and first["commit"] == "a" * 40
    assert fingerprint_changes({"model": first}, {"model": second}) == [
        f"model.commit: '{'a' * 40}' -> '{'b' * 40}'"
    ]


def test_preflight_checks_judge_and_calibration_reachability(
    tiny_llama_dir: Path, local_task_dir: Path
) -> None:
    points = plan_points(["wanda"], sparsities=[0.5])
    base = f"pretrained={tiny_llama_dir}"
    with pytest.raises(SweepError, match="judge") as error:
        preflight(points, base_model_args=base, tasks="llmkick_summarization",
                  compress_args={"calibration": "random"}, lm_eval_args=[])  # fmt: skip
    assert "--tasks llmkick_exact_match" in str(error.value)
    with pytest.raises(SweepError, match=r"point wanda-s0.5: calibration=c4: could not load"):
        preflight(points, base_model_args=base, tasks="local_fixture_choice", compress_args={},
                  lm_eval_args=["--include_path", str(local_task_dir)])  # fmt: skip


def test_a_resume_on_another_stack_is_refused_and_rerun_recomputes(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import version

    from llmkick_models.workflow import sweep

    plan = _plan(tiny_llama_dir, local_task_dir)
    for package in ("torch", "transformers", "accelerate", "lm_eval"):
        assert plan.common["versions"][package] == version(package)
    _mark_finished(plan, tmp_path)
    dense = tmp_path / "points" / "dense" / "fingerprint.json"
    stored = json.loads(dense.read_text())
    # Threads are provenance: recorded, never compared (a --parallel sweep resumes a sequential one).
    dense.write_text(json.dumps({**stored, "provenance": {"threads": 64}}))
    assert stale_points(plan, tmp_path) == {}

    stored["versions"]["transformers"] = "5.19.0"
    dense.write_text(json.dumps(stored))
    older = tmp_path / "points" / "wanda-2of4" / "fingerprint.json"  # as an older llmkick wrote it
    written = json.loads(older.read_text())
    for package in ("torch", "transformers", "accelerate"):
        del written["versions"][package]
    older.write_text(json.dumps(written))
    stale = stale_points(plan, tmp_path)
    assert stale == {
        "dense": [f"versions.transformers: '5.19.0' -> '{version('transformers')}'"],
        "wanda-2of4": [
            f"versions.{package}: (absent) -> '{version(package)}'"
            for package in ("accelerate", "torch", "transformers")
        ],
    }
    with pytest.raises(SweepError, match="nothing was run"):
        sweep.run_sweep(plan, tmp_path)

    recomputed: list[str] = []

    def run(plan, point, point_dir, progress, **_slot) -> bool:
        recomputed.append(point.point_id)
        assert not (point_dir / "results.json").exists()  # the stale results went first
        return True

    monkeypatch.setattr(sweep, "_run_point", run)
    sweep.run_sweep(plan, tmp_path, rerun=True)
    assert recomputed == ["dense", "wanda-2of4"]


class _FakeLmEval:
    """Stands in for the lm-eval process: exits with ``returncode`` after writing a results file (or not)."""

    pid = -1  # os.killpg refuses it (EINVAL): a stray stop could signal nothing

    def __init__(self, returncode: int, raw_dir: Path | None = None) -> None:
        self.returncode = returncode
        if raw_dir is not None:
            (raw_dir / "model").mkdir(parents=True)
            results = {"results": {}, "config": {"model_dtype": "torch.float32"}}
            (raw_dir / "model" / "results_2026.json").write_text(json.dumps(results))

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode


def test_each_point_gets_the_response_cache_of_its_fingerprint(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkick_models.workflow import sweep
    from llmkick_models.workflow.fingerprints import fingerprint_digest
    from llmkick_tasks.judge.generations import GENERATIONS_ENV

    plan = _plan(tiny_llama_dir, local_task_dir, None, "--limit", "4")
    point, point_dir = plan.points[1], tmp_path / "points" / plan.points[1].point_id
    digest = fingerprint_digest(plan.fingerprints[point.point_id])
    other_limit = _plan(tiny_llama_dir, local_task_dir, None, "--limit", "3").fingerprints[point.point_id]
    assert fingerprint_digest(other_limit) != digest
    stale = point_dir / "responses" / fingerprint_digest(other_limit)
    stale.mkdir(parents=True)
    (stale / "lm_eval_rank0.db").write_text("answers of --limit 3")
    generations = point_dir / "generations"
    generations.mkdir()
    (generations / "task.jsonl").write_text("answers of --limit 3\n")
    started: list[tuple[list[str], dict[str, str]]] = []

    def start(returncode: int, write_results: bool):
        def fake(command: list[str], log_file: object, env: dict[str, str]) -> _FakeLmEval:
            started.append((command, env))
            raw_dir = Path(command[command.index("--output_path") + 1])
            return _FakeLmEval(returncode, raw_dir if write_results else None)

        return fake

    monkeypatch.setattr(sweep._PROCESSES, "start", start(1, write_results=False))
    ok, message = sweep.execute_point(plan, point, point_dir)
    command, env = started[-1]
    cache = point_dir / "responses" / digest
    assert not ok and command[-2:] == ["--use_cache", str(cache / "lm_eval")]
    assert env[GENERATIONS_ENV] == str(generations)
    assert not stale.exists()  # another setting's answers are never replayed
    assert not generations.exists()  # nor shown as this point's
    assert message.startswith("FAILED (exit 1); last lines of")  # no answers kept: nothing to say

    # lm-eval caches no sampled answers: a failed point then says that a re-run generates them again.
    sampled = _plan(tiny_llama_dir, local_task_dir, None, "--limit", "4", "--gen_kwargs", "do_sample=True")
    (point_dir / "responses" / fingerprint_digest(sampled.fingerprints[point.point_id])).mkdir(parents=True)
    generations.mkdir()
    (generations / "llmkick_mtbench.jsonl").write_text("{}\n")
    _ok, message = sweep.execute_point(sampled, point, point_dir)
    assert message.startswith(
        f"FAILED (exit 1); the generated answers are kept in {generations} (llmkick_mtbench.jsonl): "
        f"re-running the sweep generates them again (lm-eval caches no sampled answers, do_sample=true); "
        f"last lines of"
    )

    # The user's --use_cache (any spelling) is a folder for per-point caches, and no setting of the point.
    mine = tmp_path / "mine"
    theirs = _plan(tiny_llama_dir, local_task_dir, None, "--limit", "4", "--use_c", str(mine))
    assert theirs.fingerprints == plan.fingerprints
    sweep.execute_point(theirs, point, point_dir)
    assert started[-1][0][-2:] == ["--use_cache", str(mine / point.point_id / digest / "lm_eval")]

    cache.mkdir(parents=True)  # what the failed attempt's lm-eval cached
    monkeypatch.setattr(sweep._PROCESSES, "start", start(0, write_results=True))
    ok, _message = sweep.execute_point(plan, point, point_dir, sweep.Slot(threads=3))
    assert ok and not cache.exists()  # a finished point resumes nothing
    fingerprint = json.loads((point_dir / "fingerprint.json").read_text())
    assert fingerprint == {**plan.fingerprints[point.point_id], "provenance": {"threads": 3}}
    assert stale_points(plan, tmp_path) == {}
