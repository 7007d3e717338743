"""Turn a GGUF checkpoint into a plain Hugging Face folder (dequantized float weights).

transformers can read GGUF (``from_pretrained(dir, gguf_file=...)``, needs the ``gguf`` package) but takes
about a minute to dequantize on every load, and ``save_pretrained`` refuses the result because the config
still carries the GGUF quantization marker.  Converting once gives a folder that loads in seconds with
``pretrained=<folder>``; the weights are exactly the dequantized GGUF values.

The GGUF also says whether the tokenizer prepends BOS / appends EOS (``tokenizer.ggml.add_bos_token``,
``add_eos_token``).  Some transformers releases drop that when they rebuild the tokenizer (5.19 writes a
Gemma-3 tokenizer without BOS: every generated answer then comes from a prompt the model was never trained
on, FreebaseQA 0.1% instead of 8%, while perplexity, which adds its own prefix token, does not move), so the
converted tokenizer is checked against the GGUF's flags, mended if it disagrees, and checked again after
saving.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers

from llmkick_tasks.errors import UserFileNotFoundError

log = logging.getLogger(__name__)

ADD_BOS_KEY = "tokenizer.ggml.add_bos_token"
ADD_EOS_KEY = "tokenizer.ggml.add_eos_token"
_PROBE = "Hello world"


def gguf_special_token_flags(gguf_path: Path) -> dict[str, bool | None]:
    """``{"add_bos_token": ..., "add_eos_token": ...}`` as the GGUF metadata says (None: not said)."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)
    flags: dict[str, bool | None] = {}
    for name, key in (("add_bos_token", ADD_BOS_KEY), ("add_eos_token", ADD_EOS_KEY)):
        field = reader.get_field(key)
        flags[name] = None if field is None else bool(field.contents())
    return flags


def special_token_mismatches(
    tokenizer: transformers.PreTrainedTokenizerBase, flags: dict[str, bool | None]
) -> list[str]:
    """What the tokenizer does differently from ``flags`` on a probe text (empty when they agree)."""
    ids = tokenizer(_PROBE)["input_ids"]
    adds = {
        "add_bos_token": tokenizer.bos_token_id is not None
        and bool(ids)
        and ids[0] == tokenizer.bos_token_id,
        "add_eos_token": tokenizer.eos_token_id is not None
        and bool(ids)
        and ids[-1] == tokenizer.eos_token_id,
    }
    return [
        f"{name}={wanted} but the tokenizer {'does not add' if wanted else 'adds'} it"
        for name, wanted in flags.items()
        if wanted is not None and adds[name] != wanted
    ]


def align_special_tokens(
    tokenizer: transformers.PreTrainedTokenizerBase, flags: dict[str, bool | None], source: str
) -> None:
    """Make ``tokenizer`` add BOS/EOS exactly as ``flags`` say; raise if it cannot be made to."""
    problems = special_token_mismatches(tokenizer, flags)
    if not problems:
        return
    log.warning("%s: the tokenizer transformers built disagrees with the GGUF (%s); setting %s", source,
                "; ".join(problems), flags)  # fmt: skip
    for name, wanted in flags.items():
        if wanted is not None:
            setattr(tokenizer, name, wanted)
    still = special_token_mismatches(tokenizer, flags)
    if still:
        raise RuntimeError(f"{source}: cannot make the tokenizer follow the GGUF's {'; '.join(still)}")


def convert_gguf(gguf_path: Path, output: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Load ``gguf_path`` (a ``.gguf`` file) and save model + tokenizer as a HF folder at ``output``."""
    if not gguf_path.is_file() or gguf_path.suffix != ".gguf":
        raise UserFileNotFoundError(f"gguf_path={str(gguf_path)!r} is not a .gguf file")
    folder, name = gguf_path.parent, gguf_path.name
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    flags = gguf_special_token_flags(gguf_path)
    align_special_tokens(tokenizer, flags, str(gguf_path))
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized floats now
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    saved = special_token_mismatches(transformers.AutoTokenizer.from_pretrained(output), flags)
    if saved:  # the flags must survive the round trip, or every later load is wrong again
        raise RuntimeError(f"{output}: the saved tokenizer does not follow the GGUF's {'; '.join(saved)}")
    return output
