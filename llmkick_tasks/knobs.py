"""Knobs: every ``--metadata`` key the llmkick tasks and the judge read, each declared once with its parser.

A :class:`Knob` says how its value is parsed, its default, what is allowed, what it does and which
environment variables stand in for it.  The run-wide check before the model loads and the sweep's
pre-flight (:mod:`llmkick_tasks.run_metadata`), the task loaders, the judge's settings
(:mod:`llmkick_tasks.judge.config`) and the README tables (``llmkick task-knobs``) are all derived from
the declarations (:data:`llmkick_tasks.run_metadata.TASK_KNOBS`, :mod:`llmkick_tasks.judge.knobs`).

Plain data and parsers, nothing heavy: it runs before lm-eval loads a model.  ``None`` and ``""`` count as
not given, so an empty environment variable or metadata value falls back like an unset one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmkick_tasks.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class KnobError(UserError):
    """A ``--metadata`` knob has a value that is not allowed; the message names the key and what is."""

    def __init__(self, key: str, value: Any, problem: str, allowed: str) -> None:
        self.key, self.value, self.problem, self.allowed = key, value, problem, allowed
        super().__init__(f"metadata {key}={value!r}: allowed {allowed}")

    def must_be(self) -> str:
        """The judge's wording of the same error: ``metadata 'key' must be <problem>, got <value>``."""
        return f"metadata {self.key!r} must be {self.problem}, got {self.value!r}"


class Refused(Exception):
    """Raised by a parser: the value is not allowed, for the reason ``problem`` (``a int``, ``>= 1``, ...)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class Parser:
    """How a knob's value is read: ``read`` returns it parsed or raises :class:`Refused`; ``allowed`` says
    what is accepted (shown in errors and in the README tables).
    """

    read: Callable[[Any], Any]
    allowed: str


def integer(minimum: int) -> Parser:
    """A whole number >= ``minimum``; floats, strings and booleans are refused (JSON keeps numbers typed)."""

    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Refused("a int")
        if value < minimum:
            raise Refused(f">= {minimum}")
        return value

    names = {0: "a non-negative integer", 1: "a positive integer"}
    return Parser(read, names.get(minimum, f"an integer >= {minimum}"))


def number(low: float, high: float | None = None) -> Parser:
    """A number in ``[low, high]`` (``>= low`` without ``high``), as a float; strings and booleans refused."""
    bound = f"in [{low}, {high}]" if high is not None else f">= {low}"

    def read(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Refused("a float")
        if value < low or (high is not None and value > high):
            raise Refused(bound)
        return float(value)

    return Parser(read, f"a number {bound}")


def boolean() -> Parser:
    """``true``/``false`` (JSON booleans), also the words 1/0, yes/no, on/off in any case."""

    def read(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE_WORDS or text in FALSE_WORDS:
            return text in TRUE_WORDS
        raise Refused("true or false")

    return Parser(read, "true or false")


def choice(choices: tuple[str, ...]) -> Parser:
    """One of ``choices`` (case and surrounding spaces ignored), returned as written in ``choices``."""
    allowed = ", ".join(choices)

    def read(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise Refused(f"one of {allowed}")
        return value.strip().lower()

    return Parser(read, allowed)


def _text(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise Refused("text")
    return str(value)


#: Any text (a model name, a URL); a path object is taken as its text.
TEXT = Parser(_text, "text")
#: A path (``~`` expanded); whether it must exist is checked where it is used.
PATH = Parser(lambda value: Path(_text(value)).expanduser(), "a path")


@dataclass(frozen=True)
class Knob:
    """One ``--metadata`` key: how to parse it, its default, and what it means.

    ``env`` are environment variables read, in order, when the metadata does not give the key (the
    metadata wins); ``shown_default`` is the README's description of a default that is resolved where
    the knob is used (``default`` is then ``None``); ``field`` is the settings attribute it fills.
    """

    name: str
    parse: Parser
    default: Any
    help: str
    env: tuple[str, ...] = ()
    shown_default: str | None = None
    field: str | None = None

    @property
    def allowed(self) -> str:
        """What the knob accepts, in words."""
        return self.parse.allowed

    def given(self, metadata: Mapping[str, Any]) -> bool:
        """Whether ``metadata`` sets the knob (an empty value does not)."""
        return metadata.get(self.name) not in (None, "")

    def read(self, metadata: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Any:
        """The knob's value from ``metadata``, else from its environment variables, else its default.

        Raises :class:`KnobError` naming the key and what is allowed.
        """
        value = metadata.get(self.name)
        if value in (None, "") and self.env:
            environ = os.environ if environ is None else environ
            value = next((environ[name] for name in self.env if environ.get(name)), None)
        if value in (None, ""):
            return self.default
        return self.value(value)

    def value(self, value: Any) -> Any:
        """``value`` (given for this knob) parsed; :class:`KnobError` if it is not allowed."""
        try:
            return self.parse.read(value)
        except Refused as refused:
            raise KnobError(self.name, value, refused.problem, self.allowed) from None


def check(knobs: Iterable[Knob], metadata: Mapping[str, Any] | None) -> None:
    """Raise :class:`KnobError` for the first of ``knobs`` that ``metadata`` sets to a value not allowed."""
    for knob in knobs:
        if knob.given(metadata or {}):
            knob.value((metadata or {})[knob.name])


def knob_table(knobs: Iterable[Knob]) -> str:
    """A README table (markdown) of ``knobs``: key, environment, default, allowed values, effect."""
    lines = ["| key | environment | default | allowed | effect |", "|---|---|---|---|---|"]
    for knob in knobs:
        env = ", else ".join(f"`{name}`" for name in knob.env)
        lines.append(f"| `{knob.name}` | {env} | {_default(knob)} | {knob.allowed} | {knob.help} |")
    return "\n".join(lines)


def _default(knob: Knob) -> str:
    if knob.shown_default is not None:
        return knob.shown_default
    if knob.default is None:
        return "—"
    if isinstance(knob.default, bool):
        return f"`{str(knob.default).lower()}`"
    return f"`{knob.default}`"
