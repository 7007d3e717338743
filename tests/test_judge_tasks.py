"""Judged tasks in-process: data loading, swap mode, the two MT-Bench turns, predict-only, pre-flight."""

from __future__ import annotations

import json
import types
from collections import Counter
from pathlib import Path

import lm_eval.evaluator
import pytest
from judge_fixtures import (
    CONVERSATIONS,
    EXPECTED_MTBENCH,
    EXPECTED_VICUNA,
    EXPECTED_VICUNA_SWAP,
    JUDGE_MODEL,
    LEAK,
    QUESTIONS,
    REFERENCE_MODEL,
    STORIES,
    judge_metadata,
    no_ambient_judge,  # noqa: F401 - autouse fixture, shared
    scripted_reply,
)
from judge_server import JudgeServer
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

import llmkick_tasks
from llmkick_tasks import preflight
from llmkick_tasks.data_dir import DataLayoutError
from llmkick_tasks.judge.client import JudgeRequestError
from llmkick_tasks.judge.config import JudgeConfigError
from llmkick_tasks.judge.pairwise import SummarizationProtocol
from llmkick_tasks.judge.single_answer import MTBenchProtocol
from llmkick_tasks.judge.templates import TemplateError, TemplateSet

TASKS_DIR = Path(llmkick_tasks.__file__).parent
SUMMARIZATION = "llmkick_summarization"
VICUNA = "llmkick_instruction_vicuna80"
MTBENCH = "llmkick_mtbench"


@pytest.fixture(scope="module")
def chat_lm(chat_model: Path) -> HFLM:
    return HFLM(pretrained=str(chat_model), device="cpu", batch_size=4)


def task_manager(**metadata: object) -> TaskManager:
    """Only llmkick's tasks indexed (fast); metadata as --metadata would give it."""
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)


def run(lm: HFLM, task: str, metadata: dict, **kwargs: object) -> dict:
    options = {"apply_chat_template": True, **kwargs}
    return simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=task_manager(**metadata),
        gen_kwargs="max_gen_toks=4",
        log_samples=True,
        bootstrap_iters=0,
        **options,
    )


def load_docs(task: str, **metadata: object) -> list[dict]:
    loaded = task_manager(judge_base_url="http://127.0.0.1:9/v1", judge_model="m", **metadata).load([task])
    return list(loaded["tasks"][task].test_docs())


# ---------------------------------------------------------------------------------------------- data
def test_summarization_fixture_dedupes_interleaves_and_never_prompts_highlights(judged_data: Path) -> None:
    task = task_manager(judge_base_url="http://127.0.0.1:9/v1", judge_model="m", data_dir=str(judged_data))
    loaded = task.load([SUMMARIZATION])["tasks"][SUMMARIZATION]
    docs = list(loaded.test_docs())
    assert [d["bin"] for d in docs] == ["small", "mid", "large", "small", "mid", "large"][: len(docs)]
    assert sorted(d["story_id"] for d in docs) == sorted(m.lower() for m in STORIES)  # the mid copy is gone
    assert next(d for d in docs if d["story_id"] == "alderney")["bin"] == "small"
    for doc in docs:
        prompt = loaded.doc_to_text(doc)
        assert LEAK not in prompt and "@highlight" not in prompt and doc["article"] in prompt
        assert LEAK in doc["highlights"]


def test_summarization_real_data_bins(shared_data: Path) -> None:
    docs = load_docs(SUMMARIZATION, data_dir=str(shared_data))
    assert Counter(d["bin"] for d in docs) == {"small": 30, "mid": 12, "large": 30}
    assert len({" ".join(d["article"].split()) for d in docs}) == len(docs) == 72
    assert all("@highlight" not in d["article"] for d in docs)
    small = load_docs(SUMMARIZATION, data_dir=str(shared_data), stories_per_bin=2)
    assert [d["bin"] for d in small] == ["small", "mid", "large"] * 2


def test_summarization_release_bins_keep_the_folders_as_the_paper(shared_data: Path) -> None:
    release = load_docs(SUMMARIZATION, data_dir=str(shared_data), summarization_bins="release")
    assert Counter(d["bin"] for d in release) == {"small": 30, "mid": 30, "large": 30}
    assert len({" ".join(d["article"].split()) for d in release}) == 72  # the 18 copies are kept
    assert [d["bin"] for d in release[:6]] == ["small", "mid", "large"] * 2
    # The paper protocol bins by release folder by default; length bins stay the default otherwise.
    paper = load_docs(SUMMARIZATION, data_dir=str(shared_data), judge_protocol="paper")
    assert Counter(d["bin"] for d in paper) == {"small": 30, "mid": 30, "large": 30}
    length = load_docs(SUMMARIZATION, data_dir=str(shared_data), summarization_bins="length")
    assert Counter(d["bin"] for d in length) == {"small": 30, "mid": 12, "large": 30}


def test_summarization_bins_are_recorded_and_checked(judged_data: Path) -> None:
    manager = task_manager(
        judge_base_url="http://127.0.0.1:9/v1", judge_model="m", data_dir=str(judged_data),
        summarization_bins="release",
    )  # fmt: skip
    task = manager.load([SUMMARIZATION])["tasks"][SUMMARIZATION]
    assert task.config.metadata["summarization_bins"] == "release"
    docs = list(task.test_docs())
    assert Counter(d["bin"] for d in docs) == {"small": 2, "mid": 3, "large": 2}  # alderney in small and mid
    for bad, message in (("folders", "must be one of release, length"), ("release", "public")):
        metadata = {"judge_base_url": "http://127.0.0.1:9/v1", "judge_model": "m", "summarization_bins": bad}
        with pytest.raises(ValueError, match=message):
            preflight.check_requested_tasks([SUMMARIZATION], task_manager(**metadata))


def test_instruction_and_mtbench_real_data(shared_data: Path) -> None:
    vicuna = load_docs(VICUNA, data_dir=str(shared_data))
    assert len(vicuna) == 80 and all(d["reference"] for d in vicuna)
    assert Counter(d["category"] for d in vicuna)["coding"] == 7
    mtbench = load_docs(MTBENCH, data_dir=str(shared_data))
    assert len(mtbench) == 80 and all(d["turn_1"] and d["turn_2"] for d in mtbench)
    needs_reference = [d for d in mtbench if d["category"] in ("math", "reasoning", "coding")]
    assert len(needs_reference) == 30 and all(d["reference_1"] and d["reference_2"] for d in needs_reference)


def test_reference_file_and_layout_errors(judged_data: Path, tmp_path: Path) -> None:
    references = tmp_path / "refs.jsonl"
    references.write_text(json.dumps({"id": "brecon", "text": "A fair in Brecon."}) + "\n")
    docs = load_docs(SUMMARIZATION, data_dir=str(judged_data), reference_file=str(references))
    by_id = {d["story_id"]: d for d in docs}
    assert by_id["brecon"]["reference"] == "A fair in Brecon."
    assert by_id["brecon"]["reference_source"] == "file refs.jsonl"
    assert by_id["fife"]["reference"] is None  # the reference model will write it
    with pytest.raises(DataLayoutError, match="vicuna80"):
        load_docs(VICUNA, data_dir=str(tmp_path))  # a data dir without the benchmark folder
    (tmp_path / "mt_bench").mkdir()
    (tmp_path / "mt_bench" / "question.jsonl").write_text('{"question_id": 1, "turns": ["only one"]}\n')
    with pytest.raises(DataLayoutError, match="two turns"):
        load_docs(MTBENCH, data_dir=str(tmp_path))


def test_judged_benchmarks_use_the_one_data_dir_mechanism(tmp_path: Path) -> None:
    from llmkick_tasks import data_dir
    from llmkick_tasks.judge import data

    for benchmark in ("cnn_dailymail", "vicuna80", "mt_bench", "llmkick_judge"):
        assert benchmark in data_dir.FOLDER_NAMES and benchmark in data_dir.LAYOUTS
    assert data.layout_error is data_dir.layout_error
    (tmp_path / "vicuna_bench").mkdir()  # FastChat's folder name is accepted, through data_dir
    assert data.local_dir({"data_dir": str(tmp_path)}, "vicuna80") == tmp_path / "vicuna_bench"
    with pytest.raises(DataLayoutError, match="original release layout") as error:
        data.local_dir({"data_dir": str(tmp_path)}, "mt_bench")
    assert "judge_prompts.jsonl" in str(error.value)
    with pytest.raises(DataLayoutError, match="cnn_dailymail/"):
        data_dir.resolve_data_dir({"data_dir": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("loader", "source"),
    [
        ("llmkick_tasks.summarization.utils:load_summarization", "abisee/cnn_dailymail"),
        ("llmkick_tasks.instruction.utils:load_vicuna80", "vicuna_bench/question.jsonl"),
        ("llmkick_tasks.mtbench.utils:load_mtbench", "mt_bench/"),
    ],
)
def test_public_sources_offline_say_to_use_a_data_dir(loader: str, source: str) -> None:
    import importlib

    module, name = loader.split(":")
    with pytest.raises(RuntimeError, match="data_dir") as error:  # conftest sets HF_*_OFFLINE
        getattr(importlib.import_module(module), name)()
    assert source in str(error.value)


# ---------------------------------------------------------------------------------------------- protocols
def test_pairwise_record_is_excluded_from_means_when_any_order_fails(tmp_path: Path) -> None:
    from llmkick_tasks.judge.config import JudgeSettings

    settings = JudgeSettings.from_metadata(
        {"judge_base_url": "http://127.0.0.1:9/v1", "judge_model": "m", "judge_swap": True}, environ={}
    )
    protocol = SummarizationProtocol(settings, TemplateSet())
    doc = {"article": "An article.", "bin": "mid"}
    calls = protocol.calls(doc, "model summary", "reference summary")
    assert [c.label for c in calls] == ["reference_first", "model_first"]
    good = protocol.record(doc, "m", "r", "file", calls, ["9 5\n9 5\n9 5\n9 5", "7 8\n7 8\n7 8\n7 8"])
    assert protocol.metrics(doc, good) == pytest.approx(
        {**{d: 6.0 for d in protocol.DIMENSIONS}, **{f"{d}_mid": 6.0 for d in protocol.DIMENSIONS},
         **{f"{d}_delta": -2.5 for d in protocol.DIMENSIONS}, "judge_unparsed": 0.0, "empty_answers": 0.0}
    )  # fmt: skip
    bad = protocol.record(doc, "m", "r", "file", calls, ["9 5\n9 5\n9 5\n9 5", "no scores here"])
    assert protocol.metrics(doc, bad) == {"judge_unparsed": 1.0, "empty_answers": 0.0}


def test_mtbench_keeps_a_parsed_turn_when_the_other_fails() -> None:
    from llmkick_tasks.judge.config import JudgeSettings

    settings = JudgeSettings.from_metadata(
        {"judge_base_url": "http://127.0.0.1:9/v1", "judge_model": "m"}, environ={}
    )
    protocol = MTBenchProtocol(settings, TemplateSet())
    doc = {"category": "math", "turn_1": "q1", "turn_2": "q2", "reference_1": "r1", "reference_2": "r2"}
    calls = protocol.calls(doc, {"turns": ["a1", "a2"]}, None)
    assert [c.template for c in calls] == ["mtbench_single_reference", "mtbench_single_turn2_reference"]
    record = protocol.record(doc, {"turns": ["a1", "a2"]}, None, None, calls, ["[[4]]", "no rating"])
    assert protocol.metrics(doc, record) == {"judge_unparsed": 1.0, "empty_answers": 0.0, "score_turn1": 4.0}
    empty = protocol.record(doc, {"turns": ["", " \n"]}, None, None, calls, ["[[0]]", "[[1]]"])
    assert protocol.metrics(doc, empty) == {
        "judge_unparsed": 0.0, "empty_answers": 2.0, "score_turn1": 0.0, "score_turn2": 1.0, "score": 0.5,
        "score_math": 0.5,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- end to end
def test_swap_sends_both_orders_and_averages(chat_lm: HFLM, judged_data: Path, tmp_path: Path) -> None:
    with JudgeServer(scripted_reply) as server:
        results = run(chat_lm, VICUNA, judge_metadata(server, judged_data, tmp_path, judge_swap=True))
    metrics = results["results"][VICUNA]
    for name, value in EXPECTED_VICUNA_SWAP.items():
        assert metrics[f"{name},judge"] == pytest.approx(value), name
    judged = [r for r in server.received if r.model == JUDGE_MODEL]
    assert len(judged) == 2 * len(QUESTIONS)
    samples = {s["doc"]["question"]: s for s in results["samples"][VICUNA]}
    for marker, (_, _, question, _, _, _) in QUESTIONS.items():
        record = samples[question]["filtered_resps"][0]
        reference, answer = record["reference"], record["response"]
        prompts = [r.prompt for r in judged if marker in r.prompt]
        first = (
            f'<answer assistant="1">\n{reference}\n</answer>\n\n<answer assistant="2">\n{answer}\n</answer>'
        )
        second = (
            f'<answer assistant="1">\n{answer}\n</answer>\n\n<answer assistant="2">\n{reference}\n</answer>'
        )
        assert sorted((first in p, second in p) for p in prompts) == [(False, True), (True, False)]
        assert [j["label"] for j in record["judgments"]] == ["reference_first", "model_first"]
    # Only the question without a reference answer in the data went to the reference model, once.
    assert [r.prompt for r in server.received if r.model == REFERENCE_MODEL] == [
        "Write a poem about a Quasar."
    ]


ZERO_REPLY = "10 0\n10 0\n10 0\n10 0\n\nAssistant 2 wrote nothing."
EMPTY_STORIES = {"Brecon": "", "Dundee": " \n "}  # the model writes nothing for these stories


def test_zero_scores_count_and_empty_answers_are_counted(
    chat_lm: HFLM, judged_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A judge answering ``10 0`` for an empty summary: the zeros are in every mean, as in the paper."""
    generate = chat_lm.generate_until

    def generate_until(requests: list, *args: object, **kwargs: object) -> list[str]:
        answers = generate(requests, *args, **kwargs)
        for i, request in enumerate(requests):
            for marker, empty in EMPTY_STORIES.items():
                if marker in request.arguments[0]:
                    answers[i] = empty
        return answers

    def reply(body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        if body["model"] == JUDGE_MODEL and any(m in prompt for m in EMPTY_STORIES):
            return ZERO_REPLY
        return scripted_reply(body)

    monkeypatch.setattr(chat_lm, "generate_until", generate_until)
    with JudgeServer(reply) as server:
        results = run(chat_lm, SUMMARIZATION, judge_metadata(server, judged_data, tmp_path))
    metrics = results["results"][SUMMARIZATION]
    # By hand: model scores per story (Alderney, Brecon, Carlow, Dundee, Exmoor; Fife unparsed).
    expected = {
        "coherence": (8 + 0 + 3 + 0 + 10) / 5,
        "coherence_small": (8 + 0) / 2,
        "coherence_mid": (3 + 0) / 2,
        "consistency": (7 + 0 + 4 + 0 + 10) / 5,
        "fluency": (6 + 0 + 5 + 0 + 10) / 5,
        "relevance": (5 + 0 + 2 + 0 + 10) / 5,
        "coherence_delta": ((8 - 9) + (0 - 10) + (3 - 7) + (0 - 10) + (10 - 6)) / 5,
        "judge_unparsed": 1.0,
        "empty_answers": 2.0,
    }
    for name, value in expected.items():
        assert metrics[f"{name},judge"] == pytest.approx(value), name
    samples = {s["doc"]["story_id"]: s["filtered_resps"][0] for s in results["samples"][SUMMARIZATION]}
    assert samples["brecon"]["scores"]["model"] == dict.fromkeys(SummarizationProtocol.DIMENSIONS, 0.0)
    assert samples["dundee"]["empty_answers"] == 1 and samples["alderney"]["empty_answers"] == 0


def test_rejudge_a_predict_only_samples_file(judged_data: Path, tmp_path: Path) -> None:
    """Answers generated with --predict_only (never judged): judged later, missing references generated."""
    from llmkick_tasks.judge.rejudge import rejudge_path

    docs = load_docs(VICUNA, data_dir=str(judged_data))
    samples = tmp_path / "samples_llmkick_instruction_vicuna80_2026-11-30T20-00-00.000000.jsonl"
    rows = [
        {
            "doc_id": i,
            "doc": doc,
            "resps": [["An answer."]],
            "filtered_resps": ["An answer."],
            "filter": "judge",
        }
        for i, doc in enumerate(docs)
    ]
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with JudgeServer(scripted_reply) as server:
        metadata = judge_metadata(server, judged_data, tmp_path)
        [written] = rejudge_path(samples, metadata, label="late")
    metrics = json.loads(written.read_text())["results"][VICUNA]
    assert metrics["score,judge"] == pytest.approx(EXPECTED_VICUNA["score"])
    assert metrics["win_rate,judge"] == pytest.approx(EXPECTED_VICUNA["win_rate"])
    # Only the question without a reference in the data went to the reference model, with its task prompt.
    assert [r.prompt for r in server.received if r.model == REFERENCE_MODEL] == [
        "Write a poem about a Quasar."
    ]
    assert written.name.startswith("rejudged_llmkick_instruction_vicuna80_late_")


def test_failed_judge_request_stops_the_run_and_a_rerun_resumes(
    chat_lm: HFLM, judged_data: Path, tmp_path: Path
) -> None:
    with JudgeServer(scripted_reply) as server:
        metadata = judge_metadata(server, judged_data, tmp_path, judge_retries=1)
        server.fail_matching("Quetzal", 503)  # the coding question's verdict never comes back
        with pytest.raises(JudgeRequestError, match="1 of 4 documents failed"):
            run(chat_lm, VICUNA, metadata)
        assert [r.status for r in server.received].count(503) == 2  # one attempt + one retry
        server.fail_matching("Quetzal", None)
        server.reset()
        results = run(chat_lm, VICUNA, metadata)
    assert [r.prompt.count("Quetzal") > 0 for r in server.received] == [True]  # only the missing verdict
    assert results["results"][VICUNA]["score_coding,judge"] == 4.0


def test_mtbench_second_turn_follows_the_models_first_answer(
    chat_lm: HFLM, judged_data: Path, tmp_path: Path
) -> None:
    with JudgeServer(scripted_reply) as server:
        results = run(chat_lm, MTBENCH, judge_metadata(server, judged_data, tmp_path))
    metrics = results["results"][MTBENCH]
    for name, value in EXPECTED_MTBENCH.items():
        assert metrics[f"{name},judge"] == pytest.approx(value), name
    assert len(server.received) == 2 * len(CONVERSATIONS)
    for sample in results["samples"][MTBENCH]:
        doc, conversation = sample["doc"], sample["resps"][0][0]
        first, second = conversation["turns"]
        # Turn 1 prompt: the chat template around the first question only.
        assert sample["arguments"][0][0] == f"<|user|>{doc['turn_1']}\n<|assistant|>"
        # Turn 2 prompt: first question, the model's OWN first answer, second question.
        assert conversation["turn_2_context"] == (
            f"<|user|>{doc['turn_1']}\n<|assistant|>{first}\n<|user|>{doc['turn_2']}\n<|assistant|>"
        )
        turn2_prompt = next(
            r.prompt for r in server.received if "<conversation>" in r.prompt and doc["turn_2"] in r.prompt
        )
        assert f"<assistant>\n{first}\n</assistant>" in turn2_prompt
        assert f"<assistant>\n{second}\n</assistant>" in turn2_prompt
    math_prompts = [r.prompt for r in server.received if "Zermatt" in r.prompt]
    assert all("<reference_answer" in p for p in math_prompts)


def test_mtbench_without_apply_chat_template_uses_the_models_template(
    chat_lm: HFLM, judged_data: Path, tmp_path: Path
) -> None:
    """No global chat template: the task formats both turns with the model's tokenizer template itself."""
    with JudgeServer(scripted_reply) as server:
        results = run(
            chat_lm, MTBENCH, judge_metadata(server, judged_data, tmp_path), apply_chat_template=False
        )
    assert len(server.received) == 2 * len(CONVERSATIONS)
    for sample in results["samples"][MTBENCH]:
        doc, conversation = sample["doc"], sample["resps"][0][0]
        first = conversation["turns"][0]
        assert sample["arguments"][0][0] == f"<|user|>{doc['turn_1']}\n<|assistant|>"
        assert conversation["turn_2_context"] == (
            f"<|user|>{doc['turn_1']}\n<|assistant|>{first}\n<|user|>{doc['turn_2']}\n<|assistant|>"
        )
    assert "chat template" in results["configs"][MTBENCH]["metadata"]["prompt_format"]


def test_predict_only_generates_without_judging(chat_lm: HFLM, judged_data: Path, tmp_path: Path) -> None:
    with JudgeServer(scripted_reply) as server:
        results = run(
            chat_lm, SUMMARIZATION, judge_metadata(server, judged_data, tmp_path), predict_only=True
        )
    assert server.received == []
    samples = results["samples"][SUMMARIZATION]
    assert len(samples) == len(STORIES) and all(isinstance(s["filtered_resps"][0], str) for s in samples)


# ---------------------------------------------------------------------------------------------- pre-flight
@pytest.fixture
def wrapped_evaluator() -> types.ModuleType:
    """A module holding simple_evaluate with the pre-flight wrapper installed (as the boot hook does)."""
    module = types.ModuleType("evaluator_copy")
    module.simple_evaluate = lm_eval.evaluator.simple_evaluate
    preflight.install(module)
    return module


@pytest.mark.parametrize("task", [SUMMARIZATION, VICUNA, MTBENCH])
def test_judged_tasks_build_without_a_judge_and_refuse_to_build_requests(
    task: str, judged_data: Path, wrapped_evaluator: types.ModuleType, tmp_path: Path
) -> None:
    # As lm-eval's own task tests build every task: no judge, no model, no llmkick metadata but the data.
    built = task_manager(data_dir=str(judged_data)).load([task])["tasks"][task]
    assert built.test_docs() and "judge" not in built.config.metadata  # nothing was resolved
    assert {m["metric"] for m in built.config.metric_list} >= {"judge_unparsed"}
    with pytest.raises(
        JudgeConfigError, match=f"{task} is scored by an LLM judge, but no judge is configured"
    ):
        built.build_all_requests(limit=1, rank=0, world_size=1)
    # A run is still refused before its model loads (the model does not exist: loading it would fail).
    with pytest.raises(JudgeConfigError, match="no judge is configured"):
        wrapped_evaluator.simple_evaluate(
            model="hf",
            model_args=f"pretrained={tmp_path / 'no_such_model'}",
            tasks=[task],
            task_manager=task_manager(data_dir=str(judged_data)),
        )


def test_preflight_refuses_before_the_model_is_loaded(
    wrapped_evaluator: types.ModuleType, tmp_path: Path
) -> None:
    missing_model = str(tmp_path / "no_such_model")
    # Were the model loaded first, this would fail with the model's loading error instead.
    with pytest.raises(JudgeConfigError, match="no judge is configured"):
        wrapped_evaluator.simple_evaluate(
            model="hf",
            model_args=f"pretrained={missing_model}",
            tasks=[SUMMARIZATION],
            task_manager=task_manager(),
        )
    # With a judge configured the check passes and simple_evaluate goes on to load the (missing) model.
    with pytest.raises(Exception) as error:
        wrapped_evaluator.simple_evaluate(
            model="hf",
            model_args=f"pretrained={missing_model}",
            tasks=[SUMMARIZATION],
            task_manager=task_manager(judge_base_url="http://127.0.0.1:9/v1", judge_model="m"),
        )
    assert not isinstance(error.value, JudgeConfigError)


@pytest.mark.parametrize(
    ("task", "file", "text", "problem"),
    [
        (SUMMARIZATION, "summarization_pairwise.user.jinja", "{{ artcle }}", "'artcle' is undefined"),
        (VICUNA, "instruction_math.system.jinja", "{{ question.__class__.__mro__ }}", "unsafe"),
        (MTBENCH, "mtbench_single_turn2_reference.user.jinja", "{{ reference_3 }}", "reference_3"),
        (VICUNA, "instruction_coding.user.jinja", "{% if %}", "line 1"),
    ],
)
def test_preflight_renders_every_template_before_the_model_loads(
    wrapped_evaluator: types.ModuleType, tmp_path: Path, task: str, file: str, text: str, problem: str
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / file).write_text(text)
    with JudgeServer(scripted_reply) as server:
        with pytest.raises(TemplateError) as error:
            wrapped_evaluator.simple_evaluate(
                model="hf",
                model_args=f"pretrained={tmp_path / 'no_such_model'}",
                tasks=[task],
                task_manager=task_manager(
                    judge_base_url=server.url, judge_model=JUDGE_MODEL, judge_templates=str(templates)
                ),
            )
    assert file in str(error.value) and problem in str(error.value)
    assert server.received == []


def test_preflight_builds_the_task_manager_when_none_is_given(
    wrapped_evaluator: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[dict] = []

    class SmallTaskManager(TaskManager):
        def __init__(self, metadata: dict | None = None, **_: object) -> None:
            built.append(dict(metadata or {}))
            super().__init__(include_path=str(TASKS_DIR), include_defaults=False, metadata=metadata)

    monkeypatch.setattr("lm_eval.tasks.TaskManager", SmallTaskManager)
    with pytest.raises(JudgeConfigError, match="llmkick_summarization"):
        wrapped_evaluator.simple_evaluate(
            model="hf",
            model_args="pretrained=/nowhere,dtype=float32",
            tasks=[SUMMARIZATION],
            metadata={"x": 1},
        )
    assert built == [{"pretrained": "/nowhere", "dtype": "float32", "x": 1}]  # as simple_evaluate merges them


def test_preflight_expands_groups_and_tags(tmp_path: Path) -> None:
    (tmp_path / "bundle.yaml").write_text(
        f"group: judged_bundle\ntask:\n  - llmkick_freebaseqa\n  - {SUMMARIZATION}\nmetadata:\n  version: 1\n"
    )
    unconfigured = TaskManager(include_path=[str(TASKS_DIR), str(tmp_path)], include_defaults=False)
    specs = (
        ["judged_bundle"],
        ["llmkick_judged"],
        ["llmkick"],
        [VICUNA],
        [{"task": MTBENCH}],
        [{"group": "judged_bundle"}],
    )
    for spec in specs:
        with pytest.raises(JudgeConfigError, match="no judge is configured"):
            preflight.check_requested_tasks(spec, unconfigured)
    # Not judged: nothing to check.
    preflight.check_requested_tasks(["llmkick_freebaseqa", "llmkick_exact_match"], unconfigured)
    configured = task_manager(judge_base_url="http://127.0.0.1:9/v1", judge_model="m")
    # No chat template is required any more: the judged tasks format their own chat prompts.
    preflight.check_requested_tasks([SUMMARIZATION, VICUNA, MTBENCH, "llmkick"], configured)


def test_preflight_error_says_how_to_run_without_a_judge() -> None:
    with pytest.raises(JudgeConfigError) as error:
        preflight.check_requested_tasks(["llmkick"], task_manager())
    message = str(error.value)
    assert "no judge is configured" in message and "LLMKICK_JUDGE_API_KEY" in message
    assert "--tasks llmkick_exact_match" in message
    assert f"{MTBENCH}, {SUMMARIZATION}" in message  # the judged tasks the group brought in
