"""Turn a GGUF checkpoint into a plain Hugging Face folder (dequantized float weights).

transformers can read GGUF (``from_pretrained(dir, gguf_file=...)``, needs the ``gguf`` package) but takes
about a minute to dequantize on every load, and ``save_pretrained`` refuses the result because the config
still carries the GGUF quantization marker.  Converting once gives a folder that loads in seconds with
``pretrained=<folder>``; the weights are exactly the dequantized GGUF values.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers


def convert_gguf(gguf_path: Path, output: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Load ``gguf_path`` (a ``.gguf`` file) and save model + tokenizer as a HF folder at ``output``."""
    if not gguf_path.is_file() or gguf_path.suffix != ".gguf":
        raise FileNotFoundError(f"gguf_path={str(gguf_path)!r} is not a .gguf file")
    folder, name = gguf_path.parent, gguf_path.name
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized floats now
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
