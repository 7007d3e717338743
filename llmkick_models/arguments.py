"""Parse and validate compressed-hf's own model_args into a ``CompressionSpec``.

Everything here runs before the model (or torch) is loaded, so a typo costs seconds, not a model load.
Every error names the argument, the value given and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from llmkick_models.engine.methods import METHODS
from llmkick_models.engine.spec import CalibrationSpec, CompressionSpec, NMPattern

#: compressed-hf's own arguments; everything else goes to lm-eval's HFLM / ``from_pretrained``.
COMPRESSION_ARGS: tuple[str, ...] = (
    "method",
    "sparsity",
    "pattern",
    "calibration",
    "nsamples",
    "seqlen",
    "calibration_seed",
    "percdamp",
    "blocksize",
    "true_sequential",
    "error_tokens",
    "bits",
    "group_size",
    "sym",
    "act_order",
    "static_groups",
    "quantizer",
    "cache",
    "llmkick_cache_dir",
)

#: Quantizers that can follow Wanda/magnitude pruning (``quantizer=``).
QUANTIZERS: tuple[str, ...] = ("gptq", "rtn")

#: Options that only mean something when weights are quantized (``bits=`` given).
_NEEDS_BITS = ("group_size", "sym", "act_order", "static_groups", "quantizer")

#: Named calibration sources; anything else given to ``calibration=`` must be a local path.
CALIBRATION_SOURCES: tuple[str, ...] = ("c4", "wikitext2", "random")

#: HFLM / ``from_pretrained`` options that cannot be combined with compressing on load.
INCOMPATIBLE_LOAD_ARGS: dict[str, str] = {
    "peft": "adapters wrap the linears; merge the adapter into the model first, then compress",
    "autogptq": "the checkpoint is already quantized",
    "gptqmodel": "the checkpoint is already quantized",
    "load_in_4bit": "bitsandbytes layers hold packed weights that cannot be pruned",
    "load_in_8bit": "bitsandbytes layers hold packed weights that cannot be pruned",
}

_PATTERN_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


class CompressionArgumentError(ValueError):
    """A compressed-hf model_arg is missing, malformed or contradicts another one."""


def _allowed_methods() -> str:
    return "|".join(METHODS)


def parse_method(value: Any) -> str:
    """``None`` (lm-eval turns ``method=none`` into None) or a registered method name."""
    if value is None:
        return "none"
    if not isinstance(value, str) or value.strip().lower() not in METHODS:
        raise CompressionArgumentError(
            f"method={value!r} is not a known compression method; allowed: method={_allowed_methods()}"
        )
    return value.strip().lower()


def parse_sparsity(value: Any) -> float:
    """A fraction in [0, 1): the share of each weight matrix to zero."""
    allowed = "a number in [0, 1), e.g. sparsity=0.5 for 50%"
    if isinstance(value, bool):
        raise CompressionArgumentError(f"sparsity={value!r} is not a number; allowed: {allowed}")
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise CompressionArgumentError(f"sparsity={value!r} is not a number; allowed: {allowed}") from None
    if not 0.0 <= fraction < 1.0:
        raise CompressionArgumentError(f"sparsity={value!r} is out of range; allowed: {allowed}")
    return fraction


def parse_pattern(value: Any) -> NMPattern | None:
    """``unstructured`` (or None) -> None; ``N:M`` -> NMPattern with 0 < N < M."""
    allowed = "pattern=unstructured or pattern=N:M with 0 < N < M (N zeros per M weights, e.g. 2:4, 4:8, 1:2)"
    if value is None or (isinstance(value, str) and value.strip().lower() == "unstructured"):
        return None
    match = _PATTERN_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise CompressionArgumentError(f"pattern={value!r} is malformed; allowed: {allowed}")
    pruned, group = int(match.group(1)), int(match.group(2))
    if not 0 < pruned < group:
        raise CompressionArgumentError(f"pattern={value!r} is impossible; allowed: {allowed}")
    return NMPattern(pruned, group)


def _parse_int(arg: str, value: Any, minimum: int, allowed: str) -> int:
    """An integer >= ``minimum`` (lm-eval passes numbers already converted; strings are accepted too)."""
    if isinstance(value, bool):
        raise CompressionArgumentError(f"{arg}={value!r} is not an integer; allowed: {allowed}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        number = int(value) if isinstance(value, (int, str)) else None
    except ValueError:
        number = None
    if number is None:
        raise CompressionArgumentError(f"{arg}={value!r} is not an integer; allowed: {allowed}")
    if number < minimum:
        raise CompressionArgumentError(f"{arg}={value!r} is out of range; allowed: {allowed}")
    return number


def parse_bool(arg: str, value: Any) -> bool:
    """``true``/``false`` (lm-eval converts them to bools), also 1/0 and yes/no."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise CompressionArgumentError(f"{arg}={value!r} is not a boolean; allowed: {arg}=true|false")


def parse_percdamp(value: Any) -> float:
    """Hessian dampening as a fraction of the mean diagonal, in [0, 1]."""
    allowed = "a number in [0, 1], the dampening as a fraction of mean(diag H), e.g. percdamp=0.01"
    if isinstance(value, bool):
        raise CompressionArgumentError(f"percdamp={value!r} is not a number; allowed: {allowed}")
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        raise CompressionArgumentError(f"percdamp={value!r} is not a number; allowed: {allowed}") from None
    if not 0.0 <= fraction <= 1.0:
        raise CompressionArgumentError(f"percdamp={value!r} is out of range; allowed: {allowed}")
    return fraction


def parse_error_tokens(value: Any) -> int | None:
    """Tokens on which reconstruction errors are measured: a positive integer, or ``all`` (None)."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    return _parse_int(
        "error_tokens", value, 1, "a positive integer, or error_tokens=all to use every calibration token"
    )


def parse_bits(value: Any) -> int:
    """Bits per quantized weight, 2..8."""
    allowed = "an integer from 2 to 8, e.g. bits=4"
    bits = _parse_int("bits", value, 0, allowed)
    if not 2 <= bits <= 8:
        raise CompressionArgumentError(f"bits={value!r} is out of range; allowed: {allowed}")
    return bits


def parse_group_size(value: Any) -> int | None:
    """Input columns per quantization grid: a positive integer, or -1 (None) for one grid per row."""
    allowed = "a positive integer (input columns per scale), e.g. group_size=128, or -1 (per channel)"
    if isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).strip() == "-1":
        return None
    return _parse_int("group_size", value, 1, allowed)


def parse_quantizer(value: Any) -> str:
    """``gptq`` or ``rtn``: what quantizes Wanda's/magnitude's pruned weights."""
    if not isinstance(value, str) or value.strip().lower() not in QUANTIZERS:
        raise CompressionArgumentError(
            f"quantizer={value!r} is not a known quantizer; allowed: quantizer={'|'.join(QUANTIZERS)}"
        )
    return value.strip().lower()


def parse_calibration_source(value: Any) -> str:
    """``c4``, ``wikitext2``, ``random`` or an existing local text/JSONL file or directory.

    Only existence is checked here (cheap); reading the data happens in ``llmkick_models.engine.calibration``,
    still before the model loads.
    """
    import os

    allowed = (
        f"calibration={'|'.join(CALIBRATION_SOURCES)} or a local path: a text file, a .jsonl file of "
        '{"text": ...} records, or a directory of such files'
    )
    if not isinstance(value, str) or not value.strip():
        raise CompressionArgumentError(
            f"calibration={value!r} is not a source name or path; allowed: {allowed}"
        )
    name = value.strip()
    if name.lower() in CALIBRATION_SOURCES:
        return name.lower()
    path = os.path.expanduser(name)
    if not os.path.exists(path):
        raise CompressionArgumentError(
            f"calibration={value!r} is neither a known source nor an existing path; allowed: {allowed}"
        )
    return path


def build_calibration(
    method: str,
    calibration: Any = None,
    nsamples: Any = None,
    seqlen: Any = None,
    calibration_seed: Any = None,
    required: bool | None = None,
) -> CalibrationSpec | None:
    """The calibration a method will see, or None for a method that runs (and was asked to run) without.

    ``required`` overrides the registry's ``calibrated`` flag (magnitude followed by GPTQ needs data).
    """
    given = {"nsamples": nsamples, "seqlen": seqlen, "calibration_seed": calibration_seed}
    needs_data = METHODS[method].calibrated if required is None else required
    if calibration is None and not needs_data:
        for arg, value in given.items():
            if value is not None:
                raise CompressionArgumentError(
                    f"{arg}={value!r} needs calibration= with method={method}, which uses no calibration "
                    f"data unless calibration= is given (then only to measure reconstruction errors)"
                )
        return None
    defaults = CalibrationSpec()
    return CalibrationSpec(
        source=parse_calibration_source(calibration) if calibration is not None else defaults.source,
        nsamples=defaults.nsamples
        if nsamples is None
        else _parse_int("nsamples", nsamples, 1, "a positive integer, e.g. nsamples=128"),
        seqlen=defaults.seqlen
        if seqlen is None
        else _parse_int(
            "seqlen", seqlen, 2, "an integer >= 2 (tokens per calibration sample), e.g. seqlen=2048"
        ),
        seed=defaults.seed
        if calibration_seed is None
        else _parse_int(
            "calibration_seed", calibration_seed, 0, "a non-negative integer, e.g. calibration_seed=0"
        ),
    )


def build_spec(
    method: Any = None,
    sparsity: Any = None,
    pattern: Any = None,
    *,
    calibration: Any = None,
    nsamples: Any = None,
    seqlen: Any = None,
    calibration_seed: Any = None,
    percdamp: Any = None,
    blocksize: Any = None,
    true_sequential: Any = None,
    error_tokens: Any = None,
    bits: Any = None,
    group_size: Any = None,
    sym: Any = None,
    act_order: Any = None,
    static_groups: Any = None,
    quantizer: Any = None,
) -> CompressionSpec:
    """Validate compressed-hf's arguments together and return the spec they describe.

    Arguments left as None mean "not given"; giving one that the method does not use is an error rather
    than a silent no-op, so a sweep cannot record a compression that never happened.
    """
    name = parse_method(method)
    given = {
        "sparsity": sparsity,
        "pattern": pattern,
        "calibration": calibration,
        "nsamples": nsamples,
        "seqlen": seqlen,
        "calibration_seed": calibration_seed,
        "percdamp": percdamp,
        "blocksize": blocksize,
        "true_sequential": true_sequential,
        "error_tokens": error_tokens,
        "bits": bits,
        "group_size": group_size,
        "sym": sym,
        "act_order": act_order,
        "static_groups": static_groups,
        "quantizer": quantizer,
    }
    accepted = METHODS[name].accepts
    for arg, value in given.items():
        if value is not None and arg not in accepted:
            uses = ", ".join(sorted(accepted)) or "no compression arguments"
            raise CompressionArgumentError(
                f"{arg}={value!r} does not apply to method={name} (it takes {uses}); "
                f"choose a method that uses it: "
                + "|".join(m for m, info in METHODS.items() if arg in info.accepts)
            )
    if name == "none":
        return CompressionSpec()

    defaults = CompressionSpec()
    quantization = _quantization_options(name, given)
    options = {
        **quantization,
        "calibration": build_calibration(
            name,
            calibration,
            nsamples,
            seqlen,
            calibration_seed,
            required=True if quantization.get("quantizer") == "gptq" else None,
        ),
        "percdamp": defaults.percdamp if percdamp is None else parse_percdamp(percdamp),
        "blocksize": defaults.blocksize
        if blocksize is None
        else _parse_int(
            "blocksize", blocksize, 1, "a positive integer (columns per block), e.g. blocksize=128"
        ),
        "true_sequential": defaults.true_sequential
        if true_sequential is None
        else parse_bool("true_sequential", true_sequential),
        "error_tokens": defaults.error_tokens if error_tokens is None else parse_error_tokens(error_tokens),
    }

    nm = parse_pattern(pattern)
    if nm is not None:
        if sparsity is not None and abs(parse_sparsity(sparsity) - nm.sparsity) > 1e-9:
            raise CompressionArgumentError(
                f"sparsity={sparsity!r} conflicts with pattern={nm}, which fixes sparsity to "
                f"{nm.pruned}/{nm.group} = {nm.sparsity:g}; drop sparsity= or use pattern=unstructured"
            )
        # Only SparseGPT chooses N:M groups inside its column blocks (GPTQ after pruning keeps a fixed mask).
        if name == "sparsegpt" and options["blocksize"] % nm.group:
            raise CompressionArgumentError(
                f"blocksize={options['blocksize']} must be a multiple of M={nm.group} with pattern={nm}, "
                f"so that no N:M group straddles two column blocks; e.g. blocksize=128"
            )
        return CompressionSpec(method=name, sparsity=nm.sparsity, pattern=nm, **options)
    if "sparsity" in accepted and sparsity is None:
        raise CompressionArgumentError(
            f"method={name} needs sparsity= (a number in [0, 1), e.g. 0.5) or pattern=N:M (e.g. 2:4)"
        )
    return CompressionSpec(
        method=name, sparsity=parse_sparsity(sparsity) if sparsity is not None else 0.0, **options
    )


def _quantization_options(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the quantizer arguments of ``method`` together; the ``CompressionSpec`` fields they set.

    gptq/rtn need ``bits``; the pruning methods quantize only when ``bits`` is given, and then the other
    quantizer options (and, for Wanda/magnitude, GPTQ's ``percdamp``/``blocksize``) mean something.
    """
    accepted = METHODS[method].accepts
    if "bits" not in accepted:
        return {}
    quantizes_only = "sparsity" not in accepted  # gptq, rtn
    if given["bits"] is None:
        if quantizes_only:
            raise CompressionArgumentError(
                f"method={method} needs bits= (an integer from 2 to 8, e.g. bits=4)"
            )
        gptq_after = ("percdamp", "blocksize") if "quantizer" in accepted else ()
        for arg in (*_NEEDS_BITS, *gptq_after):
            if given.get(arg) is not None:
                raise CompressionArgumentError(
                    f"{arg}={given[arg]!r} needs bits= with method={method}: it is a quantizer option and "
                    f"method={method} only quantizes when bits= is given (e.g. bits=4)"
                )
        return {}
    defaults = CompressionSpec()
    options: dict[str, Any] = {
        "bits": parse_bits(given["bits"]),
        "group_size": defaults.group_size
        if given["group_size"] is None
        else parse_group_size(given["group_size"]),
        "sym": defaults.sym if given["sym"] is None else parse_bool("sym", given["sym"]),
    }
    if "act_order" in accepted:
        options["act_order"] = given["act_order"] is not None and parse_bool("act_order", given["act_order"])
        options["static_groups"] = given["static_groups"] is not None and parse_bool(
            "static_groups", given["static_groups"]
        )
        if options["static_groups"] and options["group_size"] is None:
            raise CompressionArgumentError(
                "static_groups=true needs groups, but group_size=-1 quantizes per channel; give a "
                "group_size (e.g. 128) or drop static_groups"
            )
    if "quantizer" in accepted:
        # Wanda is calibrated anyway, so GPTQ costs it nothing extra; magnitude stays calibration-free.
        default = "gptq" if METHODS[method].calibrated else "rtn"
        chosen = default if given["quantizer"] is None else parse_quantizer(given["quantizer"])
        options["quantizer"] = chosen
        if chosen == "rtn":
            for arg in ("act_order", "static_groups", "percdamp", "blocksize"):
                if given.get(arg) is not None:
                    raise CompressionArgumentError(
                        f"{arg}={given[arg]!r} is a GPTQ option, but method={method} quantizes with "
                        f"quantizer=rtn here; use quantizer=gptq or drop {arg}="
                    )
    return options


def reject_misspelled_args(extra_args: Iterable[str], known_elsewhere: Iterable[str]) -> None:
    """Refuse extra model_args that look like a misspelled compression argument.

    Extra arguments normally flow to ``from_pretrained``, which stores unknown names on the model config
    without complaint; ``sparsty=0.5`` would then evaluate a dense model labelled as pruned.
    """
    known = set(known_elsewhere)
    for arg in extra_args:
        if arg in known:
            continue
        close = difflib.get_close_matches(arg, COMPRESSION_ARGS, n=1, cutoff=0.75)
        if close:
            raise CompressionArgumentError(
                f"unknown model_arg {arg!r}: did you mean {close[0]!r}? "
                f"compressed-hf's own arguments are: {', '.join(COMPRESSION_ARGS)}"
            )


def reject_incompatible_load_args(spec: CompressionSpec, load_args: Mapping[str, Any]) -> None:
    """Refuse HFLM options whose loaded model cannot be compressed by us."""
    if spec.is_dense:
        return
    for arg, why in INCOMPATIBLE_LOAD_ARGS.items():
        if load_args.get(arg):
            raise CompressionArgumentError(
                f"{arg}={load_args[arg]!r} cannot be combined with method={spec.method}: {why}"
            )
