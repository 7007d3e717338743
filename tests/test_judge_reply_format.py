"""judge_reply_format=regex: every protocol's reply regex and its parser agree; the request carries the
regex only when asked; it is part of the cache key; OpenAI's own API and bad values are refused.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

import pytest
from judge_fixtures import no_ambient_judge  # noqa: F401 - autouse fixture, shared
from judge_server import JudgeServer
from lm_eval.tasks import TaskManager

import llmkick_tasks
from llmkick_tasks import preflight
from llmkick_tasks.judge.cache import ResponseCache
from llmkick_tasks.judge.client import JudgeClient
from llmkick_tasks.judge.config import JudgeConfigError, JudgeSettings
from llmkick_tasks.judge.protocol_choice import make_protocol

SERVER = "http://127.0.0.1:9/v1"
# Characters an explanation may be drawn from: ASCII, markup a parser might react to, line breaks other
# than "\n" (str.splitlines splits on them), non-ASCII letters and digits of other scripts.
TAIL_POOL = (
    [chr(c) for c in range(32, 127)] + ["\r", "\t", "\x0b", "\u2028", "\x85", "é", "ß", "٣", "²", "½"]
)  # fmt: skip


CLASS_MEMBERS: dict[str, list[str]] = {}  # a character class -> the pool's characters in it


def sample(regex: str, rng: random.Random) -> str:
    """A random string of the language of ``regex`` (the subset of regex syntax the reply regexes use).

    Walks Python's own parse of the regex, so it samples what the regex says, not what its author meant.
    """

    def walk(items: list) -> str:
        out = []
        for op, arg in items:
            if op is sre.LITERAL:
                out.append(chr(arg))
            elif op is sre.SUBPATTERN:
                out.append(walk(list(arg[-1])))
            elif op is sre.BRANCH:
                out.append(walk(list(rng.choice(arg[1]))))
            elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                low, high, body = arg
                high = min(high, 300)
                count = rng.choice([low, high, rng.randint(low, high)])
                out.extend(walk(list(body)) for _ in range(count))
            elif op is sre.IN:
                key = in_class(arg)
                if key not in CLASS_MEMBERS:
                    CLASS_MEMBERS[key] = [c for c in TAIL_POOL if re.fullmatch(key, c)]
                out.append(rng.choice(CLASS_MEMBERS[key]))
            else:
                raise AssertionError(f"the sampler does not know {op} (in {regex!r})")
        return "".join(out)

    return walk(list(sre_parse.parse(regex)))


def in_class(arg: list) -> str:
    """A one-character regex equal to the parsed character class ``arg``."""
    parts, negate = [], False
    for op, value in arg:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            parts.append(re.escape(chr(value)))
        elif op is sre.RANGE:
            parts.append(f"{re.escape(chr(value[0]))}-{re.escape(chr(value[1]))}")
        else:
            raise AssertionError(f"the sampler does not know {op} in a character class")
    return f"[{'^' if negate else ''}{''.join(parts)}]"


def scores_in(reply: str) -> tuple[float, ...]:
    """The numbers a constrained reply holds, in order: the scores (its explanation has no digit)."""
    return tuple(float(n) for n in re.findall(r"[0-9]+", reply))


def judge_settings(protocol: str, reply_format: str = "regex", **extra: object) -> tuple[JudgeSettings, dict]:
    metadata = {
        "judge_base_url": SERVER,
        "judge_model": "m",
        "judge_protocol": protocol,
        "judge_reply_format": reply_format,
        **extra,
    }
    return JudgeSettings.from_metadata(metadata, environ={}), metadata


SUMMARY_DOC = {"article": "A story.", "bin": "mid", "story_id": "x"}
MTBENCH_DOC = {"question_id": 1, "category": "writing", "turn_1": "Q1", "turn_2": "Q2"}
MTBENCH_MATH_DOC = {**MTBENCH_DOC, "category": "math", "reference_1": "R1", "reference_2": "R2"}
MTBENCH_ANSWER = {"turns": ["A1", "A2"]}


def instruction_doc(category: str) -> dict:
    return {"question": "What?", "category": category, "question_id": 1}


# (kind, protocol, document, response, reference, a reply the prompt asks for, its scores)
CASES = [
    ("summarization", "llmkick", SUMMARY_DOC, "S", "R",
     "8 7\n10 1\n9 9\n1 10\n\nAssistant two invents a quote.", (8, 7, 10, 1, 9, 9, 1, 10)),
    ("summarization", "paper", SUMMARY_DOC, "S", "R", "8 7\n10 1\n9 9\n1 10", (8, 7, 10, 1, 9, 9, 1, 10)),
    ("instruction", "llmkick", instruction_doc("generic"), "A", "R", "9 4\n\nMore precise.", (9, 4)),
    ("instruction", "llmkick", instruction_doc("coding"), "A", "R", "10 1", (10, 1)),
    ("instruction", "llmkick", instruction_doc("math"), "A", "R", "(9, 4)\n\nBoth solve it.", (9, 4)),
    ("instruction", "paper", instruction_doc("generic"), "A", "R", "9 4", (9, 4)),
    ("instruction", "paper", instruction_doc("coding"), "A", "R", "1 1\n\nNeither compiles.", (1, 1)),
    ("instruction", "paper", instruction_doc("math"), "A", "R", "(10, 3)", (10, 3)),
    ("mtbench", "llmkick", MTBENCH_DOC, MTBENCH_ANSWER, None, "Rating: [[7]]\n\nClear.", (7,)),
    ("mtbench", "llmkick", MTBENCH_MATH_DOC, MTBENCH_ANSWER, None, "Rating: [[10]]", (10,)),
    ("mtbench", "fastchat", MTBENCH_DOC, MTBENCH_ANSWER, None, "Rating: [[1]]", (1,)),
    ("mtbench", "fastchat", MTBENCH_MATH_DOC, MTBENCH_ANSWER, None, "Rating: [[6]]\n\nA slip.", (6,)),
]  # fmt: skip
IDS = [f"{kind}-{protocol}-{doc.get('category', 'story')}" for kind, protocol, doc, *_ in CASES]


def judge_calls(case: tuple, shared_data: Path, reply_format: str = "regex") -> tuple:
    kind, protocol_name, doc, response, reference, *_ = case
    settings, metadata = judge_settings(protocol_name, reply_format, data_dir=str(shared_data))
    protocol = make_protocol(kind, settings, metadata)
    return protocol, protocol.calls(doc, response, reference)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_reply_regex_and_the_parser_agree(case: tuple, shared_data: Path) -> None:
    protocol, calls = judge_calls(case, shared_data)
    _, _, doc, _, _, reply, expected = case
    for call in calls:
        regex = call.request.reply_regex
        assert regex is not None
        # The reply the prompt asks for is in the language and parses to its scores.
        assert re.fullmatch(regex, reply), (regex, reply)
        assert protocol.parse(doc, call, reply).scores == tuple(map(float, expected))
        # Everything in the language parses, to the numbers it starts with: min, max, 10, with and without
        # an explanation (random, seeded), whatever characters the explanation holds.
        rng = random.Random(regex)
        for _ in range(200):
            text = sample(regex, rng)
            assert re.fullmatch(regex, text), (regex, text)
            parsed = protocol.parse(doc, call, text)
            assert parsed.scores == scores_in(text), (text, parsed)
        # Scores outside 1-10, decimals and a free text before the scores are outside the language.
        for outside in (
            "0 5",
            "11 5",
            "8.5 7",
            "(8.5, 7)",
            "Rating: [[0]]",
            "Rating: [[7.5]]",
            "Scores:\n8 7",
            "8 7\nmore 3",
        ):
            assert not re.fullmatch(regex, outside), (regex, outside)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_request_carries_the_regex_only_when_asked(case: tuple, shared_data: Path) -> None:
    _, free_calls = judge_calls(case, shared_data, reply_format="free")
    _, regex_calls = judge_calls(case, shared_data)
    for free, constrained in zip(free_calls, regex_calls, strict=True):
        assert "structured_outputs" not in free.request.payload()
        payload = constrained.request.payload()
        assert payload["structured_outputs"] == {"regex": constrained.request.reply_regex}
        assert {k: v for k, v in payload.items() if k != "structured_outputs"} == free.request.payload()
        # Never one cache entry for both: a constrained reply must not answer a free request.
        assert free.request.cache_key(SERVER) != constrained.request.cache_key(SERVER)


def test_the_server_receives_the_regex_and_the_cache_keeps_the_two_apart(tmp_path: Path) -> None:
    case = CASES[2]  # llmkick Vicuna-80, general prompt
    with JudgeServer("9 4") as server:
        texts = {}
        for reply_format in ("free", "regex", "free", "regex"):
            settings, metadata = judge_settings(
                "llmkick", reply_format, judge_base_url=server.url, judge_cache=str(tmp_path / "c.sqlite")
            )
            protocol = make_protocol("instruction", settings, metadata)
            (call,) = protocol.calls(*case[2:5])
            with ResponseCache(settings.cache_path) as cache:
                texts[reply_format] = JudgeClient(settings, cache).complete_all([call.request])[0].text
        bodies = [received.body for received in server.received]
    # One request per format (the second run of each is served from the cache), each with its own body.
    assert texts == {"free": "9 4", "regex": "9 4"}
    assert len(bodies) == 2
    assert "structured_outputs" not in bodies[0]
    assert bodies[1]["structured_outputs"] == {"regex": call.request.reply_regex}
    # Reference answers are free text whatever the judge's reply format.
    assert "structured_outputs" not in protocol.reference_request("A question?").payload()


@pytest.mark.parametrize(
    ("metadata", "environ"),
    [
        ({"judge_reply_format": "regex"}, {"OPENAI_API_KEY": "k"}),
        ({"judge_reply_format": "regex", "judge_base_url": "https://api.openai.com/v1/"}, {}),
        ({"judge_base_url": "https://API.openai.com/v1"}, {"LLMKICK_JUDGE_REPLY_FORMAT": "regex"}),
    ],
)
def test_openai_itself_is_refused_naming_the_knob(metadata: dict, environ: dict) -> None:
    with pytest.raises(JudgeConfigError) as error:
        JudgeSettings.from_metadata({"judge_model": "gpt-4o", **metadata}, task="llmkick_x", environ=environ)
    message = str(error.value)
    assert message.startswith("llmkick_x: judge_reply_format='regex' needs a judge server that honours")
    assert "vLLM >= 0.10" in message and "judge_reply_format='free'" in message


def test_openai_itself_is_refused_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-flight check that runs before lm-eval loads the model refuses it."""
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    manager = TaskManager(
        include_path=str(Path(llmkick_tasks.__file__).parent),
        include_defaults=False,
        metadata={"judge_reply_format": "regex"},
    )
    with pytest.raises(JudgeConfigError, match=r"^llmkick_summarization: judge_reply_format='regex' needs"):
        preflight.check_requested_tasks(["llmkick_summarization"], manager)


def test_a_bad_value_names_the_knob_and_the_choices() -> None:
    with pytest.raises(JudgeConfigError) as error:
        judge_settings("llmkick", "json")
    assert str(error.value) == (
        "this task: metadata 'judge_reply_format' must be one of free, regex, got 'json'"
    )


def test_the_default_is_free_the_environment_sets_it_and_the_results_record_it() -> None:
    meta = {"judge_base_url": SERVER, "judge_model": "m"}
    assert JudgeSettings.from_metadata(meta, environ={}).reply_format == "free"
    settings = JudgeSettings.from_metadata(meta, environ={"LLMKICK_JUDGE_REPLY_FORMAT": "Regex"})
    assert settings.reply_format == "regex" and settings.describe()["reply_format"] == "regex"
    free = JudgeSettings.from_metadata(
        {**meta, "judge_reply_format": "free"}, environ={"LLMKICK_JUDGE_REPLY_FORMAT": "regex"}
    )
    assert free.reply_format == "free"  # --metadata wins over the environment
