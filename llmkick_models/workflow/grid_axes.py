"""Extra sweep axes, ``--grid NAME=v1,v2``: any compression option of the run's methods, each value checked
at plan time by the option's own parser for every method of the run that takes the option."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmkick_models.engine.methods import method_class, methods_taking, option_names
from llmkick_models.engine.options import CompressionArgumentError, Option
from llmkick_tasks.errors import UserError

#: Options that are axes of their own (--methods, --sparsities, --patterns, --bits).
OWN_AXES = ("method", "sparsity", "pattern", "bits")
#: compressed-hf's cache switches change where weights come from, not what they are: never an axis.
NOT_AXES = frozenset({"cache", "llmkick_cache_dir"})
_UNSAFE = re.compile(r"[^A-Za-z0-9.]+")


class GridError(UserError):
    """A --grid axis is refused (the message names --grid, the axis and what is allowed)."""


@dataclass(frozen=True)
class GridAxis:
    """One extra axis: an option name and its values, as given (each one parsed by the option)."""

    name: str
    values: tuple[str, ...]


def parse_grid_arg(text: str) -> tuple[str, list[str]]:
    """``NAME=v1,v2`` -> ``(NAME, [v1, v2])`` (the values are checked later, against the run's methods)."""
    name, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name.strip() or not items:
        raise ValueError(f"expected NAME=v1,v2 (e.g. nsamples=16,32,64), got {text!r}")
    return name.strip(), items


def id_part(name: str, value: str) -> str:
    """The piece of a point id naming one axis value, file-system safe: ``nsamples_32``, ``sym_false``."""
    return f"{name}_{_UNSAFE.sub('.', value).strip('.') or 'x'}"


def _option(method: str, name: str) -> Option | None:
    return next((o for o in method_class(method).accepted_options() if o.name == name), None)


def _check_name(name: str, methods: Sequence[str]) -> list[str]:
    """The methods of the run taking option ``name``; a name that cannot be an axis is refused."""
    if name in OWN_AXES:
        raise GridError(
            f"--grid {name}: {name} has its own flag; use --methods, --sparsities, --patterns or --bits"
        )
    known = [n for n in option_names() if n not in OWN_AXES and n not in NOT_AXES]
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise GridError(f"--grid: unknown option {name!r}; {hint}allowed: {', '.join(known)}")
    takers = [m for m in methods if _option(m, name) is not None]
    if not takers:
        raise GridError(
            f"--grid {name}: no method of --methods ({', '.join(methods)}) takes {name}; methods that "
            f"take it: {'|'.join(m for m in methods_taking(name) if m != 'none')}"
        )
    return takers


def check_axes(
    given: Iterable[tuple[str, Sequence[str]]], methods: Sequence[str], compress_args: Iterable[str] = ()
) -> list[GridAxis]:
    """Validate the --grid axes against the run's methods: each value through the option's own parser of
    every method taking it; an axis that no method takes, given twice, also given to --compress_args,
    or with a value given twice (after parsing: ``32`` and ``32.0``) is refused."""
    axes: list[GridAxis] = []
    fixed = set(compress_args)
    for name, values in given:
        if any(axis.name == name for axis in axes):
            raise GridError(f"--grid {name}: given twice; give all its values once, e.g. --grid {name}=a,b")
        if name in fixed:
            raise GridError(f"--grid {name}: also set by --compress_args {name}=; give it in one place")
        takers = _check_name(name, methods)
        seen: dict[str, str] = {}
        for value in values:
            for method in takers:
                option = _option(method, name)
                assert option is not None
                try:
                    parsed = option.parse(value)
                except CompressionArgumentError as error:
                    raise GridError(f"--grid {name}={value} (method {method}): {error}") from None
            key = repr(parsed)
            if key in seen or id_part(name, value) in {id_part(name, v) for v in seen.values()}:
                raise GridError(f"--grid {name}: value {value!r} given twice (as {seen.get(key, value)!r})")
            seen[key] = value
        axes.append(GridAxis(name, tuple(values)))
    return axes
