"""The compression methods by name, and ``build_spec``: model_args -> a validated ``CompressionSpec``.

A new method is one module in this package (a ``CompressionMethod`` subclass declaring its options: see
its docstring for the whole contract and an example) plus one line in ``METHODS`` (or a call to
``register_method`` from outside the package).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from llmkick_models.engine.methods.base import CompressionMethod
from llmkick_models.engine.options import (
    CALIBRATION_OPTIONS,
    REQUIRED,
    CompressionArgumentError,
    Option,
    calibration_option_names,
)
from llmkick_models.engine.spec import CalibrationSpec, CompressionSpec

#: name -> "module:Class" (imported on first use) or the class itself.
METHODS: dict[str, str | type[CompressionMethod]] = {
    "none": "llmkick_models.engine.methods.base:Dense",
    "magnitude": "llmkick_models.engine.methods.magnitude:Magnitude",
    "wanda": "llmkick_models.engine.methods.wanda:Wanda",
    "sparsegpt": "llmkick_models.engine.methods.sparsegpt:SparseGPT",
    "gptq": "llmkick_models.engine.methods.gptq:GPTQ",
    "rtn": "llmkick_models.engine.methods.rtn:RTN",
    "llm_int8": "llmkick_models.engine.methods.llm_int8:LLMInt8",
    "awq": "llmkick_models.engine.methods.awq:AWQ",
}


def register_method(name: str, implementation: str | type[CompressionMethod]) -> None:
    """Make ``method=name`` available: ``implementation`` is a ``CompressionMethod`` subclass or its
    ``"module:Class"`` (imported when first used)."""
    METHODS[name] = implementation


def method_class(name: str) -> type[CompressionMethod]:
    """The implementation of a registered method."""
    implementation = METHODS[name]
    if not isinstance(implementation, str):
        return implementation
    module_name, _, class_name = implementation.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_method(name: str) -> CompressionMethod:
    """A fresh instance of a registered method (one per compressed model)."""
    return method_class(name)()


def option_names() -> tuple[str, ...]:
    """Every compression model_arg of every registered method, ``method`` first, in declaration order."""
    names = {"method": None}
    for name in METHODS:
        names.update((option.name, None) for option in method_class(name).accepted_options())
    return tuple(names)


def methods_taking(arg: str) -> list[str]:
    """The registered methods that accept option ``arg`` in some configuration."""
    return [m for m in METHODS if any(o.name == arg for o in method_class(m).accepted_options())]


def parse_method(value: Any) -> str:
    """``None`` (lm-eval turns ``method=none`` into None) or a registered method name."""
    if value is None:
        return "none"
    if not isinstance(value, str) or value.strip().lower() not in METHODS:
        raise CompressionArgumentError(
            f"method={value!r} is not a known compression method; allowed: method={'|'.join(METHODS)}"
        )
    return value.strip().lower()


def build_spec(
    method: Any = None, sparsity: Any = None, pattern: Any = None, **options: Any
) -> CompressionSpec:
    """Validate compression model_args together and return the spec they describe.

    Arguments left as None mean "not given".  An unknown name, or one that the method does not use, is an
    error rather than a silent no-op, so that a run cannot record a compression that never happened.
    """
    name = parse_method(method)
    given = {k: v for k, v in {"sparsity": sparsity, "pattern": pattern, **options}.items() if v is not None}
    known = option_names()
    for arg in given:
        if arg not in known:
            close = difflib.get_close_matches(arg, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CompressionArgumentError(
                f"{arg}={given[arg]!r} is not a compression argument{hint}; they are: {', '.join(known)}"
            )
    cls = method_class(name)
    accepted = [option.name for option in cls.accepted_options()]
    for arg, value in given.items():
        if arg in cls.refused_options:
            raise CompressionArgumentError(
                f"{arg}={value!r} does not apply to method={name}: {cls.refused_options[arg]}"
            )
        if arg not in accepted:
            raise CompressionArgumentError(
                f"{arg}={value!r} does not apply to method={name} (it takes "
                f"{', '.join(sorted(accepted)) or 'no compression arguments'}); choose a method that uses "
                f"it: {'|'.join(methods_taking(arg))}"
            )
    if name == "none":
        return CompressionSpec()
    quantizes = cls.always_quantizes() or "bits" in given
    if not quantizes:
        for option in cls.quantizer_options:
            if option.name in given:
                raise CompressionArgumentError(
                    f"{option.name}={given[option.name]!r} needs bits= with method={name}: it is a quantizer "
                    f"option and method={name} only quantizes when bits= is given (e.g. bits=4)"
                )
    offered = cls.offered_options(quantizes)
    values: dict[str, Any] = {}
    for option in offered:
        if option.name in given:
            values[option.name] = option.parse(given[option.name])
        elif option.default is not REQUIRED:
            values[option.name] = option.default
        elif option.name != "sparsity" or "pattern" not in given:  # N:M fixes the sparsity (below)
            if option.name == "sparsity":
                raise CompressionArgumentError(
                    f"method={name} needs sparsity= (a number in [0, 1), e.g. 0.5) or pattern=N:M (e.g. 2:4)"
                )
            raise CompressionArgumentError(f"method={name} needs {option.name}= ({option.allowed})")
    if "pattern" in values:
        _settle_sparsity(name, values, given)
    cls.check(values, given)
    spec = _spec(name, offered, values, calibration=None)
    if any(option.name in values for option in CALIBRATION_OPTIONS):
        if "calibration" in given or cls.needs(spec).calibration:
            calibration = CalibrationSpec(
                values["calibration"], values["nsamples"], values["seqlen"], values["calibration_seed"]
            )
            return _spec(name, offered, values, calibration)
        for arg in ("nsamples", "seqlen", "calibration_seed"):
            if arg in given:
                raise CompressionArgumentError(
                    f"{arg}={given[arg]!r} needs calibration= with method={name}, which uses no calibration "
                    f"data unless calibration= is given (then only to measure reconstruction errors)"
                )
        for arg in calibration_option_names():
            values.pop(arg, None)
        spec = _spec(name, offered, values, calibration=None)
    return spec


def _settle_sparsity(name: str, values: dict[str, Any], given: Mapping[str, Any]) -> None:
    """N:M fixes the sparsity to N/M (a sparsity= given beside it must agree)."""
    nm = values["pattern"]
    if nm is not None:
        if "sparsity" in given and abs(values["sparsity"] - nm.sparsity) > 1e-9:
            raise CompressionArgumentError(
                f"sparsity={given['sparsity']!r} conflicts with pattern={nm}, which fixes sparsity to "
                f"{nm.pruned}/{nm.group} = {nm.sparsity:g}; drop sparsity= or use pattern=unstructured"
            )
        values["sparsity"] = nm.sparsity


def _spec(
    name: str, offered: tuple[Option, ...], values: dict[str, Any], calibration: CalibrationSpec | None
) -> CompressionSpec:
    fields = {o.field: values[o.name] for o in offered if o.field is not None and o.name in values}
    fixed = method_class(name).fixed_fields
    fields.update(fixed)
    own = tuple((o.name, values[o.name]) for o in offered if o.field is None and o.name in values)
    own = tuple(item for item in own if item[0] not in calibration_option_names())
    return CompressionSpec(
        method=name,
        calibration=calibration,
        method_options=own,
        applied=frozenset(values) | frozenset(fixed),
        **fields,
    )
