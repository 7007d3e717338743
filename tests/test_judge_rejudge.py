"""``llmkick judge`` in-process on hand-written saved runs (no model): labels, refusals, a misbehaving judge.

A saved run is what a judged lm-eval run with ``--log_samples`` leaves: ``samples_<task>_<date>.jsonl`` (each
document, the model's answer and the judged record holding the reference) and ``results_<date>.json`` with
the task metadata.  The local judge server answers; every refusal must leave nothing written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from judge_fixtures import (
    EXPECTED_VICUNA,
    JUDGE_MODEL,
    QUESTIONS,
    REFERENCE_MODEL,
    chat_model_dir,
    no_ambient_judge,  # noqa: F401 - autouse fixture, shared
    reference_text,
    scripted_reply,
    write_judged_data,
)
from judge_server import JudgeServer
from lm_eval.tasks import TaskManager
from report_fixtures import edit_score, write_sweep

import llmkick_tasks
from llmkick_models.workflow.cli import main
from llmkick_models.workflow.run_results import load_run
from llmkick_models.workflow.sweep_plan import SweepPoint
from llmkick_models.workflow.sweep_report import write_report
from llmkick_tasks.errors import UserFileNotFoundError

VICUNA = "llmkick_instruction_vicuna80"
MTBENCH = "llmkick_mtbench"
KINDS = {VICUNA: "instruction", MTBENCH: "mtbench"}
DATE = "2026-01-02T03-04-05.000006"
TASKS_DIR = Path(llmkick_tasks.__file__).parent


@pytest.fixture(scope="module")
def judged_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture benchmarks plus LLM-KICK's release judge files (for the paper protocol)."""
    data = write_judged_data(tmp_path_factory.mktemp("judged_data"))
    release = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmkick_judge"
    if not release.is_dir():
        pytest.skip(f"LLM-KICK's release judge files not found at {release}")
    shutil.copytree(release, data / "llmkick_judge")
    return data


@pytest.fixture(scope="module")
def docs(judged_data: Path) -> dict[str, list[dict]]:
    manager = TaskManager(
        include_path=str(TASKS_DIR),
        include_defaults=False,
        metadata={
            "judge_base_url": "http://127.0.0.1:9/v1",
            "judge_model": "m",
            "data_dir": str(judged_data),
        },
    )
    loaded = manager.load(list(KINDS))["tasks"]
    return {task: list(loaded[task].test_docs()) for task in KINDS}


def answer(task: str) -> str:
    """The evaluated model's answer as lm-eval logged it (MT-Bench: both turns as one JSON record)."""
    return json.dumps({"turns": ["First turn.", "Second turn."]}) if task == MTBENCH else "An answer."


def judged_record(task: str, doc: dict) -> str:
    """The judged record of the original run: the answer and the reference its judge compared against."""
    record = {"response": answer(task), "judgments": []}
    if task == VICUNA:
        marker = next(m for m in QUESTIONS if m in doc["question"])
        record["reference"] = doc.get("reference") or reference_text(marker)
    return json.dumps(record)


def save_run(folder: Path, data_dir: Path, docs: dict[str, list[dict]], **task_metadata: dict) -> Path:
    """A saved run of the tasks named in ``task_metadata`` (value: extra metadata of the original run)."""
    folder.mkdir(parents=True)
    configs = {}
    for task, extra in task_metadata.items():
        rows = [
            {"doc_id": i, "doc": doc, "resps": [[answer(task)]], "filtered_resps": [judged_record(task, doc)],
             "filter": "judge"}
            for i, doc in enumerate(docs[task])
        ]  # fmt: skip
        (folder / f"samples_{task}_{DATE}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        configs[task] = {
            "metadata": {"llmkick_judged": KINDS[task], "data_dir": str(data_dir),
                         "reference_model": REFERENCE_MODEL, **extra},
        }  # fmt: skip
    results = {"configs": configs, "versions": dict.fromkeys(configs, 1.0), "config": {"model": "hf"}}
    (folder / f"results_{DATE}.json").write_text(json.dumps(results))
    return folder


def rejudged(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("rejudged*") if p.is_file())


def use_judge(monkeypatch: pytest.MonkeyPatch, server: JudgeServer, cache: Path, model: str = JUDGE_MODEL):
    """The judge through the environment only (as a user of `llmkick judge` would set it)."""
    monkeypatch.setenv("LLMKICK_JUDGE_BASE_URL", server.url)
    monkeypatch.setenv("LLMKICK_JUDGE_MODEL", model)
    monkeypatch.setenv("LLMKICK_JUDGE_CACHE", str(cache))


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``llmkick`` expecting a user error: exit 2, no traceback; the error's one line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert "Traceback" not in err
    *before, line = err.rstrip("\n").split("\n")
    before = "\n".join(before).replace("\r", "\n").splitlines()  # tqdm's progress lines
    assert all("Judging with" in text or not text.strip() for text in before) or "usage:" in err, err
    return line.split("\r")[-1]


# ---------------------------------------------------------------------------------------------- labels
def test_default_label_is_the_judge_and_protocol_actually_used(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --metadata: the original run's protocol (paper for Vicuna) and the environment's judge model."""
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {"judge_protocol": "paper"}, MTBENCH: {}})
    with JudgeServer("8 7") as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite", model="judge-env")
        assert main(["judge", str(run)]) == 0
    label = "judge-env-paper+llmkick"  # the two tasks were judged under different protocols
    assert [p.name for p in rejudged(run)] == [
        f"rejudged_{VICUNA}_{label}_{DATE}.json",
        f"rejudged_{MTBENCH}_{label}_{DATE}.json",
        f"rejudged_samples_{VICUNA}_{label}_{DATE}.jsonl",
        f"rejudged_samples_{MTBENCH}_{label}_{DATE}.jsonl",
    ]
    vicuna = json.loads((run / f"rejudged_{VICUNA}_{label}_{DATE}.json").read_text())
    judge = vicuna["configs"][VICUNA]["metadata"]["judge"]
    assert (judge["model"], judge["protocol"], vicuna["llmkick_rejudge"]["label"]) == (
        "judge-env",
        "paper",
        label,
    )
    # One task alone: plain model-protocol.
    only = save_run(tmp_path / "only", judged_data, docs, **{VICUNA: {"judge_protocol": "paper"}})
    with JudgeServer("8 7") as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite", model="judge-env")
        assert main(["judge", str(only)]) == 0
    assert rejudged(only)[0].name == f"rejudged_{VICUNA}_judge-env-paper_{DATE}.json"


def test_an_existing_label_is_refused_unless_overwrite(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}})
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        assert main(["judge", str(run), "--label", "same"]) == 0
        first = {p: p.read_text() for p in rejudged(run)}
        server.reset()
        err = refused(["judge", str(run), "--label", "same"], capsys)
        assert err == (
            f"llmkick judge: error: results labelled 'same' exist already: "
            f"{run / f'rejudged_{VICUNA}_same_{DATE}.json'} and 1 more; choose another --label, or pass "
            f"--overwrite to replace them"
        )
        assert server.received == []  # refused before judging
        assert {p: p.read_text() for p in rejudged(run)} == first
        assert main(["judge", str(run), "--label", "same", "--overwrite"]) == 0
    after = rejudged(run)
    assert after == list(first)  # the same two files, replaced
    result = json.loads(after[0].read_text())
    assert result["llmkick_rejudge"]["date"] != json.loads(first[after[0]])["llmkick_rejudge"]["date"]
    assert result["results"][VICUNA]["score,judge"] == pytest.approx(EXPECTED_VICUNA["score"])


def test_an_existing_sweep_label_is_refused_naming_its_folder(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    sweep = tmp_path / "sweep"
    point = sweep / "points" / "dense"
    save_run(point / "lm_eval", judged_data, docs, **{VICUNA: {}})
    (point / "results.json").write_text(json.dumps({"results": {}}))
    (sweep / "sweep.json").write_text(json.dumps({"points": [{"id": "dense"}]}))
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        assert main(["judge", str(sweep), "--label", "y"]) == 0
        gathered = (sweep / "rejudged" / "y" / "points" / "dense" / "results.json").read_text()
        err = refused(["judge", str(sweep), "--label", "y"], capsys)
        assert f"results labelled 'y' exist already: {sweep / 'rejudged' / 'y'} and 2 more;" in err
        assert "--overwrite" in err
        assert main(["judge", str(sweep), "--label", "y", "--overwrite"]) == 0
    assert (sweep / "rejudged" / "y" / "points" / "dense" / "results.json").read_text() == gathered


# ---------------------------------------------------------------------------------------------- refusals
def test_a_protocol_that_fits_no_task_is_refused_before_anything_is_written(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`paper` fits Vicuna (judged first) but not MT-Bench: nothing is judged, nothing written."""
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}, MTBENCH: {}})
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        err = refused(["judge", str(run), "--metadata", '{"judge_protocol": "paper"}'], capsys)
        assert server.received == []
    assert err.startswith("llmkick judge: error: llmkick_mtbench: judge_protocol='paper' does not apply")
    assert rejudged(run) == []


def test_a_failing_judge_leaves_nothing_written(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Vicuna is judged, then every MT-Bench verdict fails: no result of either task is written."""
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}, MTBENCH: {}})
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        server.fail_matching("Rating: [[", 400)  # every MT-Bench judge prompt
        err = refused(["judge", str(run)], capsys)
        assert {r.status for r in server.received} == {200, 400}
    assert err.startswith(f"llmkick judge: error: {MTBENCH} ({run / f'samples_{MTBENCH}_{DATE}.jsonl'}): ")
    assert f"judge '{JUDGE_MODEL}' at {server.url}: request failed: HTTP 400" in err
    assert err.endswith("; no result was written")
    assert rejudged(run) == []


def test_the_reply_format_given_to_rejudging_reaches_every_request(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--metadata '{"judge_reply_format": "regex"}'``: every verdict is constrained, and recorded."""
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}, MTBENCH: {}})
    metadata = json.dumps({"judge_reply_format": "regex"})
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        assert main(["judge", str(run), "--metadata", metadata, "--label", "constrained"]) == 0
        bodies = [received.body for received in server.received]
    assert bodies and all("regex" in body["structured_outputs"] for body in bodies)
    for task in (VICUNA, MTBENCH):
        results = json.loads((run / f"rejudged_{task}_constrained_{DATE}.json").read_text())
        assert results["configs"][task]["metadata"]["judge"]["reply_format"] == "regex"


def cache_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT response FROM responses")]


def test_a_judge_sending_empty_choices_fails_clearly_and_caches_nothing(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}})
    cache = tmp_path / "cache.sqlite"
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, cache)
        server.misbehave("empty_choices")  # every reply
        err = refused(["judge", str(run), "--metadata", '{"judge_retries": 1}'], capsys)
        assert len(server.received) == 2 * len(QUESTIONS)  # each verdict asked twice, never answered
    assert "4 of 4 documents failed" in err
    assert (
        f"judge '{JUDGE_MODEL}' at {server.url} sent no usable reply: HTTP 200 with a completion with no "
        in err
    )
    assert rejudged(run) == [] and cache_rows(cache) == []


def test_empty_choices_then_good_replies_score_the_good_replies(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}})
    cache = tmp_path / "cache.sqlite"
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, cache)
        server.misbehave("empty_choices", 3)
        assert main(["judge", str(run), "--label", "x", "--metadata", '{"judge_retries": 3}']) == 0
    metrics = json.loads(rejudged(run)[0].read_text())["results"][VICUNA]
    for name, value in EXPECTED_VICUNA.items():
        assert metrics[f"{name},judge"] == pytest.approx(value), name
    assert len(cache_rows(cache)) == len(QUESTIONS) and all(text.strip() for text in cache_rows(cache))


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metadata", "nope"], "argument --metadata: not JSON (Expecting value, character 0): 'nope'"),
        (["--metadata", "[1]"], """argument --metadata: expected a JSON object such as '{"judge_model": """),
        (["--label", "../up"], "llmkick judge: error: --label must be letters, digits, '.', '_', '+' or '-'"),
        (
            ["--tasks", "llmkick_nosuch"],
            "--tasks llmkick_nosuch: no samples_llmkick_nosuch_<date>.jsonl under",
        ),
        (["--metadata", '{"judge_max_tokens": "lots"}'], "metadata 'judge_max_tokens' must be a int, got"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, args, message
) -> None:
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}})
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        err = refused(["judge", str(run), *args], capsys)
        assert server.received == []
    assert message in err
    if "llmkick_nosuch" in args:
        assert err.endswith(f"(samples found: {VICUNA})")
    assert rejudged(run) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("results", "is not an lm-eval results file"),
        ("doc", "line 1 is not an lm-eval sample (needs a doc object and resps)"),
    ],
)
def test_damaged_saved_runs_are_one_line_errors(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, damage, message
) -> None:
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}})
    if damage == "results":
        (run / f"results_{DATE}.json").write_text("{not json")
    else:
        samples = run / f"samples_{VICUNA}_{DATE}.jsonl"
        samples.write_text(json.dumps({"doc": "a string", "resps": [["x"]]}) + "\n")
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        err = refused(["judge", str(run)], capsys)
    assert message in err


# -------------------------------------------------------------------------------------- answers kept whole
def test_a_unicode_line_separator_in_an_answer_survives_rejudging(
    judged_data: Path, docs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-eval writes samples with ensure_ascii=False: U+2028 / U+2029 in an answer are no line breaks."""
    run = save_run(tmp_path / "run", judged_data, docs, **{VICUNA: {}})
    samples = run / f"samples_{VICUNA}_{DATE}.jsonl"
    odd = "First line\u2028second\u2029third."
    rows = [json.loads(line) for line in samples.read_text().split("\n") if line]
    for row in rows:
        row["resps"] = [[odd]]
        row["filtered_resps"] = [json.dumps({**json.loads(row["filtered_resps"][0]), "response": odd})]
    samples.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    assert "\u2028" in samples.read_text(encoding="utf-8")  # raw in the file, as lm-eval leaves it
    with JudgeServer(scripted_reply) as server:
        use_judge(monkeypatch, server, tmp_path / "cache.sqlite")
        assert main(["judge", str(run), "--label", "x"]) == 0
        assert len(server.received) == len(QUESTIONS) and all(odd in r.prompt for r in server.received)
    written = run / f"rejudged_samples_{VICUNA}_x_{DATE}.jsonl"
    lines = written.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(QUESTIONS) + 1  # one line per document
    assert [json.loads(json.loads(line)["filtered_resps"][0])["response"] for line in lines[:-1]] == [
        odd
    ] * len(QUESTIONS)


# ------------------------------------------------------------------------------------------ a judged sweep
SWEEP_QUESTIONS = 12  # enough documents for a paired bootstrap interval
SWEEP_POINTS = [SweepPoint(), SweepPoint("magnitude", 0.5)]
CHOICE = "local_fixture_choice"  # a task that is not re-judged: checked against the original samples
EDITED = "EDITED answer of the pruned model."


def sweep_question(number: int) -> str:
    return f"Question {number}: what is special about topic {number}?"


@pytest.fixture(scope="module")
def generated(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A real judged lm-eval run (tiny chat model, local judge): Vicuna-80 on 12 questions and a task that
    is not judged.  Returns (lm-eval's output folder, data dir)."""
    root = tmp_path_factory.mktemp("generated")
    vicuna = root / "data" / "vicuna80"
    vicuna.mkdir(parents=True)
    numbers = range(1, SWEEP_QUESTIONS + 1)
    questions = [{"question_id": n, "text": sweep_question(n), "category": "generic"} for n in numbers]
    (vicuna / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (vicuna / "reference_answer_gpt35.jsonl").write_text(
        "".join(json.dumps({"question_id": n, "text": f"Reference {n}."}) + "\n" for n in numbers)
    )
    model = chat_model_dir(tiny_llama_dir, root / "tiny")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMKICK_"))}
    with JudgeServer("5 5") as server:  # the original judge: 5 for every answer
        env |= {
            "LLMKICK_JUDGE_BASE_URL": server.url,
            "LLMKICK_JUDGE_MODEL": JUDGE_MODEL,
            "LLMKICK_JUDGE_CACHE": str(root / "cache.sqlite"),
            "LLMKICK_DATA_DIR": str(root / "data"),
        }
        command = [
            str(Path(sys.executable).with_name("lm_eval")), "--model", "hf", "--model_args",
            f"pretrained={model}", "--device", "cpu", "--batch_size", "8",
            "--include_path", str(local_task_dir),
            "--tasks", f"{VICUNA},{CHOICE}", "--apply_chat_template", "--gen_kwargs", "max_gen_toks=4",
            "--output_path", str(root / "out"), "--log_samples",
        ]  # fmt: skip
        done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    [output] = (root / "out").iterdir()
    return output, root / "data"


def build_sweep(generated: tuple[Path, Path], run_dir: Path) -> Path:
    """A sweep of that run: dense, and a pruned point whose answers differ (every answer replaced)."""
    output, _ = generated
    write_sweep(run_dir, SWEEP_POINTS, f"{VICUNA},{CHOICE}")
    for point in SWEEP_POINTS:
        raw = run_dir / "points" / point.point_id / "lm_eval" / output.name
        shutil.copytree(output, raw)
        [results] = raw.glob("results_*.json")
        shutil.copy(results, raw.parents[1] / "results.json")  # as the sweep keeps it
    [samples] = (run_dir / "points" / SWEEP_POINTS[1].point_id).rglob(f"samples_{VICUNA}_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text(encoding="utf-8").split("\n") if line]
    for row in rows:
        row["resps"] = [[EDITED]]
        row["filtered_resps"] = [json.dumps({**json.loads(row["filtered_resps"][0]), "response": EDITED})]
    samples.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return run_dir


NEW_DENSE_SCORE = sum(4 + n % 6 for n in range(1, SWEEP_QUESTIONS + 1)) / SWEEP_QUESTIONS  # 6.5


def new_judge(body: dict) -> str:
    """The second judge: the reference 8, dense's answers 4..9 by question, the pruned point's 3."""
    assert body["model"] == "judge-y", body["model"]
    prompt = body["messages"][-1]["content"]
    if EDITED in prompt:
        return "8 3"
    number = int(re.search(r"Question (\d+):", prompt)[1])
    return f"8 {4 + number % 6}"


def rejudge_sweep(run: Path, cwd: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:
    """`llmkick judge RUN` with the second judge, RUN given relative to ``cwd``; the re-judged copy."""
    monkeypatch.chdir(cwd)
    with JudgeServer(new_judge) as server:
        use_judge(monkeypatch, server, cache, model="judge-y")
        monkeypatch.setenv("LLMKICK_DATA_DIR", str(data_dir))
        assert main(["judge", os.path.relpath(run, cwd), "--label", "y"]) == 0
        assert len(server.received) == len(SWEEP_POINTS) * SWEEP_QUESTIONS  # dense re-judged too
    return run / "rejudged" / "y"


def logged_values(run: Path, point: SweepPoint, metric: str) -> list[float]:
    """``metric`` of each document, as the re-judged samples file of ``point`` holds it."""
    [samples] = (run / "points" / point.point_id).rglob(f"rejudged_samples_{VICUNA}_y_*.jsonl")
    lines = [json.loads(line) for line in samples.read_text(encoding="utf-8").split("\n") if line]
    return [line[metric] for line in lines if metric in line]


def test_a_rejudged_sweep_gets_paired_verdicts_from_the_rejudged_samples(
    generated: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = build_sweep(generated, tmp_path / "sweep")
    copy = rejudge_sweep(run, tmp_path, generated[1], monkeypatch, tmp_path / "cache.sqlite")
    original = json.loads((run / "points" / "dense" / "results.json").read_text())["results"][VICUNA]
    assert (original["score,judge"], original["win_rate,judge"]) == (5.0, 0.5)  # the original judge's
    write_report(copy)
    report = json.loads((copy / "report.json").read_text())
    assert report["problems"] == []
    compared = report["points"][1]["comparisons"][VICUNA]
    dense, pruned = SWEEP_POINTS
    for metric in ("score", "win_rate"):
        assert compared[metric]["n"] == SWEEP_QUESTIONS
        dense_values, pruned_values = logged_values(run, dense, metric), logged_values(run, pruned, metric)
        assert len(dense_values) == len(pruned_values) == SWEEP_QUESTIONS
        # Paired with the re-judged dense, from the re-judged samples, which give the reported scores.
        assert compared[metric]["dense"] == sum(dense_values) / SWEEP_QUESTIONS
        assert compared[metric]["point"] == sum(pruned_values) / SWEEP_QUESTIONS
        for point, values in zip(SWEEP_POINTS, (dense_values, pruned_values), strict=True):
            scores = report["points"][SWEEP_POINTS.index(point)]["scores"][VICUNA]
            assert scores[metric] == sum(values) / len(values)
    assert (compared["score"]["dense"], compared["score"]["point"]) == (NEW_DENSE_SCORE, 3.0)
    assert compared["score"]["verdict"] == "not matching"  # -54%, and a 95% interval to show it
    assert compared["win_rate"]["verdict"] == "not matching"  # dense: 2 wins, 2 ties; pruned: 12 losses
    assert report["points"][1]["comparisons"][CHOICE]["acc"]["verdict"] != "no verdict"


def test_a_moved_rejudged_sweep_reported_from_another_directory_finds_its_samples(
    generated: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths are recorded relative to the results file holding them: the cwd of `llmkick judge` and of
    `llmkick report` do not matter, and the run directory can be moved."""
    run = build_sweep(generated, tmp_path / "here" / "sweep")
    rejudge_sweep(run, tmp_path / "here", generated[1], monkeypatch, tmp_path / "cache.sqlite")
    moved = tmp_path / "there" / "sweep"
    moved.parent.mkdir()
    run.rename(moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    copy = moved / "rejudged" / "y"
    points = load_run(copy)
    for point in points:
        home = moved / "points" / point.point["id"]
        original = point.check.samples.path(CHOICE)  # lm-eval's, found from the re-judged task's source
        assert original is not None and original.is_file() and home in original.parents
        rejudged = point.check.samples.path(VICUNA)
        assert rejudged is not None and rejudged.is_file() and home in rejudged.parents
        assert rejudged.name.startswith(f"rejudged_samples_{VICUNA}_y_")
        assert point.findings() == []
    # A re-judged score is checked like any other: edited, it disagrees with the re-judged samples.
    edited = edit_score(copy / "points" / "dense", VICUNA, "score,judge", 6.0)
    [finding] = load_run(copy)[0].findings()
    assert finding.message == (
        f"results disagree with samples: {edited} reports {VICUNA} score,judge = 6.0, recomputed from "
        f"{load_run(copy)[0].check.samples.path(VICUNA)}: {NEW_DENSE_SCORE!r}"
    )


def test_a_rejudged_copy_moved_away_from_its_sweep_is_refused_before_anything_is_drawn(
    generated: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its samples stay in the sweep's points: reported alone, every score would be 'samples missing' and
    every figure empty (what the report drew before)."""
    run = build_sweep(generated, tmp_path / "sweep")
    alone = tmp_path / "alone"
    shutil.copytree(rejudge_sweep(run, tmp_path, generated[1], monkeypatch, tmp_path / "cache.sqlite"), alone)
    before = sorted(path.name for path in alone.iterdir())
    with pytest.raises(
        UserFileNotFoundError, match=rf"{alone} is a re-judged copy of a sweep \(llmkick judge\)"
    ):
        write_report(alone)
    assert sorted(path.name for path in alone.iterdir()) == before
