"""Fixture data, a chat-template tiny model and the scripted judge for the judged-task tests.

The data dir holds the three judged benchmarks in their release layouts, tiny: every story / question
carries a marker word, and :func:`scripted_reply` answers each judge request by the marker it finds, so the
expected metrics can be worked out by hand (see ``EXPECTED_*``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from judge_server import JudgeServer, last_user_message

JUDGE_MODEL = "judge-x"
REFERENCE_MODEL = "ref-x"
LEAK = "HIGHLIGHT-LEAK"  # in every @highlight line: must never reach a prompt

# ------------------------------------------------------------------------------------------ summarization
# marker -> (folder, reply of the judge in LLM-KICK's order: Assistant 1 = reference, 2 = model)
STORIES = {
    "Alderney": ("small", "9 8\n9 7\n9 6\n9 5\n\nSummary 2 drops the ending."),
    "Brecon": ("small", "Grades:\n4 6\n4 7\n4 8\n4 9\n\nSummary 1 is vague."),
    "Carlow": ("mid", "Coherence: 7 3\nConsistency: 7 4\nFluency: 7 5\nRelevance: 7 2"),
    "Dundee": ("mid", "8 5\n8 5\n8 5\n8 5"),
    "Exmoor": ("large", "6 10\n6 10\n6 10\n6 10"),
    "Fife": ("large", "Both summaries are equally good, I cannot separate them."),  # unparseable
}
DUPLICATED_STORY = "Alderney"  # also copied into mid/, like 18 stories of the real offline data
# Worked out by hand from STORIES: model scores coherence 8,6 | 3,5 | 10 (Fife unparsed) ...
EXPECTED_SUMMARIZATION = {
    "coherence": (8 + 6 + 3 + 5 + 10) / 5,
    "coherence_small": 7.0,
    "coherence_mid": 4.0,
    "coherence_large": 10.0,
    "consistency": (7 + 7 + 4 + 5 + 10) / 5,
    "fluency": (6 + 8 + 5 + 5 + 10) / 5,
    "relevance": (5 + 9 + 2 + 5 + 10) / 5,
    "relevance_mid": 3.5,
    "coherence_delta": ((8 - 9) + (6 - 4) + (3 - 7) + (5 - 8) + (10 - 6)) / 5,
    "judge_unparsed": 1.0,
}

# ------------------------------------------------------------------------------------------ vicuna-80
# marker -> (id, category, question, reference in the file or None, reply ref-first, reply model-first)
QUESTIONS = {
    "Quokka": (
        1, "generic", "What do Quokka eat?", "Quokka eat leaves and grasses.", "7 9\nSecond is better.",
        "8 6",
    ),
    "Quetzal": (
        61, "coding", "Write a Quetzal parser in Python.", "def parse(): ...",
        "Assistant 1: 8\nAssistant 2: 4", "3 9",
    ),
    "Quince": (
        68, "math", "What is Quince 2 + 3?", "5", "Inputs (2, 3) give 5.\nBoth correct.\n(7, 7)", "(7, 7)",
    ),
    "Quasar": (71, "writing", "Write a poem about a Quasar.", None, "5 3", "2 4"),
}  # fmt: skip
EXPECTED_VICUNA = {
    "score": (9 + 4 + 7 + 3) / 4,
    "score_generic": 9.0,
    "score_coding": 4.0,
    "score_math": 7.0,
    "score_writing": 3.0,
    "score_delta": ((9 - 7) + (4 - 8) + (7 - 7) + (3 - 5)) / 4,
    "win_rate": (1 + 0 + 0.5 + 0) / 4,
    "judge_unparsed": 0.0,
}
# judge_swap: model score = mean(Assistant 2 of ref-first, Assistant 1 of model-first)
EXPECTED_VICUNA_SWAP = {
    "score": ((9 + 8) / 2 + (4 + 3) / 2 + 7 + (3 + 2) / 2) / 4,
    "score_coding": (4 + 3) / 2,
    "score_delta": (((9 + 8) - (7 + 6)) / 2 + ((4 + 3) - (8 + 9)) / 2 + 0 + ((3 + 2) - (5 + 4)) / 2) / 4,
    "win_rate": (1 + 0 + 0.5 + 0) / 4,
}

# ------------------------------------------------------------------------------------------ MT-Bench
# marker -> (id, category, turns, reference turns or None, where the reference is, turn-1 reply, turn-2 reply)
CONVERSATIONS = {
    "Zanzibar": (901, "writing", ["Describe Zanzibar beaches.", "Rewrite it for Zanzibar kids."], None, None,
                 "Vivid.\nRating: [[8]]", "Rating: [[6]]"),
    "Zermatt": (902, "math", ["What is Zermatt 3*4?", "And Zermatt 12/4?"], ["12", "3"], "answer_file",
                "[[9]]", "Correct.\n[[7]]"),
    "Zagreb": (903, "reasoning", ["Is Zagreb north of Split?", "And of Zagreb's twin?"], ["Yes.", "Unknown."],
               "question", "[[5]]", "I am not sure how to grade this."),
}  # fmt: skip
EXPECTED_MTBENCH = {
    "score_turn1": (8 + 9 + 5) / 3,
    "score_turn2": (6 + 7) / 2,
    "score": ((8 + 6) / 2 + (9 + 7) / 2) / 2,
    "score_writing": 7.0,
    "score_math": 8.0,
    "judge_unparsed": 1.0,
}


def _story_text(marker: str) -> str:
    return (
        f"(CNN) -- The town of {marker} held its yearly fair on Sunday.\n\n"
        f"Hundreds of visitors came to {marker} despite the rain, organizers said.\n\n"
        f"@highlight\n\n{LEAK} {marker} fair draws crowds\n\n"
        f"@highlight\n\n{LEAK} rain did not stop visitors\n"
    )


def write_judged_data(root: Path) -> Path:
    """A data dir with cnn_dailymail/, vicuna80/ and mt_bench/ in their release layouts."""
    for marker, (folder, _) in STORIES.items():
        target = root / "cnn_dailymail" / folder
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{marker.lower()}.story").write_text(_story_text(marker))
    shutil.copy(
        root / "cnn_dailymail" / "small" / f"{DUPLICATED_STORY.lower()}.story",
        root / "cnn_dailymail" / "mid" / f"{DUPLICATED_STORY.lower()}.story",
    )

    vicuna = root / "vicuna80"
    vicuna.mkdir(parents=True, exist_ok=True)
    questions = [{"question_id": q[0], "text": q[2], "category": q[1]} for q in QUESTIONS.values()]
    answers = [{"question_id": q[0], "text": q[3]} for q in QUESTIONS.values() if q[3] is not None]
    (vicuna / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (vicuna / "reference_answer_gpt35.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))

    mt_bench = root / "mt_bench"
    mt_bench.mkdir(parents=True, exist_ok=True)
    rows, refs = [], []
    for qid, category, turns, reference, where, *_ in CONVERSATIONS.values():
        row: dict[str, Any] = {"question_id": qid, "category": category, "turns": turns}
        if where == "question":
            row["reference"] = reference
        elif where == "answer_file":
            refs.append(
                {"question_id": qid, "model_id": "gpt-4", "choices": [{"index": 0, "turns": reference}]}
            )
        rows.append(row)
    (mt_bench / "question.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (mt_bench / "reference_answer_gpt4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    return root


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def chat_model_dir(tiny_model_dir: Path, destination: Path) -> Path:
    """A copy of a tiny model whose tokenizer has a (simple) chat template."""
    shutil.copytree(tiny_model_dir, destination)
    config_path = destination / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config))
    return destination


def judge_metadata(server: JudgeServer, data_dir: Path, tmp_path: Path, **extra: object) -> dict:
    """The --metadata of a judged run against ``server`` on the fixture data (``extra`` added)."""
    return {
        "data_dir": str(data_dir),
        "judge_base_url": server.url,
        "judge_model": JUDGE_MODEL,
        "reference_model": REFERENCE_MODEL,
        "judge_cache": str(tmp_path / "judge_cache.sqlite"),
        **extra,
    }


def _marker(prompt: str, markers: list[str]) -> str:
    found = [m for m in markers if m in prompt]
    if len(found) != 1:
        raise AssertionError(f"expected one marker in the judge prompt, found {found}: {prompt[:300]!r}")
    return found[0]


def reference_text(marker: str) -> str:
    """What the scripted reference model answers for ``marker``."""
    return f"REFERENCE answer about {marker}."


def scripted_reply(body: dict[str, Any]) -> str:
    """The scripted judge / reference model: replies chosen by the marker in the request."""
    prompt = last_user_message(body)
    if body["model"] == REFERENCE_MODEL:
        return reference_text(_marker(prompt, [*STORIES, *QUESTIONS]))
    if body["model"] != JUDGE_MODEL:
        raise AssertionError(f"unexpected model {body['model']!r}")
    if "<story>" in prompt:
        return STORIES[_marker(prompt, list(STORIES))][1]
    if '<answer assistant="1">' in prompt:
        marker = _marker(prompt, list(QUESTIONS))
        _, _, _, reference, reference_first, model_first = QUESTIONS[marker]
        reference = reference if reference is not None else reference_text(marker)
        return reference_first if f'<answer assistant="1">\n{reference}\n' in prompt else model_first
    if "Rating: [[" in prompt:
        *_, turn1, turn2 = CONVERSATIONS[_marker(prompt, list(CONVERSATIONS))]
        return turn2 if "<conversation>" in prompt else turn1
    raise AssertionError(f"unrecognised judge prompt: {prompt[:300]!r}")


@pytest.fixture(autouse=True)
def no_ambient_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests configure the judge explicitly; a developer's real key or server must not leak in."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMKICK_DATA_DIR", "LLMKICK_REFERENCE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("MODEL", "BASE_URL", "API_KEY", "CACHE", "TEMPLATES"):
        monkeypatch.delenv(f"LLMKICK_JUDGE_{name}", raising=False)
