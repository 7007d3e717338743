"""judge_protocol=paper / fastchat: requests equal the release files filled in, byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from judge_fixtures import (
    JUDGE_MODEL,
    REFERENCE_MODEL,
    STORIES,
    chat_model_dir,
    no_ambient_judge,  # noqa: F401 - autouse fixture, shared
    reference_text,
    write_judged_data,
)
from judge_server import JudgeServer
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

import llmkick_tasks
from llmkick_tasks import preflight
from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.judge.config import JudgeConfigError, JudgeSettings
from llmkick_tasks.judge.protocol_choice import make_protocol
from llmkick_tasks.judge.templates import TemplateError

TASKS_DIR = Path(llmkick_tasks.__file__).parent
SUMMARIZATION_FILES = "llmkick_judge/in-context_summarization/json_utils"
INSTRUCTION_FILES = "llmkick_judge/mt_conversation/table"


def release(path: Path, key: str = "category") -> dict[str, dict]:
    return {r[key]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def fill(template: str, **fields: str) -> str:
    """The release template filled in, independently of the code under test (str.replace per field)."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", value)
    return template


def settings(data_dir: Path, protocol: str, **extra: object) -> tuple[JudgeSettings, dict]:
    metadata = {
        "judge_base_url": "http://127.0.0.1:9/v1", "judge_model": "m", "judge_protocol": protocol,
        "data_dir": str(data_dir), **extra,
    }  # fmt: skip
    return JudgeSettings.from_metadata(metadata, environ={}), metadata


def load_docs(task: str, **metadata: object) -> list[dict]:
    manager = TaskManager(
        include_path=str(TASKS_DIR),
        include_defaults=False,
        metadata={"judge_base_url": "http://127.0.0.1:9/v1", "judge_model": "m", **metadata},
    )
    return list(manager.load([task])["tasks"][task].test_docs())


def test_paper_summarization_requests_are_the_release_template(shared_data: Path) -> None:
    judge, metadata = settings(shared_data, "paper")
    protocol = make_protocol("summarization", judge, metadata)
    prompts = release(shared_data / SUMMARIZATION_FILES / "prompt.jsonl")
    reviewers = release(shared_data / SUMMARIZATION_FILES / "reviewer.jsonl")
    docs = load_docs("llmkick_summarization", data_dir=str(shared_data), judge_protocol="paper")
    for bin_name in ("small", "mid", "large"):
        doc = next(d for d in docs if d["bin"] == bin_name)
        (call,) = protocol.calls(doc, "The model's summary.", "The reference summary.")
        expected = fill(
            prompts[bin_name]["prompt_template"], question=doc["article"], answer_1="The reference summary.",
            answer_2="The model's summary.", prompt=prompts[bin_name]["defaults"]["prompt"],
        )  # fmt: skip
        assert call.request.payload()["messages"] == [
            {"role": "system", "content": prompts[bin_name]["system_prompt"]},
            {"role": "user", "content": expected},
        ]
        sampling = reviewers[bin_name]["metadata"]
        assert (call.request.temperature, call.request.max_tokens) == (
            sampling["temperature"],
            sampling["max_tokens"],
        )
    record = protocol.record(doc, "x", "r", "file", [call], ["10 0\n10 0\n10 0\n10 0\nAssistant 2 is empty."])
    assert record["scores"]["model"]["coherence"] == 0.0
    described = protocol.describe()
    path = shared_data / SUMMARIZATION_FILES / "prompt.jsonl"
    assert described["files"][str(path)] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert described["protocol"] == "paper" and described["sampling"]["mid"]["temperature"] == 0.2


def test_paper_instruction_requests_per_category(shared_data: Path) -> None:
    judge, metadata = settings(shared_data, "paper")
    protocol = make_protocol("instruction", judge, metadata)
    prompts = release(shared_data / INSTRUCTION_FILES / "prompt.jsonl")
    docs = load_docs("llmkick_instruction_vicuna80", data_dir=str(shared_data))
    for category, judge_prompt in (("writing", "general"), ("coding", "coding"), ("math", "math")):
        doc = next(d for d in docs if d["category"] == category)
        (call,) = protocol.calls(doc, "Model answer.", doc["reference"])
        expected = fill(
            prompts[judge_prompt]["prompt_template"], question=doc["question"], answer_1=doc["reference"],
            answer_2="Model answer.", prompt=prompts[judge_prompt]["defaults"]["prompt"],
        )  # fmt: skip
        assert call.request.payload()["messages"] == [
            {"role": "system", "content": prompts[judge_prompt]["system_prompt"]},
            {"role": "user", "content": expected},
        ]
    # The math prompt asks for a Python tuple after the judge's own solution; GPT-4's layouts parse.
    math = next(d for d in docs if d["category"] == "math")
    assert protocol.parse(math, call, "Solution: x = (2, 3)\n...\n(9, 0)").scores == (9.0, 0.0)
    general = next(d for d in docs if d["category"] == "generic")
    reply = "8.5/10 for Assistant 1, 9/10 for Assistant 2\n\nBoth helpful."
    assert protocol.parse(general, call, reply).scores == (8.5, 9.0)


def test_fastchat_mtbench_requests_per_judge_prompt(shared_data: Path) -> None:
    judge, metadata = settings(shared_data, "fastchat")
    protocol = make_protocol("mtbench", judge, metadata)
    prompts = release(shared_data / "mt_bench" / "judge_prompts.jsonl", key="name")
    docs = load_docs("llmkick_mtbench", data_dir=str(shared_data))
    answers = {"turns": ["First answer.", "Second answer."]}
    for category, first in (("writing", "single-v1"), ("math", "single-math-v1")):
        doc = next(d for d in docs if d["category"] == category)
        calls = protocol.calls(doc, answers, None)
        assert [c.template for c in calls] == [first, f"{first}-multi-turn"]
        fields = {
            "question": doc["turn_1"], "answer": "First answer.", "question_1": doc["turn_1"],
            "answer_1": "First answer.", "question_2": doc["turn_2"], "answer_2": "Second answer.",
        }  # fmt: skip
        if category == "math":
            fields |= {"ref_answer_1": doc["reference_1"], "ref_answer_2": doc["reference_2"]}
        for call in calls:
            assert call.request.payload() == {
                "model": "m",
                "messages": [
                    {"role": "system", "content": prompts[call.template]["system_prompt"]},
                    {"role": "user", "content": fill(prompts[call.template]["prompt_template"], **fields)},
                ],
                "temperature": 0.0,  # FastChat's judge sampling
                "max_tokens": 2048,
            }
    # An explicit judge_temperature wins over the protocol's own.
    explicit, metadata = settings(shared_data, "fastchat", judge_temperature=0.7)
    assert (
        make_protocol("mtbench", explicit, metadata).calls(doc, answers, None)[0].request.temperature == 0.7
    )


def test_protocol_is_checked_against_the_task(shared_data: Path) -> None:
    for kind, protocol in (("summarization", "fastchat"), ("mtbench", "paper")):
        judge, metadata = settings(shared_data, protocol)
        with pytest.raises(JudgeConfigError, match="judge_protocol"):
            make_protocol(kind, judge, metadata)
    with pytest.raises(JudgeConfigError, match="must be one of llmkick, paper, fastchat"):
        settings(shared_data, "gpt4")


def broken_release(tmp_path: Path, shared_data: Path, template: str) -> Path:
    shutil.copytree(shared_data / "llmkick_judge", tmp_path / "llmkick_judge")
    (tmp_path / "cnn_dailymail").symlink_to(shared_data / "cnn_dailymail")
    path = tmp_path / SUMMARIZATION_FILES / "prompt.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["prompt_template"] = template
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("[Story]\n{story}\n{answer_1}", "undefined field {story}"),
        ("{question.__class__.__mro__}", "not allowed"),
        ("{question!r}", "not allowed"),
        ("{question", "malformed"),
    ],
)
def test_broken_release_template_fails_before_the_model_loads(
    tmp_path: Path, shared_data: Path, template: str, problem: str
) -> None:
    data = broken_release(tmp_path, shared_data, template)
    manager = TaskManager(
        include_path=str(TASKS_DIR), include_defaults=False,
        metadata={"judge_base_url": "http://127.0.0.1:9/v1", "judge_model": "m", "judge_protocol": "paper",
                  "data_dir": str(data)},
    )  # fmt: skip
    with pytest.raises(TemplateError) as error:
        preflight.check_requested_tasks(["llmkick_summarization"], manager)
    assert "prompt.jsonl" in str(error.value) and problem in str(error.value)


def test_missing_release_file_names_the_path(tmp_path: Path) -> None:
    judge, metadata = settings(tmp_path, "paper")
    with pytest.raises(DataLayoutError, match=r"llmkick_judge/mt_conversation/table/prompt\.jsonl"):
        make_protocol("instruction", judge, metadata)


def test_paper_protocol_end_to_end_sends_the_release_prompt(
    tiny_llama_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    data = write_judged_data(tmp_path / "data")
    shutil.copytree(shared_data / "llmkick_judge", data / "llmkick_judge")
    lm = HFLM(pretrained=str(chat_model_dir(tiny_llama_dir, tmp_path / "model")), device="cpu", batch_size=4)
    prompts = release(data / SUMMARIZATION_FILES / "prompt.jsonl")

    def reply(body: dict) -> str:
        if body["model"] == REFERENCE_MODEL:
            marker = next(m for m in STORIES if m in body["messages"][-1]["content"])
            return reference_text(marker)
        return "10 0\n9 1\n8 2\n7 3\n\nAssistant 2 is weak."

    metadata = {
        "data_dir": str(data), "judge_base_url": "", "judge_model": JUDGE_MODEL,
        "reference_model": REFERENCE_MODEL, "judge_cache": str(tmp_path / "cache.sqlite"),
        "judge_protocol": "paper",
    }  # fmt: skip
    with JudgeServer(reply) as server:
        metadata["judge_base_url"] = server.url
        results = simple_evaluate(
            model=lm, tasks=["llmkick_summarization"], log_samples=True, bootstrap_iters=0,
            gen_kwargs="max_gen_toks=4",
            task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata),
        )  # fmt: skip
    samples = results["samples"]["llmkick_summarization"]
    assert len(samples) == 7  # release bins: the duplicated story counts in small and in mid
    judged = [r for r in server.received if r.model == JUDGE_MODEL]
    assert len(judged) == 6  # the duplicated story's two documents send one identical request
    for sample in samples:
        doc, record = sample["doc"], sample["filtered_resps"][0]
        prompt = prompts[doc["bin"]]
        messages = [
            {"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": fill(
                prompt["prompt_template"], question=doc["article"], answer_1=record["reference"],
                answer_2=record["response"], prompt=prompt["defaults"]["prompt"])},
        ]  # fmt: skip
        assert any(r.body["messages"] == messages and r.body["temperature"] == 0.2 for r in judged)
    metrics = results["results"]["llmkick_summarization"]
    assert metrics["coherence,judge"] == 0.0 and metrics["relevance,judge"] == 3.0
    assert metrics["coherence_mid,judge"] == 0.0
    recorded = results["configs"]["llmkick_summarization"]["metadata"]
    assert recorded["summarization_bins"] == "release" and recorded["judge"]["protocol"] == "paper"
    assert recorded["judge"]["sampling"]["large"] == {"temperature": 0.2, "max_tokens": 1024}
    assert "temperature" not in recorded["judge"] and recorded["judge"]["model"] == JUDGE_MODEL
    assert set(recorded["judge"]["files"]) == {
        str(data / SUMMARIZATION_FILES / "prompt.jsonl"),
        str(data / SUMMARIZATION_FILES / "reviewer.jsonl"),
    }
