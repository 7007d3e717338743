"""The judged tasks end to end through the real ``lm_eval`` CLI, a tiny model and the local judge server.

One run of all three tasks (module fixture) is checked for exact scripted scores, an unparseable reply
counted, 429/5xx bursts retried without loss, no API key anywhere and no @highlight in any prompt; then
a second run must send nothing.  Separately: a run in swap mode killed mid-judging resumes from the cache
and judges both orders, and a run without a judge fails before the model is loaded.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from judge_fixtures import (
    EXPECTED_MTBENCH,
    EXPECTED_SUMMARIZATION,
    EXPECTED_VICUNA,
    EXPECTED_VICUNA_SWAP,
    JUDGE_MODEL,
    LEAK,
    QUESTIONS,
    REFERENCE_MODEL,
    STORIES,
    scripted_reply,
)
from judge_server import JudgeServer, Received

LM_EVAL = Path(sys.executable).with_name("lm_eval")
SECRET = "sk-llmkick-cli-test-7e41d0b9"
TASKS = ["llmkick_summarization", "llmkick_instruction_vicuna80", "llmkick_mtbench"]
EXPECTED = dict(zip(TASKS, (EXPECTED_SUMMARIZATION, EXPECTED_VICUNA, EXPECTED_MTBENCH), strict=True))
# 6 stories: reference + verdict each; 4 questions: 1 reference + 4 verdicts; 3 conversations x 2 turns
UNIQUE_REQUESTS = 6 * 2 + (1 + 4) + 3 * 2


def cli_env(**judge: str) -> dict[str, str]:
    """The test's environment minus any ambient judge settings, offline, plus ``judge``."""
    drop = ("OPENAI_", "LLMKICK_JUDGE_", "LLMKICK_DATA_DIR", "LLMKICK_REFERENCE_MODEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **judge}


def judge_env(server: JudgeServer, cache: Path, data_dir: Path) -> dict[str, str]:
    return cli_env(
        LLMKICK_JUDGE_BASE_URL=server.url,
        LLMKICK_JUDGE_MODEL=JUDGE_MODEL,
        LLMKICK_JUDGE_API_KEY=SECRET,
        LLMKICK_JUDGE_CACHE=str(cache),
        LLMKICK_DATA_DIR=str(data_dir),
    )


def lm_eval_command(model_dir: Path, tasks: list[str], out: Path, **metadata: object) -> list[str]:
    metadata = {"reference_model": REFERENCE_MODEL, **metadata}
    return [
        str(LM_EVAL),
        "--model", "hf",
        "--model_args", f"pretrained={model_dir}",
        "--device", "cpu",
        "--batch_size", "8",
        "--tasks", ",".join(tasks),
        "--apply_chat_template",
        "--gen_kwargs", "max_gen_toks=4",
        "--metadata", json.dumps(metadata),
        "--output_path", str(out),
        "--log_samples",
    ]  # fmt: skip


@dataclass
class Run:
    results: dict
    samples: dict[str, list[dict]]
    output: str
    out_dir: Path
    requests: list[Received]


def run_cli(command: list[str], env: dict[str, str], server: JudgeServer, cwd: Path) -> Run:
    before = len(server.received)
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"lm_eval failed:\n{output[-8000:]}"
    out_dir = Path(command[command.index("--output_path") + 1])
    [results_file] = out_dir.rglob("results_*.json")
    samples = {
        task: [json.loads(line) for path in out_dir.rglob(f"samples_{task}_*.jsonl") for line in path.open()]
        for task in TASKS
    }
    return Run(json.loads(results_file.read_text()), samples, output, out_dir, server.received[before:])


@pytest.fixture(scope="module")
def runs(chat_model: Path, judged_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same three-task run twice against one judge server and one cache (bursts on the first)."""
    root = tmp_path_factory.mktemp("judged_cli")
    cache = root / "judge_cache.sqlite"
    with JudgeServer(scripted_reply) as server:
        env = judge_env(server, cache, judged_data)
        server.fail_next(429, 6, retry_after=0)
        server.fail_next(500, 2)
        server.fail_next(502, 1)
        first = run_cli(
            lm_eval_command(chat_model, TASKS, root / "first", judge_retries=12), env, server, root
        )
        second = run_cli(
            lm_eval_command(chat_model, TASKS, root / "second", judge_retries=12), env, server, root
        )
    return first, second, cache


def test_scores_equal_the_scripted_judge(runs) -> None:
    first, _, _ = runs
    for task, expected in EXPECTED.items():
        metrics = first.results["results"][task]
        for name, value in expected.items():
            assert metrics[f"{name},judge"] == pytest.approx(value), (task, name)


def test_results_record_the_judge(runs) -> None:
    first, _, _ = runs
    for task in TASKS:
        judge = first.results["configs"][task]["metadata"]["judge"]
        assert judge["model"] == JUDGE_MODEL and judge["reference_model"] == REFERENCE_MODEL
        assert judge["api_key_from"] == "LLMKICK_JUDGE_API_KEY"


def test_unparseable_reply_is_counted_and_left_out(runs) -> None:
    first, _, _ = runs
    [fife] = [s for s in first.samples["llmkick_summarization"] if s["doc"]["story_id"] == "fife"]
    record = json.loads(fife["filtered_resps"][0])  # the judged record, as JSON in the samples file
    assert record["scores"] is None and record["unparsed"] == 1
    assert record["judgments"][0]["reply"] == STORIES["Fife"][1]
    assert record["judgments"][0]["error"] == "0 score lines found, 4 needed"
    assert float(fife["judge_unparsed"]) == 1.0 and "coherence" not in fife  # no score for it, not a zero
    scored = [s for s in first.samples["llmkick_summarization"] if "coherence" in s]
    assert len(scored) == len(STORIES) - 1


def test_bursts_are_retried_and_nothing_is_lost(runs) -> None:
    first, _, _ = runs
    statuses = [r.status for r in first.requests]
    assert (statuses.count(429), statuses.count(500), statuses.count(502)) == (6, 2, 1)
    answered = [r for r in first.requests if r.status == 200]
    assert len(answered) == UNIQUE_REQUESTS  # every request answered once: none lost, none duplicated
    keys = {json.dumps(r.body, sort_keys=True) for r in answered}
    assert len(keys) == UNIQUE_REQUESTS
    assert sum(r.model == REFERENCE_MODEL for r in answered) == 6 + 1


def test_second_run_sends_zero_requests(runs) -> None:
    first, second, cache = runs
    assert second.requests == []
    for task in TASKS:
        assert second.results["results"][task] == first.results["results"][task]
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == UNIQUE_REQUESTS


def test_api_key_is_used_but_never_written(runs) -> None:
    first, second, cache = runs
    assert {r.headers["authorization"] for r in first.requests} == {f"Bearer {SECRET}"}
    for run in (first, second):
        assert SECRET not in run.output
        for path in run.out_dir.rglob("*"):
            if path.is_file():
                assert SECRET not in path.read_text(errors="replace"), path
    for path in cache.parent.glob(cache.name + "*"):
        assert SECRET.encode() not in path.read_bytes(), path


def test_highlights_never_reach_a_prompt(runs) -> None:
    first, _, _ = runs
    for sample in first.samples["llmkick_summarization"]:
        assert LEAK in sample["doc"]["highlights"]
        assert LEAK not in json.dumps(sample["arguments"])
    assert all(LEAK not in json.dumps(r.body) for r in first.requests)


def _cache_rows(cache: Path) -> int:
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


@pytest.mark.e2e
def test_killed_swap_run_resumes_from_the_cache(chat_model: Path, judged_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "judge_cache.sqlite"
    task = ["llmkick_instruction_vicuna80"]
    total = 1 + 2 * len(
        QUESTIONS
    )  # one reference answer to generate, two verdicts (both orders) per question
    with JudgeServer(scripted_reply) as server:
        env = judge_env(server, cache, judged_data)
        server.hold_after(2)  # answer two requests, then hang: the run is killed while judging
        command = lm_eval_command(
            chat_model, task, tmp_path / "killed", judge_max_concurrency=2, judge_swap=True
        )
        log = (tmp_path / "killed.log").open("w")
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not (_cache_rows(cache) >= 2 and server.in_flight > 0):
                assert process.poll() is None, (tmp_path / "killed.log").read_text()[-5000:]
                assert time.monotonic() < deadline, "the judge requests never started"
                time.sleep(0.2)
        finally:
            process.kill()
            process.wait()
            log.close()
        server.release(drop=True)  # the held requests die with the client: never answered
        assert _cache_rows(cache) == 2
        resumed = run_cli(
            lm_eval_command(chat_model, task, tmp_path / "resumed", judge_swap=True), env, server, tmp_path
        )
        answered = server.answered
    assert len(resumed.requests) == total - 2  # only what the killed run had not received
    metrics = resumed.results["results"]["llmkick_instruction_vicuna80"]
    for name, value in EXPECTED_VICUNA_SWAP.items():
        assert metrics[f"{name},judge"] == pytest.approx(value), name
    # Swap mode: every question was judged in both orders, once each, across the two runs.
    for sample in resumed.samples["llmkick_instruction_vicuna80"]:
        record = json.loads(sample["filtered_resps"][0])
        assert [j["label"] for j in record["judgments"]] == ["reference_first", "model_first"]
        prompts = [
            r.prompt for r in answered if r.model == JUDGE_MODEL and sample["doc"]["question"] in r.prompt
        ]
        first = f'<answer assistant="1">\n{record["reference"]}\n</answer>'  # the reference shown first
        second = f'<answer assistant="2">\n{record["reference"]}\n</answer>'
        assert sorted((first in p, second in p) for p in prompts) == [(False, True), (True, False)]


def test_cli_without_a_judge_fails_before_loading_the_model(tmp_path: Path) -> None:
    missing_model = tmp_path / "no_such_model"  # loading it would fail with a different error
    command = [
        str(LM_EVAL), "--model", "hf", "--model_args", f"pretrained={missing_model}",
        "--tasks", "llmkick", "--device", "cpu",
    ]  # fmt: skip
    result = subprocess.run(command, env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no judge is configured" in output and "LLMKICK_JUDGE_API_KEY" in output
    assert "--tasks llmkick_exact_match" in output  # how to run the group's tasks that need no judge
    assert "Initializing hf model" not in output and str(missing_model) not in output


# ---------------------------------------------------------------------------------------------- llmkick judge
LLMKICK = Path(sys.executable).with_name("llmkick")


def plain_metrics(results: dict, task: str) -> dict:
    return {k: v for k, v in results["results"][task].items() if k.endswith(",judge") and "_stderr" not in k}


def other_judge(body: dict) -> str:
    """A second judge with its own opinion: constant verdicts in each task's reply format."""
    assert body["model"] == "judge-y", body["model"]
    prompt = body["messages"][-1]["content"]
    if "<story>" in prompt:
        return "6 2\n6 2\n6 2\n6 2"
    return "Rating: [[3]]" if "Rating: [[" in prompt else "6 2"


def test_rejudge_reproduces_the_run_and_a_second_judge_writes_a_second_result(
    runs, judged_data: Path, tmp_path: Path
) -> None:
    first, _, _ = runs
    with JudgeServer(scripted_reply) as same, JudgeServer(other_judge) as other:
        # Same judge (a fresh server and cache: every verdict is asked again), no model anywhere.
        env = judge_env(same, tmp_path / "cache.sqlite", judged_data)
        done = subprocess.run(
            [str(LLMKICK), "judge", str(first.out_dir), "--label", "same"],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert {r.model for r in same.received} == {
            JUDGE_MODEL
        }  # saved references reused: no reference model
        assert len(same.received) == 6 + 4 + 3 * 2
        env = judge_env(other, tmp_path / "cache.sqlite", judged_data)
        done = subprocess.run(
            [str(LLMKICK), "judge", str(first.out_dir), "--metadata", '{"judge_model": "judge-y"}'],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    by_task: dict[str, dict] = {}
    for path in first.out_dir.rglob("rejudged_*.json"):
        results = json.loads(path.read_text())
        for task in results["results"]:
            by_task.setdefault(results["llmkick_rejudge"]["label"], {})[task] = results
    assert {label: set(tasks) for label, tasks in by_task.items()} == {
        "same": set(TASKS),
        "judge-y-llmkick": set(TASKS),
    }
    for task in TASKS:
        assert plain_metrics(by_task["same"][task], task) == plain_metrics(first.results, task)  # exactly
    second = {task: plain_metrics(by_task["judge-y-llmkick"][task], task) for task in TASKS}
    assert second["llmkick_summarization"]["coherence,judge"] == 2.0
    assert second["llmkick_instruction_vicuna80"]["score,judge"] == 2.0
    assert second["llmkick_mtbench"]["score,judge"] == 3.0
    assert (
        by_task["judge-y-llmkick"]["llmkick_mtbench"]["configs"]["llmkick_mtbench"]["metadata"]["judge"][
            "model"
        ]
        == "judge-y"
    )


def test_rejudge_a_sweep_run_feeds_its_report(runs, judged_data: Path, tmp_path: Path) -> None:
    import shutil

    from llmkick_models.workflow.main_table import markdown_table
    from llmkick_models.workflow.run_results import load_run

    first, _, _ = runs
    run_dir = tmp_path / "sweep"
    point = run_dir / "points" / "dense"
    shutil.copytree(first.out_dir, point / "lm_eval")
    for stale in (point / "lm_eval").rglob("rejudged_*"):
        stale.unlink()
    (point / "results.json").write_text(json.dumps(first.results, default=str))
    (run_dir / "sweep.json").write_text(json.dumps({"points": [{
        "id": "dense", "method": "none", "sparsity": 0.0, "pattern": None, "bits": None}]}))  # fmt: skip
    with JudgeServer(other_judge) as other:
        env = judge_env(other, tmp_path / "cache.sqlite", judged_data)
        done = subprocess.run(
            [str(LLMKICK), "judge", str(run_dir), "--metadata", '{"judge_model": "judge-y"}', "--label", "y"],
            env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    [point_result] = load_run(run_dir / "rejudged" / "y")
    assert point_result.results["results"]["llmkick_mtbench"]["score,judge"] == 3.0
    assert point_result.findings() == []  # every re-judged score comes back from the re-judged samples
    assert "llmkick_mtbench" in markdown_table([point_result])
