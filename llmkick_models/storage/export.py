"""Save a quantized model in a packed format that serving engines load (compressed-tensors / vLLM).

compressed-hf evaluates fake-quantized weights (dequantized floats); ``llmkick compress --format
compressed-tensors`` instead stores the integer codes with their scales (and zero points when asymmetric):
symmetric grids packed into int32, in the ``pack-quantized`` compressed-tensors format that vLLM serves with
its W4A16/W8A16 kernels, asymmetric ones (AWQ's default) one code per int8 in ``naive-quantized``, because
transformers cannot load back the zero points that ``pack-quantized`` packs (a shape mismatch on reload).
transformers loads both back (``from_pretrained`` decompresses them).

Why compressed-tensors (the optional ``[export]`` extra): it is the format of vLLM's own quantization
toolkit (llm-compressor), maintained alongside vLLM, pure Python on CPU, and it needs nothing but the
scales we already hold.  auto-gptq, the original choice, is archived, fails to import under transformers 5
and refuses to quantize without CUDA; GPTQModel would pull in a large native build for the same result.

The packed weights are the very grids the quantizer used (``CompressionReport.quantized``), so the export
exists only in the process that quantized the model; a cache hit has no grids and is refused with a
message (the CLI turns the cache off for this format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.quantizer import QuantizedWeight
from llmkick_models.engine.report import CompressionReport

INSTALL_HINT = "pip install 'llmkick[export]' (or: pip install compressed-tensors)"


class ExportError(ValueError):
    """The model cannot be saved in the requested packed format."""


def _import_compressed_tensors() -> Any:
    try:
        import compressed_tensors
    except ImportError as error:
        raise ExportError(
            f"--format compressed-tensors needs the compressed-tensors library: {INSTALL_HINT}"
        ) from error
    return compressed_tensors


def _quantization_args(grid: QuantizedWeight, act_order: bool) -> Any:
    from compressed_tensors.quantization import QuantizationArgs

    config = grid.config
    grouped = config.group_size is not None
    return QuantizationArgs(
        num_bits=config.bits,
        type="int",
        symmetric=config.sym,
        strategy="group" if grouped else "channel",
        group_size=config.group_size if grouped else None,
        # "weight" = GPTQ processed columns in activation order but groups stay contiguous (static groups).
        actorder="weight" if act_order and grouped else None,
    )


def storage_format(grid: QuantizedWeight) -> str:
    """``pack-quantized`` for symmetric grids; ``naive-quantized`` (int8 codes) for asymmetric ones, whose
    packed zero points transformers cannot load back."""
    return "pack-quantized" if grid.config.sym else "naive-quantized"


def export_compressed_tensors(model: nn.Module, report: CompressionReport, output: Path) -> Path:
    """Pack ``model``'s quantized decoder linears and save the model under ``output`` (HF folder).

    The model is modified (its quantized linears become packed modules); save the tokenizer separately.
    """
    _import_compressed_tensors()
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )

    spec = report.spec
    if spec.bits is None:
        raise ExportError(
            f"--format compressed-tensors packs quantized weights, but method={spec.method} was not asked to "
            f"quantize (give bits=); save pruned models with --format fake"
        )
    targets = {t.name: t for t in decoder_linears(model)}
    grids: dict[str, QuantizedWeight] = report.quantized
    missing = [name for name in targets if name not in grids]
    if missing:
        raise ExportError(
            f"no quantization grid for {missing[0]} (and {len(missing) - 1} more): packed export needs the "
            f"grids of the run that quantized the model, not a model loaded from the llmkick cache"
        )
    for name, target in targets.items():
        if not isinstance(target.module, nn.Linear):
            raise ExportError(
                f"{name} is a {type(target.module).__name__}, not nn.Linear: compressed-tensors packs only "
                f"nn.Linear layers (GPT-2 style Conv1D models cannot be exported packed); use --format fake"
            )
        if grids[name].g_idx is not None:
            raise ExportError(
                f"{name}: act_order with dynamic groups scatters each group's columns (a g_idx), which "
                f"compressed-tensors no longer stores and vLLM no longer serves; re-run with "
                f"static_groups=true (or group_size=-1) to export"
            )

    act_order = spec.act_order
    first = next(iter(grids[name] for name in targets))
    scheme = QuantizationScheme(
        targets=["Linear"], weights=_quantization_args(first, act_order), format=storage_format(first)
    )
    # Linears outside the decoder blocks (lm_head, ...) stay dense, as in compressed-hf.
    ignore = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in targets]
    apply_quantization_config(
        model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=ignore), show_progress=False
    )
    offset = 1 << (first.config.bits - 1)  # our levels are 0..2^b−1; compressed-tensors' are signed
    with torch.no_grad():
        for name, target in targets.items():
            module, grid = target.module, grids[name]
            module.weight_scale.data.copy_(grid.scale.to(module.weight_scale.dtype))
            if hasattr(module, "weight_zero_point"):  # our levels 0..2^b−1 and zero, shifted to signed
                zero_point = grid.zero - offset
                module.weight_zero_point.data.copy_(zero_point.round().to(module.weight_zero_point.dtype))
    compressor = ModelCompressor.from_pretrained_model(model)  # the format set in the scheme
    compressor.compress_model(model)
    model.save_pretrained(output)
    compressor.update_config(str(output))
    return output
