"""Save an LLM.int8() model as transformers' bitsandbytes 8-bit checkpoint (cache entries and export).

The int8 codes and their per-row absmax scales are stored as bitsandbytes writes them (``weight`` int8,
``SCB`` float32), with ``quantization_config`` (``load_in_8bit``, ``llm_int8_threshold``, the linears left
dense) in config.json, so ``from_pretrained`` (and ``lm_eval --model hf``) rebuilds the very same
``Linear8bitLt`` modules: nothing is quantized again on load.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from llmkick_models.engine.model_layout import decoder_linears, is_linear
from llmkick_models.engine.spec import CompressionSpec

#: ``llmkick compress --format`` of LLM.int8() models.
INT8_FORMAT = "bitsandbytes"


def is_int8_spec(spec: CompressionSpec) -> bool:
    """Whether ``spec`` builds run-time LLM.int8() modules (saved only in the bitsandbytes format)."""
    return spec.method == "llm_int8"


def save_int8_checkpoint(model: nn.Module, folder: Path, spec: CompressionSpec) -> None:
    """Write ``model`` (its decoder linears ``Linear8bitLt``) to ``folder`` in transformers' bitsandbytes
    8-bit serialization; a model that transformers itself loaded that way (a cache hit) is saved as is."""
    if not getattr(model, "is_quantized", False):
        from transformers import BitsAndBytesConfig

        decoder = {t.name for t in decoder_linears(model)}
        # Everything else stays dense on reload: name it, rather than rely on transformers' default guess.
        dense = [name for name, module in model.named_modules() if is_linear(module) and name not in decoder]
        model.config.quantization_config = BitsAndBytesConfig(
            load_in_8bit=True,
            llm_int8_threshold=spec.option("int8_threshold"),
            llm_int8_has_fp16_weight=False,
            llm_int8_skip_modules=dense,
        )
    model.save_pretrained(folder)


def stored_int8_config(folder: Path) -> object:
    """The ``BitsAndBytesConfig`` saved in ``folder``'s config.json, to pass to ``from_pretrained`` (HFLM
    passes ``quantization_config=None`` otherwise, which makes transformers ignore the saved one)."""
    from transformers import AutoConfig, BitsAndBytesConfig

    saved = getattr(AutoConfig.from_pretrained(folder), "quantization_config", None)
    if not isinstance(saved, dict) or saved.get("quant_method") != "bitsandbytes":
        raise ValueError(f"{folder}/config.json has no bitsandbytes quantization_config")
    return BitsAndBytesConfig.from_dict(saved)
