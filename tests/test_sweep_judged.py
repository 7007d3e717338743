"""A judged sweep point whose judge fails keeps the model's answers, and its re-run judges them without
generating again (lm-eval's response cache, one per point and fingerprint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from judge_fixtures import (
    EXPECTED_MTBENCH,
    JUDGE_MODEL,
    REFERENCE_MODEL,
    scripted_reply,
)
from judge_server import JudgeServer

MTBENCH = "llmkick_mtbench"
CONVERSATIONS = 3  # in the fixture data
# Every MT-Bench verdict request carries this; a key check of the judge alone would not.
VERDICT_MARK = "Rating: [["


def _sweep(model: Path, run_dir: Path, server: JudgeServer, judge_cache: Path, data: Path):
    drop = ("OPENAI_", "LLMKICK_JUDGE_", "LLMKICK_DATA_DIR", "LLMKICK_REFERENCE_MODEL", "LLMKICK_GENERATIONS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env |= {
        "LLMKICK_JUDGE_BASE_URL": server.url, "LLMKICK_JUDGE_MODEL": JUDGE_MODEL,
        "LLMKICK_JUDGE_API_KEY": "sk-test", "LLMKICK_JUDGE_CACHE": str(judge_cache),
        "LLMKICK_DATA_DIR": str(data),
    }  # fmt: skip
    command = [
        sys.executable, "-m", "llmkick_models.workflow.cli", "sweep", "--model", str(model),
        "--methods", "magnitude", "--patterns", "2:4", "--parallel", "2",
        "--tasks", MTBENCH, "--output", str(run_dir), "--no_report", "--device", "cpu", "--batch_size", "8",
        "--apply_chat_template", "--gen_kwargs", "max_gen_toks=4",
        "--metadata", json.dumps({"reference_model": REFERENCE_MODEL}),
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


POINTS = ("dense", "magnitude-2of4")


def _results(point_dir: Path) -> dict:
    return json.loads((point_dir / "results.json").read_text())


def _scores(run_dir: Path) -> dict[str, dict[str, float]]:
    return {point: _results(run_dir / "points" / point)["results"][MTBENCH] for point in POINTS}


@pytest.mark.e2e
def test_failed_judge_keeps_the_answers_and_the_rerun_does_not_generate_again(
    chat_model: Path, judged_data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    kept: dict[str, list[dict]] = {}
    with JudgeServer(scripted_reply) as server:
        server.fail_matching(VERDICT_MARK, 401)  # the judge rejects the key
        failed = _sweep(chat_model, run_dir, server, tmp_path / "judge.sqlite", judged_data)
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert "2 of 2 points failed" in failed.stderr
        for point_id in POINTS:
            point = run_dir / "points" / point_id
            generations = point / "generations"
            assert (
                f"{point_id}: FAILED (exit 1); the generated answers are kept in {generations} "
                f"(llmkick_mtbench.jsonl): re-running the sweep resumes from lm-eval's response cache "
                f"without generating them again"
            ) in failed.stdout
            rows = [json.loads(line) for line in (generations / f"{MTBENCH}.jsonl").open()]
            assert [row["doc_id"] for row in rows] == list(range(CONVERSATIONS))
            for row in rows:  # both turns of every conversation, and the prompt the model saw
                assert row["prompt"].startswith("<|user|>") and len(row["answers"][0]["turns"]) == 2
            kept[point_id] = rows
            # lm-eval's CachingLM logs, per call, how many requests the cache answered: the first turn, then
            # the second (MT-Bench's second turn goes through it too).
            log = (point / "lm_eval.log").read_text()
            assert "HTTP 401" in log  # the judge's refusal stopped the point
            assert log.count(f"Cached requests: 0, Requests remaining: {CONVERSATIONS}") == 2, log[-3000:]
            assert not (point / "results.json").exists()

        server.fail_matching(VERDICT_MARK, None)
        resumed = _sweep(chat_model, run_dir, server, tmp_path / "judge.sqlite", judged_data)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        for point_id in POINTS:
            point = run_dir / "points" / point_id
            log = (point / "lm_eval.log").read_text()
            # Both turns answered from the cache: the model's generate_until never ran.
            assert log.count(f"Cached requests: {CONVERSATIONS}, Requests remaining: 0") == 2, log[-3000:]
            assert f"Requests remaining: {CONVERSATIONS}" not in log
            samples = [json.loads(line) for line in next(point.rglob(f"samples_{MTBENCH}_*.jsonl")).open()]
            judged = {s["doc_id"]: json.loads(s["resps"][0][0])["turns"] for s in samples}
            assert judged == {row["doc_id"]: row["answers"][0]["turns"] for row in kept[point_id]}
            assert not (point / "responses").exists()  # a finished point needs no cache
            # Provenance: the threads of a --parallel 2 worker; the dtype lm-eval loaded (none was asked for).
            workers_threads = max(1, len(os.sched_getaffinity(0)) // 2)
            assert json.loads((point / "fingerprint.json").read_text())["provenance"] == {
                "threads": workers_threads
            }
            assert _results(point)["config"]["model_dtype"] == "torch.float32"
    # The scores of a clean run: the scripted judge's, worked out by hand (test_judge_cli checks a clean run
    # against the same numbers).
    for point_id, scores in _scores(run_dir).items():
        got = {name: scores[f"{name},judge"] for name in EXPECTED_MTBENCH}
        assert got == pytest.approx(EXPECTED_MTBENCH), point_id
