"""``llmkick judge`` in-process on hand-written saved runs (no model): labels, refusals, a misbehaving judge.

A saved run is what a judged lm-eval run with ``--log_samples`` leaves: ``samples_<task>_<date>.jsonl`` (each
document, the model's answer and the judged record holding the reference) and ``results_<date>.json`` with
the task metadata.  The local judge server answers; every refusal must leave nothing written.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from judge_fixtures import (
    EXPECTED_VICUNA,
    JUDGE_MODEL,
    QUESTIONS,
    REFERENCE_MODEL,
    no_ambient_judge,  # noqa: F401 - autouse fixture, shared
    reference_text,
    scripted_reply,
    write_judged_data,
)
from judge_server import JudgeServer
from lm_eval.tasks import TaskManager

import llmkick_tasks
from llmkick_models.workflow.cli import main

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
