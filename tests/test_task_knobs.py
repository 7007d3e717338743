"""Every --metadata knob of the tasks and the judge is declared once: the check before load, the judge's
settings, the YAML defaults and the README tables all follow from the declarations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmkick_models.workflow.cli import main
from llmkick_tasks.judge.config import JudgeConfigError, JudgeSettings
from llmkick_tasks.judge.knobs import (
    JUDGE_KNOBS,
    JUDGED_DATA_KNOBS,
    JUDGED_PROMPT_KNOBS,
    MAX_TOKENS,
    MODEL,
    PROTOCOL,
    STORIES_PER_BIN,
)
from llmkick_tasks.knobs import Knob, KnobError, Refused
from llmkick_tasks.run_metadata import EVIDENCE_TOKENS, TASK_KNOBS, check_run_metadata, knob_tables

PROJECT = Path(__file__).resolve().parents[1]
JUDGE = {"judge_model": "m"}
KEYED = {"OPENAI_API_KEY": "k"}


def _refused_value(knob: Knob) -> Any:
    """A value the knob's parser refuses (the first of a few that one of them does)."""
    for candidate in (2.5, "nope", -1):
        try:
            knob.parse.read(candidate)
        except Refused:
            return candidate
    raise AssertionError(f"{knob.name} accepts every candidate")


def test_readme_knob_tables_are_the_generated_ones() -> None:
    for readme, table in knob_tables().items():
        assert table in (PROJECT / readme).read_text(), f"regenerate {readme} with: llmkick task-knobs"


def test_task_knobs_command_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["task-knobs"]) == 0
    printed = capsys.readouterr().out
    for readme, table in knob_tables().items():
        assert f"{readme}:\n\n{table}" in printed


@pytest.mark.parametrize("knob", (*TASK_KNOBS, *JUDGED_PROMPT_KNOBS), ids=lambda knob: knob.name)
def test_every_task_knob_is_checked_before_load(knob: Knob) -> None:
    bad = _refused_value(knob)
    with pytest.raises(
        KnobError, match=f"^{re.escape(f'metadata {knob.name}={bad!r}: allowed {knob.allowed}')}$"
    ):
        check_run_metadata({knob.name: bad})
    check_run_metadata({knob.name: ""})  # empty: not given


def test_articles_knob_is_refused_before_load() -> None:
    # Checked only by the articles loader, after the model had loaded, before it was declared.
    with pytest.raises(ValueError, match="wikitext2_articles=0: allowed a positive integer"):
        check_run_metadata({"wikitext2_articles": 0})


@pytest.mark.parametrize("knob", (*JUDGE_KNOBS, *JUDGED_DATA_KNOBS), ids=lambda knob: knob.name)
def test_every_judge_knob_is_read_from_its_declaration(knob: Knob) -> None:
    bad = _refused_value(knob)
    message = f"^llmkick_x: metadata '{knob.name}' must be .*, got {re.escape(repr(bad))}$"
    with pytest.raises(JudgeConfigError, match=message):
        JudgeSettings.from_metadata({**JUDGE, knob.name: bad}, task="llmkick_x", environ=KEYED)


def test_judge_numbers_are_not_truncated() -> None:
    # int(2.5) == 2 used to be taken silently.
    with pytest.raises(JudgeConfigError, match=r"metadata 'judge_max_tokens' must be a int, got 2\.5"):
        JudgeSettings.from_metadata({**JUDGE, MAX_TOKENS.name: 2.5}, environ=KEYED)


def test_judge_settings_come_from_the_declared_environment_variables(tmp_path: Path) -> None:
    valid = {
        "judge_base_url": "http://127.0.0.1:9/v1",
        "judge_model": "env-model",
        "judge_cache": str(tmp_path / "cache.sqlite"),
        "judge_templates": str(tmp_path),
        "reference_model": "env-reference",
        # "regex" is refused on OpenAI, which this loop's judge is; test_judge_reply_format sets it.
        "judge_reply_format": "free",
    }
    with_env = [knob for knob in JUDGE_KNOBS if knob.env]
    assert {knob.name for knob in with_env} == set(valid)
    for knob in with_env:
        for variable in knob.env:
            environ = {**KEYED, MODEL.env[0]: "m", variable: valid[knob.name]}
            settings = JudgeSettings.from_metadata({}, environ=environ)
            assert getattr(settings, str(knob.field)) == knob.parse.read(valid[knob.name]), variable
    # The metadata wins over the environment; an empty value counts as not given.
    environ = {**KEYED, MODEL.env[0]: "env"}
    assert JudgeSettings.from_metadata({MODEL.name: "meta"}, environ=environ).model == "meta"
    assert JudgeSettings.from_metadata({MODEL.name: ""}, environ=environ).model == "env"


def test_judge_defaults_are_the_declared_ones() -> None:
    settings = JudgeSettings.from_metadata(JUDGE, environ=KEYED)
    for knob in JUDGE_KNOBS:
        if knob.default is not None:
            assert getattr(settings, str(knob.field)) == knob.default, knob.name
    assert settings.protocol == PROTOCOL.default and settings.sampling_given == frozenset()


def test_yaml_defaults_are_the_declared_ones() -> None:
    def metadata(path: str) -> dict[str, Any]:
        return yaml.safe_load((PROJECT / "llmkick_tasks" / path).read_text().replace("!function", ""))[
            "metadata"
        ]

    assert metadata("triviaqa/triviaqa_open.yaml")[EVIDENCE_TOKENS.name] == EVIDENCE_TOKENS.default
    assert metadata("summarization/summarization.yaml")[STORIES_PER_BIN.name] == STORIES_PER_BIN.default
