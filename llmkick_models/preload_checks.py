"""compressed-hf's model_args checked before any weight loads: names, values, dtypes and layer widths.

One entry point, :func:`check_model_args`, used by compressed-hf itself and by the sweep's pre-flight, so a
sweep refuses exactly what a point would.  The layer widths come from the model's config alone: the model is
built on the ``meta`` device (no memory, no weights) and its decoder linears are found and checked exactly as
after loading.  Whatever cannot be built that way (an unreadable config, an architecture transformers cannot
instantiate from its config) is left to the same check after loading.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from llmkick_models.arguments import (
    reject_foreign_names,
    reject_incompatible_load_args,
    reject_misspelled_args,
)
from llmkick_models.engine.compress import check_shapes
from llmkick_models.engine.methods import build_spec, option_names
from llmkick_models.engine.model_layout import TargetLinear, decoder_linears
from llmkick_models.engine.options import CompressionArgumentError
from llmkick_models.engine.spec import CompressionSpec

log = logging.getLogger(__name__)

#: The dtype names HFLM resolves (``getattr(torch, name)``) that name a floating-point type for weights.
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
}
_DTYPES_ALLOWED = "float16 (half), bfloat16, float32 (float), float64 (double)"
#: HFLM's dtype arguments; only ``dtype`` (the weights') may be ``auto`` (the checkpoint's own).
DTYPE_ARGS: dict[str, bool] = {"dtype": True, "softmax_dtype": False, "mixed_precision_dtype": False}
#: ``from_pretrained`` options that change which config (and so which shapes) a checkpoint has.
_CONFIG_OPTIONS = ("revision", "subfolder", "trust_remote_code", "gguf_file", "cache_dir")
#: Config fields whose value is a layer width (named in errors as where a width comes from).
_WIDTH_FIELD_HINTS = ("size", "dim", "embd", "inner", "d_model", "d_ff")


@dataclass
class CheckedArgs:
    """compressed-hf's model_args after every pre-load check."""

    spec: CompressionSpec
    #: what goes on to HFLM / ``from_pretrained`` (the compression options removed)
    load_args: dict[str, Any]
    #: the model's config when it was read for a check (None: not needed, or unreadable)
    config: Any = None


def check_model_args(pretrained: Any, args: Mapping[str, Any], hflm_args: Iterable[str]) -> CheckedArgs:
    """Every check compressed-hf runs on its model_args before anything loads; raises
    :class:`CompressionArgumentError` naming the argument and what is allowed.

    ``args`` are the model_args without ``pretrained`` and the cache switches; ``pretrained`` is a model
    id / folder, or an already-loaded model (then its own layers are checked).
    """
    reject_foreign_names(args)
    own = {name: value for name, value in args.items() if name in option_names()}
    load_args = {name: value for name, value in args.items() if name not in own}
    reject_misspelled_args(load_args, hflm_args)
    spec = build_spec(**own)
    reject_incompatible_load_args(spec, load_args)
    check_dtypes(load_args)
    config = check_widths(spec, pretrained, load_args) if _needs_widths(spec) else None
    if config is None and spec.calibration is not None and isinstance(pretrained, str):
        config = read_config(pretrained, load_args)  # its hidden size bounds the calibration memory
    return CheckedArgs(spec, load_args, config)


def check_dtypes(load_args: Mapping[str, Any]) -> None:
    """Refuse a ``dtype`` / ``softmax_dtype`` / ``mixed_precision_dtype`` that HFLM would fail on only after
    (or while) loading the model."""
    for arg, auto_allowed in DTYPE_ARGS.items():
        value = load_args.get(arg)
        if value is None or (isinstance(value, torch.dtype) and value in DTYPES.values()):
            continue
        if isinstance(value, str) and (value in DTYPES or (auto_allowed and value == "auto")):
            continue
        allowed = ("auto (the checkpoint's own), " if auto_allowed else "") + _DTYPES_ALLOWED
        hint = ""
        if isinstance(value, str) and value.startswith("torch.") and value[len("torch.") :] in DTYPES:
            hint = f"; write {arg}={value[len('torch.') :]} (without torch.)"
        raise CompressionArgumentError(
            f"{arg}={value!r} is not a dtype compressed-hf can use; allowed: {allowed}{hint}"
        )


def _needs_widths(spec: CompressionSpec) -> bool:
    return spec.pattern is not None or (spec.bits is not None and spec.group_size is not None)


def check_widths(spec: CompressionSpec, pretrained: Any, load_args: Mapping[str, Any]) -> Any:
    """Refuse an N:M ``pattern`` or a ``group_size`` that some decoder linear's input width does not take,
    before the weights load; returns the config it read (None when unreadable: the check after loading
    then decides)."""
    if isinstance(pretrained, str):
        found = _meta_linears(pretrained, *(_hashable(load_args.get(k)) for k in _CONFIG_OPTIONS))
        if found is None:
            return None
        config, targets = found
    elif isinstance(pretrained, torch.nn.Module):  # an already-loaded model: its own layers
        config, targets = getattr(pretrained, "config", None), decoder_linears(pretrained)
    else:
        return None
    for target in targets:
        try:
            check_shapes([target], spec)
        except ValueError as error:
            where = _width_fields(config, target.shape[1])
            origin = f"model config: {where}; " if where else ""
            raise CompressionArgumentError(f"{error} ({origin}checked before loading the weights)") from None
    return config


def read_config(pretrained: str, load_args: Mapping[str, Any]) -> Any:
    """The model's config alone (cheap), or None when it cannot be read (the load reports that properly)."""
    options = {k: load_args[k] for k in _CONFIG_OPTIONS if load_args.get(k) is not None}
    try:
        return transformers.AutoConfig.from_pretrained(pretrained, **options)
    except Exception:
        return None


def hidden_size(config: Any) -> int | None:
    """The model's hidden size from its config (None when unknown)."""
    if config is None:
        return None
    config = getattr(config, "text_config", None) or config
    return getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, bool, int, type(None))) else repr(value)


@functools.lru_cache(maxsize=8)  # a sweep checks many points of one model
def _meta_linears(
    pretrained: str, revision: Any, subfolder: Any, trust_remote_code: Any, gguf_file: Any, cache_dir: Any
) -> tuple[Any, list[TargetLinear]] | None:
    """The config and the decoder linears of the model built from it on the meta device, or None."""
    options = dict(
        zip(_CONFIG_OPTIONS, (revision, subfolder, trust_remote_code, gguf_file, cache_dir), strict=True)
    )
    config = read_config(pretrained, options)
    if config is None:
        return None
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(
                config, trust_remote_code=bool(trust_remote_code)
            )
        return config, decoder_linears(model)
    except Exception as error:
        log.debug("llmkick: layer widths of %s not checked before loading (%r)", pretrained, error)
        return None


def _width_fields(config: Any, width: int) -> str:
    """Which config field(s) hold ``width``: e.g. ``hidden_size=640``, ``num_attention_heads x head_dim``."""
    if config is None:
        return ""
    found: list[str] = []
    for candidate in (getattr(config, "text_config", None), config):
        if candidate is None:
            continue
        fields = candidate.to_dict()
        for name, value in fields.items():
            if (
                value == width
                and isinstance(value, int)
                and name != "vocab_size"
                and any(h in name for h in _WIDTH_FIELD_HINTS)
            ):
                found.append(f"{name}={value}")
        heads = fields.get("num_attention_heads") or fields.get("n_head")
        head_dim = fields.get("head_dim")
        if not found and isinstance(heads, int) and isinstance(head_dim, int) and heads * head_dim == width:
            found.append(f"num_attention_heads x head_dim = {heads} x {head_dim}")
        if found:
            break
    return ", ".join(dict.fromkeys(found))
