"""The judged tasks' own chat formatting (``llmkick_tasks.judge.chat``), without ``--apply_chat_template``.

Unit tests of the formats (tokenizer template, transcript, FastChat's vicuna_v1.1 conversation) and of how
the format is chosen, then in-process runs with a scripted LM: exact-match prompts stay raw in a run mixed
with judged tasks, judged prompts use the tokenizer's chat template when it has one and the transcript
otherwise (with one warning per run), ``chat_template=vicuna_v1.1`` gives LLM-KICK's prompts, and MT-Bench's
second turn carries the model's own first answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from judge_fixtures import (
    CONVERSATIONS,
    EXPECTED_MTBENCH,
    QUESTIONS,
    STORIES,
    judge_metadata,
    no_ambient_judge,  # noqa: F401 - autouse fixture, shared
    write_judged_data,
)
from judge_fixtures import scripted_reply as scripted_judge
from judge_server import JudgeServer
from lm_eval.api.instance import Instance
from task_fixtures import (
    FREEBASEQA_EVAL,
    TRIVIAQA_DEV,
    ScriptedLM,
    evaluate,
    task_manager,
    write_data_dir,
)

from llmkick_tasks.judge import chat
from llmkick_tasks.judge.chat import ChatFormat, chat_format_for, render_transcript
from llmkick_tasks.judge.conversation import VICUNA_V1_1
from llmkick_tasks.knobs import KnobError
from tiny_models import build_tokenizer

SUMMARIZATION = "llmkick_summarization"
MTBENCH = "llmkick_mtbench"
VICUNA80 = "llmkick_instruction_vicuna80"
# FastChat's vicuna_v1.1 system message, as its conversation template defines it.
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
SUMMARIZE = (
    "Summarize the given story in less than 150 words while preserving high coherence, consistency, "
    "fluency, and relevance.\n\n"
)
EXACT_MATCH = ["llmkick_freebaseqa", "llmkick_triviaqa_closed"]
# A template unlike judge_fixtures.CHAT_TEMPLATE, so a test can tell which tokenizer rendered a prompt.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }} [END]\n{% endfor %}"
    "{% if add_generation_prompt %}[ASSISTANT]{% endif %}"
)
NO_SYSTEM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def save_tokenizer(directory: Path, template: str | None) -> Path:
    """The tiny test tokenizer saved under ``directory``, with ``template`` as its chat template."""
    tokenizer = build_tokenizer()
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def template_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tokenizer(tmp_path_factory.mktemp("template_tokenizer"), CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def plain_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tokenizer(tmp_path_factory.mktemp("plain_tokenizer"), None)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exact-match and judged fixture data in one data dir, as a user would have it."""
    root = tmp_path_factory.mktemp("llmkick_data")
    write_data_dir(root)
    return write_judged_data(root)


# ------------------------------------------------------------------------------------------------ formats
def test_transcript_format() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": " Hello.\n"},  # as generated: its own leading space
        {"role": "user", "content": "And?"},
    ]
    assert render_transcript(messages) == (
        "System: Be brief.\n\nUser: Hi?\n\nAssistant: Hello.\n\nUser: And?\n\nAssistant:"
    )
    assert render_transcript(messages[1:3], add_generation_prompt=False) == "User: Hi?\n\nAssistant: Hello."
    transcript = ChatFormat(None)
    assert transcript(messages[1:2]) == "User: Hi?\n\nAssistant:"
    assert transcript.stop_sequences == ("\nUser:",) and not transcript.uses_template


def test_template_format_renders_like_the_tokenizer(template_tokenizer: Path) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(template_tokenizer)
    fmt = ChatFormat(tokenizer)
    messages = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    assert fmt(messages[:1]) == "<s>[USER] Hi? [END]\n[ASSISTANT]"
    assert fmt(messages[:1]) == tokenizer.apply_chat_template(
        messages[:1], tokenize=False, add_generation_prompt=True
    )
    assert fmt(messages, add_generation_prompt=False).startswith("<s>[USER] Hi? [END]\n[ASSISTANT] Hello.")
    assert fmt.stop_sequences == () and fmt.uses_template
    with pytest.raises(ValueError, match="no chat template"):
        ChatFormat(build_tokenizer())


def test_template_without_system_role_keeps_the_system_text(tmp_path: Path) -> None:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(save_tokenizer(tmp_path, NO_SYSTEM_TEMPLATE))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert ChatFormat(tokenizer)(messages) == "<user>Be brief.\n\nHi?</user><assistant>"


def test_format_choice(template_tokenizer: Path, plain_tokenizer: Path) -> None:
    import transformers

    # From the model args: `tokenizer` wins over `pretrained`, as in lm-eval's HFLM.
    both = {"pretrained": str(plain_tokenizer), "tokenizer": str(template_tokenizer)}
    assert chat_format_for(both).uses_template
    assert not chat_format_for({"pretrained": str(plain_tokenizer)}).uses_template
    # Nothing in the model args (a model object from Python): the running model's tokenizer.
    lm = ScriptedLM()
    assert not chat_format_for({}, lm).uses_template  # no tokenizer at all
    lm.tokenizer = transformers.AutoTokenizer.from_pretrained(template_tokenizer)
    assert chat_format_for({}, lm).uses_template
    # An unloadable name (an API model) falls back to the transcript.
    assert not chat_format_for({"model": str(plain_tokenizer.parent / "missing")}).uses_template


def test_vicuna_conversation_one_and_two_turns() -> None:
    question = [{"role": "user", "content": "Hi?"}]
    assert VICUNA_V1_1(question) == f"{VICUNA_SYSTEM} USER: Hi? ASSISTANT:"
    history = [
        *question,
        {"role": "assistant", "content": " Hello.\n"},  # as generated; FastChat kept answers stripped
        {"role": "user", "content": "And?"},
    ]
    assert VICUNA_V1_1(history) == f"{VICUNA_SYSTEM} USER: Hi? ASSISTANT: Hello.</s>USER: And? ASSISTANT:"
    # A system message (--system_instruction) replaces the default one, as FastChat's set_system_message.
    assert VICUNA_V1_1([{"role": "system", "content": "Be brief."}, *question]) == (
        "Be brief. USER: Hi? ASSISTANT:"
    )
    # FastChat renders an empty message as the bare role, without a separator.
    empty_answer = [*question, {"role": "assistant", "content": " "}, {"role": "user", "content": "And?"}]
    assert VICUNA_V1_1(empty_answer) == f"{VICUNA_SYSTEM} USER: Hi? ASSISTANT:USER: And? ASSISTANT:"
    assert (
        VICUNA_V1_1(history[:2], add_generation_prompt=False)
        == f"{VICUNA_SYSTEM} USER: Hi? ASSISTANT: Hello."
    )
    assert VICUNA_V1_1.stop_sequences == ("</s>",) and not VICUNA_V1_1.uses_template


@pytest.fixture
def chat_warnings() -> Iterator[list[str]]:
    """The warnings the chat module logs (on its own logger: lm-eval's routing may stop propagation)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                messages.append(record.getMessage())

    handler, logger = Collect(), logging.getLogger(chat.__name__)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def test_chat_template_knob_chooses_the_format(
    template_tokenizer: Path, plain_tokenizer: Path, chat_warnings: list[str]
) -> None:
    # The knob wins over the tokenizer's own template.
    assert (
        chat_format_for({"tokenizer": str(template_tokenizer), "chat_template": "vicuna_v1.1"}) is VICUNA_V1_1
    )
    plain = chat_format_for({"tokenizer": str(template_tokenizer), "chat_template": "plain"})
    assert not plain.uses_template and "chat_template=plain" in plain.describe()
    assert chat_format_for({"tokenizer": str(template_tokenizer), "chat_template": "auto"}).uses_template
    assert chat_warnings == []
    # auto without a chat template: the transcript, with a warning naming the knob (outside a run: each time).
    for _ in range(2):
        assert not chat_format_for({"pretrained": str(plain_tokenizer)}).uses_template
    assert len(chat_warnings) == 2
    assert "has no chat template" in chat_warnings[0]
    assert """--metadata '{"chat_template": "vicuna_v1.1"}'""" in chat_warnings[0]
    with pytest.raises(
        KnobError, match=r"^metadata chat_template='vicuna': allowed auto, vicuna_v1\.1, plain$"
    ):
        chat_format_for({"chat_template": "vicuna"})


# ------------------------------------------------------------------------------------------------ runs
def scripted_answer(request: Instance) -> str:
    """Judged tasks: an answer naming the fixture marker and the turn; exact-match tasks: a fixed word."""
    context = request.args[0]
    markers = [m for m in [*STORIES, *CONVERSATIONS] if m in context]
    if not markers:
        return " Paris"
    turn = 2 if "ANSWER[" in context else 1  # the second turn's context holds the first answer
    return f"ANSWER[{markers[0]}|turn{turn}]"


def run(tasks: list[str], metadata: dict) -> tuple[ScriptedLM, dict]:
    lm = ScriptedLM(generate=scripted_answer)
    return lm, evaluate(lm, tasks, metadata, log_samples=True, limit=3)


def test_mixed_run_keeps_exact_match_prompts_raw_and_templates_judged_ones(
    data_dir: Path, template_tokenizer: Path, tmp_path: Path
) -> None:
    alone, _ = run(EXACT_MATCH, {"data_dir": str(data_dir), "tokenizer": str(template_tokenizer)})
    with JudgeServer(scripted_judge) as server:
        metadata = judge_metadata(server, data_dir, tmp_path, tokenizer=str(template_tokenizer))
        mixed, results = run([*EXACT_MATCH, SUMMARIZATION, MTBENCH], metadata)
    # Exact-match prompts: byte for byte those of a run without judged tasks, and the paper's raw prompts.
    for task in EXACT_MATCH:
        assert mixed.prompts[task] == alone.prompts[task], task
        assert not any("[USER]" in p or "User:" in p for p in mixed.prompts[task]), task
    questions = [q for _, q, *_ in FREEBASEQA_EVAL[:3]]
    assert mixed.prompts["llmkick_freebaseqa"] == [
        f"Please give answer to this question: {q}\nThe answer is" for q in questions
    ]
    assert mixed.prompts["llmkick_triviaqa_closed"][0] == (
        f"Answer these questions:\n\nQ: {TRIVIAQA_DEV[0][2]}\nA:"
    )
    # Judged prompts: the tokenizer's chat template around the task's user turn.
    for sample in results["samples"][SUMMARIZATION]:
        article = sample["doc"]["article"]
        prompt = sample["arguments"][0][0]
        assert re.fullmatch(r"<s>\[USER\] Summarize the given story .*\[END\]\n\[ASSISTANT\]", prompt, re.S)
        assert article in prompt
    for task in (SUMMARIZATION, MTBENCH):
        assert "chat template of the tokenizer" in results["configs"][task]["metadata"]["prompt_format"]
        until = results["configs"][task]["generation_kwargs"]["until"]
        assert "\nUser:" not in until  # a template ends turns with its own tokens
    for sample in results["samples"][MTBENCH]:
        doc, conversation = sample["doc"], sample["resps"][0][0]
        marker = next(m for m in CONVERSATIONS if m in doc["turn_1"])
        assert sample["arguments"][0][0] == f"<s>[USER] {doc['turn_1']} [END]\n[ASSISTANT]"
        assert conversation["turns"] == [f"ANSWER[{marker}|turn1]", f"ANSWER[{marker}|turn2]"]
        assert conversation["turn_2_context"] == (
            f"<s>[USER] {doc['turn_1']} [END]\n[ASSISTANT] ANSWER[{marker}|turn1] [END]\n"
            f"[USER] {doc['turn_2']} [END]\n[ASSISTANT]"
        )


def test_transcript_without_a_chat_template_and_mtbench_second_turn(
    data_dir: Path, plain_tokenizer: Path, tmp_path: Path, chat_warnings: list[str]
) -> None:
    with JudgeServer(scripted_judge) as server:
        metadata = judge_metadata(server, data_dir, tmp_path, pretrained=str(plain_tokenizer))
        lm, results = run([SUMMARIZATION, MTBENCH], metadata)
    # Two judged tasks, one warning for the run, naming the knob that gives LLM-KICK's format.
    assert [w for w in chat_warnings if "chat_template" in w] == chat_warnings and len(chat_warnings) == 1
    assert f"the tokenizer {str(plain_tokenizer)!r} has no chat template" in chat_warnings[0]
    metrics = results["results"][MTBENCH]
    for name, value in EXPECTED_MTBENCH.items():  # the judge saw both turns of every conversation
        assert metrics[f"{name},judge"] == pytest.approx(value), name
    for sample in results["samples"][SUMMARIZATION]:
        prompt = sample["arguments"][0][0]
        assert prompt.startswith("User: Summarize the given story in less than 150 words")
        assert prompt.endswith(f"{sample['doc']['article']}\n\nAssistant:")
        assert "\nUser:" in sample["arguments"][0][1]["until"]  # a base model would invent the next turn
    assert "transcript" in results["configs"][MTBENCH]["metadata"]["prompt_format"]
    first_turns, second_turns = [], []
    for sample in results["samples"][MTBENCH]:
        doc, conversation = sample["doc"], sample["resps"][0][0]
        marker = next(m for m in CONVERSATIONS if m in doc["turn_1"])
        own_answer = f"ANSWER[{marker}|turn1]"
        first_turns.append(sample["arguments"][0][0])
        second_turns.append(conversation["turn_2_context"])
        assert sample["arguments"][0][0] == f"User: {doc['turn_1']}\n\nAssistant:"
        assert conversation["turn_2_context"] == (
            f"User: {doc['turn_1']}\n\nAssistant: {own_answer}\n\nUser: {doc['turn_2']}\n\nAssistant:"
        )
        assert conversation["turns"] == [own_answer, f"ANSWER[{marker}|turn2]"]
        turn2_judged = next(
            r.prompt for r in server.received if "<conversation>" in r.prompt and doc["turn_2"] in r.prompt
        )
        assert own_answer in turn2_judged and f"ANSWER[{marker}|turn2]" in turn2_judged
    # The model saw both turns: the first prompts, then the second ones built from its own answers.
    assert lm.prompts[MTBENCH] == first_turns + second_turns


class ChatScriptedLM(ScriptedLM):
    """A scripted LM that lm-eval accepts with ``--apply_chat_template`` (it asks for a tokenizer name)."""

    tokenizer_name = "scripted"


def test_vicuna_conversation_in_a_run(
    data_dir: Path, template_tokenizer: Path, tmp_path: Path, chat_warnings: list[str]
) -> None:
    # The knob wins over the tokenizer's template and over lm-eval's run-wide --apply_chat_template.
    with JudgeServer(scripted_judge) as server:
        metadata = judge_metadata(
            server, data_dir, tmp_path, tokenizer=str(template_tokenizer), chat_template="vicuna_v1.1"
        )
        lm = ChatScriptedLM(generate=scripted_answer)
        results = evaluate(
            lm,
            [SUMMARIZATION, VICUNA80, MTBENCH],
            metadata,
            log_samples=True,
            limit=3,
            apply_chat_template=True,
        )
    assert chat_warnings == []
    for task in (SUMMARIZATION, VICUNA80, MTBENCH):
        assert "vicuna_v1.1 conversation" in results["configs"][task]["metadata"]["prompt_format"], task
        # The end of an assistant turn: EOS for Vicuna, the template's text for any other model.
        assert all("</s>" in s["arguments"][0][1]["until"] for s in results["samples"][task]), task
    for sample in results["samples"][SUMMARIZATION]:
        prompt = f"{VICUNA_SYSTEM} USER: {SUMMARIZE}{sample['doc']['article']} ASSISTANT:"
        assert sample["arguments"][0][0] == prompt
    vicuna_questions = {question for _, _, question, *_ in QUESTIONS.values()}
    for sample in results["samples"][VICUNA80]:
        assert sample["doc"]["question"] in vicuna_questions
        assert sample["arguments"][0][0] == f"{VICUNA_SYSTEM} USER: {sample['doc']['question']} ASSISTANT:"
    for sample in results["samples"][MTBENCH]:
        doc, conversation = sample["doc"], sample["resps"][0][0]
        marker = next(m for m in CONVERSATIONS if m in doc["turn_1"])
        assert sample["arguments"][0][0] == f"{VICUNA_SYSTEM} USER: {doc['turn_1']} ASSISTANT:"
        assert conversation["turn_2_context"] == (
            f"{VICUNA_SYSTEM} USER: {doc['turn_1']} ASSISTANT: ANSWER[{marker}|turn1]</s>"
            f"USER: {doc['turn_2']} ASSISTANT:"
        )
    # The model saw these very prompts: the first turns, then the second ones after its own answers.
    samples = results["samples"][MTBENCH]
    assert sorted(lm.prompts[MTBENCH]) == sorted(
        [s["arguments"][0][0] for s in samples] + [s["resps"][0][0]["turn_2_context"] for s in samples]
    )


def test_bad_chat_template_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    import lm_eval.evaluator

    # Were the (missing) model loaded first, this would fail with its loading error instead.
    with pytest.raises(
        KnobError, match=r"^metadata chat_template='vicuna': allowed auto, vicuna_v1\.1, plain$"
    ):
        lm_eval.evaluator.simple_evaluate(
            model="hf",
            model_args=f"pretrained={tmp_path / 'no_such_model'}",
            tasks=[SUMMARIZATION],
            task_manager=task_manager({"chat_template": "vicuna"}),
        )


def test_running_model_is_known_only_inside_evaluate(data_dir: Path) -> None:
    import lm_eval.evaluator

    assert getattr(lm_eval.evaluator.evaluate, chat.INSTALLED_FLAG, False)  # the boot hook installed it
    assert chat.running_model() is None
    seen: list[object] = []

    def answer(request: Instance) -> str:
        seen.append(chat.running_model())
        return " Paris"

    lm = ScriptedLM(generate=answer)
    evaluate(lm, ["llmkick_freebaseqa"], {"data_dir": str(data_dir)}, limit=1)
    assert seen == [lm] and chat.running_model() is None
