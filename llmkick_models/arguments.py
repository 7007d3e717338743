"""compressed-hf's own model_args: which they are, and the checks that run before anything loads.

The compression options themselves are declared by the methods (``engine.options``, ``engine.methods``);
this module adds what belongs to the lm-eval adapter: the cache switches, the names other tools use for
the same options, misspellings, load options that cannot be combined with compressing, and a calibration
set too large for memory.  Every error names the argument, the value given and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

from llmkick_models.engine.methods import (
    METHODS,
    build_spec,
    method_class,
    option_names,
)
from llmkick_models.engine.options import REQUIRED, CompressionArgumentError, Option, boolean, parse_pattern
from llmkick_models.engine.spec import CompressionSpec

__all__ = [
    "CompressionArgumentError",
    "build_spec",
    "compression_args",
    "parse_pattern",
    "reject_foreign_names",
    "reject_incompatible_load_args",
    "reject_misspelled_args",
]

#: compressed-hf's arguments that are about storage, not about the compression.
CACHE_ARGS: tuple[str, ...] = ("cache", "llmkick_cache_dir")
parse_cache_flag = boolean("cache")

#: Names that llm-compressor, GPTQModel / AutoGPTQ or SparseML users bring for our options.  Refused (not
#: aliased) so that one spelling exists per option; the error says which one to use.
FOREIGN_NAMES: dict[str, str] = {
    "mask_structure": "pattern",
    "sparsity_structure": "pattern",
    "num_bits": "bits",
    "wbits": "bits",
    "w_bit": "bits",
    "dampening_frac": "percdamp",
    "damp_percent": "percdamp",
    "desc_act": "act_order",
    "actorder": "act_order",
    "block_size": "blocksize",
    "symmetric": "sym",
    "groupsize": "group_size",
    "q_group_size": "group_size",
    "num_calibration_samples": "nsamples",
    "max_seq_length": "seqlen",
    "calib_dataset": "calibration",
    "dataset": "calibration",
}

#: HFLM / ``from_pretrained`` options that cannot be combined with compressing on load.
INCOMPATIBLE_LOAD_ARGS: dict[str, str] = {
    "peft": "adapters wrap the linears; merge the adapter into the model first, then compress",
    "autogptq": "the checkpoint is already quantized",
    "gptqmodel": "the checkpoint is already quantized",
    "load_in_4bit": "bitsandbytes layers hold packed weights that cannot be pruned",
}
#: Load options refused whatever the method, with what to use instead.
REPLACED_LOAD_ARGS: dict[str, str] = {
    "load_in_8bit": "LLM.int8() is method=llm_int8 (outlier threshold: int8_threshold=, default 6.0), which "
    "compressed-hf builds, measures and caches itself; for transformers' own 8-bit loading use --model hf",
}


def compression_args() -> tuple[str, ...]:
    """Every model_arg that compressed-hf takes for itself (the rest go to HFLM / ``from_pretrained``)."""
    return (*option_names(), *CACHE_ARGS)


def reject_foreign_names(args: Iterable[str]) -> None:
    """Refuse other tools' names for our options, naming the llmkick one.

    Checked first: passed through, ``from_pretrained`` would fail on them only after resolving (for a Hub
    model: downloading) the checkpoint, or store them on the config without effect.
    """
    for arg in args:
        if arg in FOREIGN_NAMES:
            ours = FOREIGN_NAMES[arg]
            raise CompressionArgumentError(
                f"unknown model_arg {arg!r}: compressed-hf calls this option {ours!r} "
                f"(e.g. {ours}={_example(ours)}); see the README's model_args table"
            )


def _example(arg: str) -> str:
    return {"pattern": "2:4", "bits": "4", "percdamp": "0.01", "act_order": "true", "blocksize": "128",
            "sym": "true", "group_size": "128", "nsamples": "128", "seqlen": "2048",
            "calibration": "c4"}.get(arg, "...")  # fmt: skip


def reject_misspelled_args(extra_args: Iterable[str], known_elsewhere: Iterable[str]) -> None:
    """Refuse extra model_args that look like a misspelled compression argument.

    Extra arguments normally flow to ``from_pretrained``, which stores unknown names on the model config
    without complaint; ``sparsty=0.5`` would then evaluate a dense model labelled as pruned.
    """
    known = set(known_elsewhere)
    ours = compression_args()
    for arg in extra_args:
        if arg in known:
            continue
        close = difflib.get_close_matches(arg, ours, n=1, cutoff=0.75)
        if close:
            raise CompressionArgumentError(
                f"unknown model_arg {arg!r}: did you mean {close[0]!r}? "
                f"compressed-hf's own arguments are: {', '.join(ours)}"
            )


def reject_incompatible_load_args(spec: CompressionSpec, load_args: Mapping[str, Any]) -> None:
    """Refuse HFLM options whose loaded model cannot be compressed by us."""
    for arg, instead in REPLACED_LOAD_ARGS.items():
        if load_args.get(arg):
            raise CompressionArgumentError(
                f"{arg}={load_args[arg]!r} cannot be used with compressed-hf (method={spec.method}): "
                f"{instead}"
            )
    if spec.is_dense:
        return
    for arg, why in INCOMPATIBLE_LOAD_ARGS.items():
        if load_args.get(arg):
            raise CompressionArgumentError(
                f"{arg}={load_args[arg]!r} cannot be combined with method={spec.method}: {why}"
            )


#: Bytes per calibration token held at once by the driver, per unit of hidden size: the block's fp32
#: inputs (updated in place) plus its outputs for one batch are the bulk; x2 leaves room for the rest.
_BYTES_PER_TOKEN_AND_HIDDEN = 4 * 2


def check_calibration_memory(
    spec: CompressionSpec, hidden_size: int | None, available: int | None = None
) -> None:
    """Refuse a calibration set whose activations alone would not fit in memory, naming nsamples/seqlen.

    Cheap and before any load: ``hidden_size`` comes from the model's config (None: unknown, skip).
    """
    calibration = spec.calibration
    if calibration is None or not hidden_size:
        return
    available = _available_memory() if available is None else available
    if available is None:
        return
    needed = calibration.nsamples * calibration.seqlen * hidden_size * _BYTES_PER_TOKEN_AND_HIDDEN
    if needed > available:
        raise CompressionArgumentError(
            f"nsamples={calibration.nsamples} x seqlen={calibration.seqlen} calibration tokens need about "
            f"{needed / 2**30:.1f} GiB of activations (hidden size {hidden_size}) but "
            f"{available / 2**30:.1f} GiB are available; lower nsamples= or seqlen= "
            f"(the paper used nsamples=128, seqlen=2048)"
        )


def _available_memory() -> int | None:
    """Physical memory available to this process now (Linux/macOS), or None when unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def model_args_table() -> str:
    """The README's table of compression model_args, generated from the methods' declarations.

    A method marked "(with bits=)" takes the option only when it also quantizes; one whose option of that
    name allows other values than the row's says which.
    """
    rows: dict[str, tuple[Option, list[str], list[str]]] = {}
    own_defaults: dict[str, list[str]] = {}  # methods whose default differs from the row's first one
    for name in METHODS:
        implementation = method_class(name)
        for option in implementation.accepted_options():
            first, takers, requiring = rows.setdefault(option.name, (option, [], []))
            quantizing_only = option in implementation.quantizer_options and option.name != "bits"
            taker = f"{name} (with bits=)" if quantizing_only else name
            if option.allowed != rows[option.name][0].allowed:  # e.g. llm_int8's bits: 8 only
                taker += f" ({option.allowed}, default {_spelled(option.default)})"
            takers.append(taker)
            if option.default is REQUIRED:
                requiring.append(name)
            elif (
                option.default != first.default
                and first.default is not REQUIRED
                and option.allowed == first.allowed
            ):
                own_defaults.setdefault(option.name, []).append(f"{name}: {_spelled(option.default)}")
    lines = [
        "| model_arg | methods | default | allowed | meaning |",
        "|---|---|---|---|---|",
        f"| `method` | | `none` | {', '.join(f'`{m}`' for m in METHODS)} | the compression to apply |",
    ]
    for option, takers, requiring in rows.values():
        default = _spelled(option.default) if option.default is not REQUIRED else "—"
        if requiring:
            default = f"required by {', '.join(requiring)}"
        if option.name in own_defaults:
            default = f"{default}; {', '.join(own_defaults[option.name])}"
        lines.append(
            f"| `{option.name}` | {', '.join(takers)} | {default} | {option.allowed} | {option.help} |"
        )
    return "\n".join(lines)


def _spelled(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"
