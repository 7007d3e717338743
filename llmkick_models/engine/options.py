"""Compression options: every model_arg of a compression method declared once, with its parser and help.

A method lists the options it takes (``CompressionMethod.options`` and, for options that only mean
something when it also quantizes, ``quantizer_options``).  compressed-hf's accepted arguments, the
validation before any load (``methods.build_spec``), the spec's JSON form, the sweep's routing of
``--compress_args`` and the README's table of model_args are all derived from those declarations.

Plain data and parsers, no torch: everything here runs before a model is loaded, and every error names
the argument, the value given and what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmkick_models.engine.spec import NMPattern


class CompressionArgumentError(ValueError):
    """A compression model_arg is missing, malformed or contradicts another one."""


#: ``Option.default`` of an option the method cannot run without.
REQUIRED = object()


@dataclass(frozen=True)
class Option:
    """One compression model_arg: how to parse it, its default, and what it means.

    ``field`` is the ``CompressionSpec`` attribute it fills; an option of a single method with no spec
    field of its own (``field=None``) lands in ``CompressionSpec.method_options``.
    """

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    allowed: str  # shown in errors and in the README table
    field: str | None = None


def _spec_option(name: str, parse: Callable[[Any], Any], default: Any, allowed: str, help: str) -> Option:
    return Option(name, parse, default, help, allowed, field=name)


# --- value parsers: one per kind of value, each naming the argument in its errors -------------------------


def _bad(arg: str, value: Any, problem: str, allowed: str) -> CompressionArgumentError:
    return CompressionArgumentError(f"{arg}={value!r} {problem}; allowed: {allowed}")


def _number(arg: str, value: Any, allowed: str) -> float:
    """``value`` as a float (lm-eval passes numbers converted; strings work too), booleans refused."""
    if isinstance(value, bool):
        raise _bad(arg, value, "is not a number", allowed)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _bad(arg, value, "is not a number", allowed) from None


def fraction(arg: str, allowed: str, *, include_one: bool) -> Callable[[Any], float]:
    """A parser of a number in [0, 1) (or [0, 1] with ``include_one``)."""

    def parse(value: Any) -> float:
        number = _number(arg, value, allowed)
        if not (0.0 <= number <= 1.0 if include_one else 0.0 <= number < 1.0):
            raise _bad(arg, value, "is out of range", allowed)
        return number

    return parse


def integer(arg: str, allowed: str, minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    """A parser of an integer in [minimum, maximum] (lm-eval passes numbers converted; strings work too)."""

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise _bad(arg, value, "is not an integer", allowed)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            number = int(value) if isinstance(value, (int, str)) else None
        except ValueError:
            number = None
        if number is None:
            raise _bad(arg, value, "is not an integer", allowed)
        if number < minimum or (maximum is not None and number > maximum):
            raise _bad(arg, value, "is out of range", allowed)
        return number

    return parse


def positive_number(arg: str, allowed: str) -> Callable[[Any], float]:
    """A parser of a finite number > 0."""

    def parse(value: Any) -> float:
        number = _number(arg, value, allowed)
        if not 0.0 < number < float("inf"):
            raise _bad(arg, value, "is out of range", allowed)
        return number

    return parse


def boolean(arg: str) -> Callable[[Any], bool]:
    """A parser of ``true``/``false`` (lm-eval converts them to bools), also 1/0, yes/no, on/off."""

    def parse(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise _bad(arg, value, "is not a boolean", f"{arg}=true|false")

    return parse


def choice(arg: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    """A parser of one of ``choices`` (case-insensitive)."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise _bad(arg, value, "is not a known choice", f"{arg}={'|'.join(choices)}")
        return value.strip().lower()

    return parse


_PATTERN_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
PATTERN_ALLOWED = (
    "pattern=unstructured or pattern=N:M with 0 < N < M (N zeros per M weights, e.g. 2:4, 4:8, 1:2)"
)


def parse_pattern(value: Any) -> NMPattern | None:
    """``unstructured`` (or None) -> None; ``N:M`` -> NMPattern with 0 < N < M."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "unstructured"):
        return None
    match = _PATTERN_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise _bad("pattern", value, "is malformed", PATTERN_ALLOWED)
    pruned, group = int(match.group(1)), int(match.group(2))
    if not 0 < pruned < group:
        raise _bad("pattern", value, "is impossible", PATTERN_ALLOWED)
    return NMPattern(pruned, group)


#: Named calibration sources; anything else given to ``calibration=`` must be a local path.
CALIBRATION_SOURCES: tuple[str, ...] = ("c4", "wikitext2", "random")
_CALIBRATION_ALLOWED = (
    f"calibration={'|'.join(CALIBRATION_SOURCES)} or a local path: a text file, a .jsonl file of "
    '{"text": ...} records, or a directory of such files'
)


def parse_calibration_source(value: Any) -> str:
    """A named source or an existing local path (only existence is checked here; reading comes later,
    still before the model loads)."""
    if not isinstance(value, str) or not value.strip():
        raise _bad("calibration", value, "is not a source name or path", _CALIBRATION_ALLOWED)
    name = value.strip()
    if name.lower() in CALIBRATION_SOURCES:
        return name.lower()
    path = os.path.expanduser(name)
    if not os.path.exists(path):
        raise _bad(
            "calibration", value, "is neither a known source nor an existing path", _CALIBRATION_ALLOWED
        )
    return path


_ERROR_TOKENS_ALLOWED = "a positive integer, or error_tokens=all to use every calibration token"
_error_token_count = integer("error_tokens", _ERROR_TOKENS_ALLOWED, 1)


def parse_error_tokens(value: Any) -> int | None:
    """A positive token count, or ``all`` (None)."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    return _error_token_count(value)


_GROUP_SIZE_ALLOWED = "a positive integer (input columns per scale), e.g. group_size=128, or -1 (per channel)"
_group_count = integer("group_size", _GROUP_SIZE_ALLOWED, 1)


def parse_group_size(value: Any) -> int | None:
    """Input columns per quantization grid, or -1 (None) for one grid per output row."""
    if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip() == "-1":
        return None
    return _group_count(value)


# --- the options, grouped by what they configure ---------------------------------------------------------

_SPARSITY_ALLOWED = "a number in [0, 1), e.g. sparsity=0.5 for 50%"
SPARSITY = _spec_option(
    "sparsity",
    fraction("sparsity", _SPARSITY_ALLOWED, include_one=False),
    REQUIRED,
    _SPARSITY_ALLOWED,
    "fraction of each decoder weight matrix to zero (pattern=N:M fixes it to N/M instead)",
)
PATTERN = _spec_option(
    "pattern",
    parse_pattern,
    None,
    "unstructured, or N:M (e.g. 2:4)",
    "N:M: N zeros in every M consecutive input weights of a row (LLM-KICK's 2:4 and 4:8 are 50%)",
)
PRUNING = (SPARSITY, PATTERN)

CALIBRATION = Option(
    "calibration",
    parse_calibration_source,
    "c4",
    "calibration tokens: allenai/c4 en shard 0 (the paper's), WikiText-2 train, random ids (tests), or a "
    "local text/JSONL file or folder",
    "c4, wikitext2, random or a path",
)
NSAMPLES = Option(
    "nsamples",
    integer("nsamples", "a positive integer, e.g. nsamples=128", 1),
    128,
    "calibration windows",
    "a positive integer",
)
SEQLEN = Option(
    "seqlen",
    integer("seqlen", "an integer >= 2 (tokens per calibration sample), e.g. seqlen=2048", 2),
    2048,
    "tokens per calibration window (capped at the model's context)",
    "an integer >= 2",
)
CALIBRATION_SEED = Option(
    "calibration_seed",
    integer("calibration_seed", "a non-negative integer, e.g. calibration_seed=0", 0),
    0,
    "seed of the window draw",
    "a non-negative integer",
)
#: ``nsamples``/``seqlen``/``calibration_seed`` build a ``CalibrationSpec`` together with ``calibration``.
CALIBRATION_OPTIONS = (CALIBRATION, NSAMPLES, SEQLEN, CALIBRATION_SEED)
ERROR_TOKENS = _spec_option(
    "error_tokens",
    parse_error_tokens,
    256,
    "positive integer or all",
    "calibration tokens (evenly spaced) on which the reconstruction error of a method without a full "
    "Hessian is measured; all = exact, at the cost of a Gram matrix",
)
TRUE_SEQUENTIAL = _spec_option(
    "true_sequential",
    boolean("true_sequential"),
    False,
    "true or false",
    "recompute later sub-layers' statistics after earlier ones of the block are compressed",
)

PERCDAMP = _spec_option(
    "percdamp",
    fraction(
        "percdamp",
        "a number in [0, 1], the dampening as a fraction of mean(diag H), e.g. percdamp=0.01",
        include_one=True,
    ),
    0.01,
    "a number in [0, 1]",
    "Hessian dampening λ = percdamp · mean(diag H)",
)
BLOCKSIZE = _spec_option(
    "blocksize",
    integer("blocksize", "a positive integer (columns per block), e.g. blocksize=128", 1),
    128,
    "a positive integer",
    "columns updated together (lazy batch updates)",
)
HESSIAN = (PERCDAMP, BLOCKSIZE)

_BITS_ALLOWED = "an integer from 2 to 8, e.g. bits=4"
BITS = _spec_option(
    "bits", integer("bits", _BITS_ALLOWED, 2, 8), None, _BITS_ALLOWED, "bits per quantized weight"
)
REQUIRED_BITS = Option(BITS.name, BITS.parse, REQUIRED, BITS.help, BITS.allowed, BITS.field)
GROUP_SIZE = _spec_option(
    "group_size",
    parse_group_size,
    128,
    "a positive integer or -1",
    "input columns sharing one scale/zero point (-1: one grid per output row)",
)
SYM = _spec_option(
    "sym", boolean("sym"), True, "true or false", "symmetric grid (true) or asymmetric min-max (false)"
)
QUANTIZER = (BITS, GROUP_SIZE, SYM)
ACT_ORDER = _spec_option(
    "act_order", boolean("act_order"), False, "true or false", "quantize columns by descending diag H"
)
STATIC_GROUPS = _spec_option(
    "static_groups",
    boolean("static_groups"),
    False,
    "true or false",
    "find every group's grid on the original weights before the loop",
)
GPTQ_ORDER = (ACT_ORDER, STATIC_GROUPS)
#: Quantizers that can follow Wanda/magnitude pruning.
QUANTIZERS: tuple[str, ...] = ("gptq", "rtn")
#: Why AWQ is not combined with pruning (named for ``quantizer=awq`` and for ``method=awq,sparsity=``).
AWQ_PRUNING_REASON = (
    "AWQ searches the scales of a whole decoder block on its float weights before any of its linears "
    "changes, while the pruning methods compress one input group at a time; llmkick does not combine them "
    "(for sparse + quantized use method=sparsegpt with bits=, or wanda/magnitude with quantizer=gptq|rtn)"
)
_quantizer_choice = choice("quantizer", QUANTIZERS)


def parse_quantizer(value: Any) -> str:
    """``gptq`` or ``rtn``; ``awq`` is refused with the reason."""
    if isinstance(value, str) and value.strip().lower() == "awq":
        raise _bad(
            "quantizer", value, f"is not offered after pruning: {AWQ_PRUNING_REASON}", "quantizer=gptq|rtn"
        )
    return _quantizer_choice(value)


QUANTIZER_CHOICE = _spec_option(
    "quantizer",
    parse_quantizer,
    None,
    "gptq or rtn",
    "what quantizes the pruned weights: gptq (default for calibrated methods) or rtn (default otherwise)",
)


def calibration_option_names() -> tuple[str, ...]:
    """The options that only mean something when calibration data is used."""
    return (*(o.name for o in CALIBRATION_OPTIONS), ERROR_TOKENS.name)
