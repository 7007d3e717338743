"""Every llmkick task through the ``lm_eval`` CLI on a tiny model: the exact-match tasks on fixture data
and real data, mixed with another task in one run; the whole ``llmkick`` group (judged tasks included, with
the local judge server) WITHOUT ``--apply_chat_template``, where the exact-match prompts must stay raw; and
the same per-sample results at batch size 1 and 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from judge_fixtures import JUDGE_MODEL, REFERENCE_MODEL, chat_model_dir, scripted_reply, write_judged_data
from judge_server import JudgeServer
from task_fixtures import FREEBASEQA_EVAL, FREEBASEQA_TRAIN, TRIVIAQA_DEV, evaluate, write_data_dir

from llmkick_tasks.mmlu.utils import CATEGORIES, SUBJECTS

LM_EVAL = Path(sys.executable).with_name("lm_eval")
LEAF_TASKS = [
    "llmkick_freebaseqa",
    "llmkick_freebaseqa_paper",
    "llmkick_triviaqa_closed",
    "llmkick_triviaqa_open",
    *(f"llmkick_mmlu_{subject}" for subject in SUBJECTS),
    *(f"llmkick_mmlu_ll_{subject}" for subject in SUBJECTS),
]
GROUPS = [
    "llmkick_mmlu",
    "llmkick_mmlu_ll",
    *(f"llmkick_mmlu_{category}" for category in CATEGORIES),
    *(f"llmkick_mmlu_ll_{category}" for category in CATEGORIES),
]
TAGS = ["llmkick_triviaqa", "llmkick_closed_book", "llmkick_judged"]
JUDGED_TASKS = ["llmkick_summarization", "llmkick_instruction_vicuna80", "llmkick_mtbench"]
METRICS = {
    "llmkick_freebaseqa": {"contains", "exact_match"},
    "llmkick_freebaseqa_paper": {"contains", "exact_match"},
    "llmkick_triviaqa_closed": {"exact_match", "f1", "lenient_match"},
    "llmkick_triviaqa_open": {"exact_match", "f1", "lenient_match"},
    "llmkick_mmlu": {"acc", "letter_rate"},
    "llmkick_mmlu_ll": {"acc"},
}


def _run_lm_eval(
    args: list[str], tmp_path: Path, timeout: int = 300, **extra_env: str
) -> subprocess.CompletedProcess:
    # No ambient judge or data dir: only what the test sets.
    drop = ("OPENAI_", "LLMKICK_JUDGE_", "LLMKICK_DATA_DIR", "LLMKICK_REFERENCE_MODEL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra_env}
    result = subprocess.run(
        [str(LM_EVAL), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"lm_eval {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result


def _evaluate_cli(
    model_dir: Path, tasks: list[str], metadata: dict, tmp_path: Path, *extra: str, **env: str
) -> dict:
    out = tmp_path / "out"
    _run_lm_eval(
        [
            "--model", "hf",
            "--model_args", f"pretrained={model_dir}",
            "--device", "cpu",
            "--batch_size", "8",
            "--tasks", ",".join(tasks),
            "--metadata", json.dumps(metadata),
            "--output_path", str(out),
            *extra,
        ],
        tmp_path,
        **env,
    )  # fmt: skip
    [results_file] = out.rglob("results_*.json")
    return json.loads(results_file.read_text())


def _contexts(out: Path, task: str) -> dict[int, list[str]]:
    """The prompt(s) of every logged sample of ``task`` (one per request), by doc id."""
    prefix = f"samples_{task}_"  # then the timestamp: llmkick_freebaseqa_paper is another task
    [samples_file] = [p for p in out.rglob(f"{prefix}*.jsonl") if p.name[len(prefix)].isdigit()]
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    # lm-eval logs a sample's requests as {"gen_args_0": {"arg_0": context, "arg_1": ...}, ...}
    return {sample["doc_id"]: [a["arg_0"] for a in sample["arguments"].values()] for sample in samples}


def _check_every_task_ran(results: dict, limit: int, top_group: str) -> None:
    scores = results["results"]
    for task in LEAF_TASKS:
        assert task in scores, f"{task} missing from the results"
        assert results["n-samples"][task]["effective"] == limit
    for group in [top_group, *GROUPS]:
        assert group in scores, f"group {group} missing from the results"
    for task, metrics in METRICS.items():
        for metric in metrics:
            assert 0.0 <= scores[task][f"{metric},none"] <= 1.0, (task, metric)
    assert scores["llmkick_mmlu"]["sample_count"]["acc,none"] == limit * len(SUBJECTS)


def test_lm_eval_ls_tasks_lists_every_llmkick_task(tmp_path: Path) -> None:
    listing = _run_lm_eval(["ls", "tasks"], tmp_path).stdout
    names = {line.split("|")[1].strip() for line in listing.splitlines() if line.startswith("|")}
    groups = [*GROUPS, "llmkick", "llmkick_exact_match", "llmkick_paper"]
    missing = {*LEAF_TASKS, *JUDGED_TASKS, *groups, *TAGS} - names
    assert not missing, f"not listed by `lm_eval ls tasks`: {sorted(missing)}"


@pytest.fixture(scope="module")
def exact_match_run(
    tiny_llama_dir: Path, task_data_dir: Path, local_task_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path]:
    """``llmkick_exact_match`` (no judge needed), the paper variant and a non-llmkick task, in one run."""
    root = tmp_path_factory.mktemp("exact_match_run")
    results = _evaluate_cli(
        tiny_llama_dir,
        ["llmkick_exact_match", "llmkick_freebaseqa_paper", "local_fixture_choice"],
        {"data_dir": str(task_data_dir)},
        root,
        "--limit", "1",
        "--include_path", str(local_task_dir),
        "--log_samples",
    )  # fmt: skip
    return results, root / "out"


def test_cli_every_task_on_fixture_data_mixed_with_another_task(
    exact_match_run: tuple[dict, Path], task_data_dir: Path
) -> None:
    results, _ = exact_match_run
    _check_every_task_ran(results, limit=1, top_group="llmkick_exact_match")
    assert "acc,none" in results["results"]["local_fixture_choice"]  # a non-llmkick task in the same run
    originals = {task: results["n-samples"][task]["original"] for task in LEAF_TASKS}
    assert originals["llmkick_freebaseqa"] == len(FREEBASEQA_EVAL)
    assert originals["llmkick_freebaseqa_paper"] == len(FREEBASEQA_TRAIN)
    assert originals["llmkick_triviaqa_open"] == len(TRIVIAQA_DEV)
    # the metadata reaches the tasks and is recorded with the results (the evidence knob, the data dir)
    config = results["configs"]["llmkick_triviaqa_open"]["metadata"]
    assert config["evidence_tokens"] == 768 and config["data_dir"] == str(task_data_dir)


def test_cli_llmkick_with_judge_keeps_exact_match_prompts_raw(
    tiny_llama_dir: Path, exact_match_run: tuple[dict, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`--tasks llmkick` without --apply_chat_template, on a model whose tokenizer HAS a chat template.

    The judged tasks format their own chat prompts; the exact-match prompts are byte for byte those of
    the exact-match-only run, never chat-wrapped.
    """
    root = tmp_path_factory.mktemp("llmkick_judged_run")
    model = chat_model_dir(tiny_llama_dir, root / "chat_model")  # template: <|role|>content\n
    data_dir = write_judged_data(write_data_dir(root / "data"))
    metadata = {"data_dir": str(data_dir), "reference_model": REFERENCE_MODEL, "judge_backoff": 0.01}
    with JudgeServer(scripted_reply) as server:
        results = _evaluate_cli(
            model, ["llmkick", "llmkick_freebaseqa_paper"], metadata, root,
            "--limit", "1", "--gen_kwargs", "max_gen_toks=4", "--log_samples",
            LLMKICK_JUDGE_BASE_URL=server.url, LLMKICK_JUDGE_MODEL=JUDGE_MODEL,
            LLMKICK_JUDGE_CACHE=str(root / "judge_cache.sqlite"),
        )  # fmt: skip
        assert all(r.status == 200 for r in server.received) and server.received
    _check_every_task_ran(results, limit=1, top_group="llmkick")
    scores = results["results"]
    assert "llmkick_exact_match" in scores
    # Every score (MMLU groups, judge means and counters included) comes back from the logged samples.
    from llmkick_models.workflow.sample_checks import PointCheck

    assert PointCheck(root / "out", results).findings == []
    # The scripted judge's verdicts for the first document of each judged task (judge_fixtures).
    assert scores["llmkick_summarization"]["coherence,judge"] == 8.0
    assert scores["llmkick_instruction_vicuna80"]["score,judge"] == 9.0
    assert scores["llmkick_mtbench"]["score,judge"] == 7.0

    out, (_, baseline) = root / "out", exact_match_run
    for task in ["llmkick_freebaseqa_paper", *LEAF_TASKS]:
        contexts = _contexts(out, task)
        assert contexts == _contexts(baseline, task), f"{task}: prompts differ from the exact-match run"
        assert not any("<|user|>" in c for cs in contexts.values() for c in cs), f"{task} is chat-wrapped"
    [freebaseqa] = _contexts(out, "llmkick_freebaseqa").values()
    assert freebaseqa == [f"Please give answer to this question: {FREEBASEQA_EVAL[0][1]}\nThe answer is"]

    # The judged prompts are chat-formatted by the tokenizer's template, turn 2 after the model's answer.
    [summarization] = _contexts(out, "llmkick_summarization").values()
    assert summarization[0].startswith("<|user|>Summarize the given story")
    assert summarization[0].endswith("\n<|assistant|>")
    [mtbench] = out.rglob("samples_llmkick_mtbench_*.jsonl")
    [sample] = [json.loads(line) for line in mtbench.read_text().splitlines()]
    conversation = json.loads(sample["filtered_resps"][0])
    doc = sample["doc"]
    assert sample["arguments"]["gen_args_0"]["arg_0"] == f"<|user|>{doc['turn_1']}\n<|assistant|>"
    assert conversation["response"]["turn_2_context"] == (
        f"<|user|>{doc['turn_1']}\n<|assistant|>{conversation['response']['turns'][0]}\n"
        f"<|user|>{doc['turn_2']}\n<|assistant|>"
    )
    for task in JUDGED_TASKS:
        assert "chat template" in results["configs"][task]["metadata"]["prompt_format"]


def test_cli_every_task_on_the_real_data(tiny_llama_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    metadata = {"data_dir": str(shared_data), "freebaseqa_split": "dev"}  # the shared data has FreebaseQA dev
    # llmkick_paper + the two tasks it lacks: every task, and the other top-level group
    tasks = ["llmkick_paper", "llmkick_freebaseqa", "llmkick_mmlu_ll"]
    results = _evaluate_cli(tiny_llama_dir, tasks, metadata, tmp_path, "--limit", "2")
    _check_every_task_ran(results, limit=2, top_group="llmkick_paper")
    originals = {task: results["n-samples"][task]["original"] for task in LEAF_TASKS}
    assert originals["llmkick_freebaseqa"] == 3995  # FreebaseQA-dev.tab (preferred over .txt)
    assert originals["llmkick_freebaseqa_paper"] == 1000  # the first 1000 questions of the split
    # web-dev (2) + wikipedia-dev (2)
    assert originals["llmkick_triviaqa_closed"] == originals["llmkick_triviaqa_open"] == 4
    assert sum(originals[f"llmkick_mmlu_{subject}"] for subject in SUBJECTS) == 14042
    assert sum(originals[f"llmkick_mmlu_ll_{subject}"] for subject in SUBJECTS) == 14042


def test_batch_size_does_not_change_any_sample(tiny_llama_dir: Path, task_data_dir: Path) -> None:
    from lm_eval.models.huggingface import HFLM

    tasks = ["llmkick_freebaseqa", "llmkick_triviaqa_open", "llmkick_mmlu_anatomy", "llmkick_mmlu_ll_anatomy"]
    metadata = {"data_dir": str(task_data_dir), "tokenizer": str(tiny_llama_dir)}
    per_batch_size = {}
    for batch_size in (1, 4):
        lm = HFLM(pretrained=str(tiny_llama_dir), device="cpu", batch_size=batch_size)
        results = evaluate(lm, tasks, metadata)
        per_batch_size[batch_size] = (
            {task: results["results"][task] for task in tasks},
            {
                task: [
                    (s["doc_id"], s["filtered_resps"], s["metrics"], [s[m] for m in s["metrics"]])
                    for s in samples
                ]
                for task, samples in results["samples"].items()
            },
        )
    assert per_batch_size[1] == per_batch_size[4]
