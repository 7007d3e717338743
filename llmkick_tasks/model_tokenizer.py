"""The evaluated model's tokenizer and context length, found from lm-eval's model arguments.

lm-eval hands every task's metadata (``custom_dataset`` keyword arguments, ``config.metadata``) the
``--model_args`` merged with ``--metadata``, so a task can load the model's own tokenizer without holding
the model: from ``tokenizer=``, else ``pretrained=``, else ``model=`` (the keys lm-eval's backends use:
``hf``/``vllm``/``compressed-hf`` take ``pretrained``, the API backends ``model`` and ``tokenizer``).
Used by the TriviaQA open-book evidence budget and by the judged tasks' own chat formatting.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping


log = logging.getLogger(__name__)

TOKENIZER_KEYS = ("tokenizer", "pretrained", "model")  # model args that name a tokenizer, by backend
LOAD_OPTIONS = ("revision", "trust_remote_code", "gguf_file")  # model args that change what is loaded


def name_of(value: Any) -> str | None:
    """A model / tokenizer name or path from a model argument (a string, or a loaded model object)."""
    if isinstance(value, str):
        return value or None
    config = getattr(value, "config", None)  # e.g. a PreTrainedModel given as pretrained= from Python
    return getattr(config, "_name_or_path", None) or getattr(value, "name_or_path", None) or None


def load_options(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``from_pretrained`` options among the model args (revision, remote code, GGUF file)."""
    return {key: metadata[key] for key in LOAD_OPTIONS if key in metadata}


def load_tokenizer(metadata: Mapping[str, Any], purpose: str) -> Any:
    """The tokenizer of the model named in ``metadata``, or ``None`` when none is named or loadable.

    ``purpose`` names the caller in the warning logged when loading fails (callers have a fallback).
    """
    import transformers

    given = next((metadata[key] for key in TOKENIZER_KEYS if metadata.get(key)), None)
    if given is None:
        return None
    if isinstance(given, transformers.PreTrainedTokenizerBase):  # a tokenizer object (Python API)
        return given
    source = name_of(given)
    if source is None:
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(source, **load_options(metadata))
    except Exception as error:  # noqa: BLE001  any loading failure means: no tokenizer, the caller falls back
        log.warning("%s: cannot load a tokenizer from %r (%s)", purpose, source, error)
        return None


def context_length(metadata: Mapping[str, Any], tokenizer: Any) -> int | None:
    """The model's context length by lm-eval's own rule (``resolve_max_length``, as ``HFLM`` does).

    From the config of ``pretrained`` / ``model`` (the model, not a separately named tokenizer), else the
    tokenizer's ``model_max_length``; ``max_length=`` in the model args is left to the caller.
    """
    import transformers
    from lm_eval.models.utils import resolve_max_length

    model = next((name_of(metadata[key]) for key in ("pretrained", "model") if metadata.get(key)), None)
    config = getattr(metadata.get("pretrained"), "config", None)
    if config is None and model is not None:
        try:
            config = transformers.AutoConfig.from_pretrained(model, **load_options(metadata))
        except Exception:  # noqa: BLE001  an API model name, a tokenizer-only repository: the tokenizer decides
            config = None
    return resolve_max_length(config, tokenizer)
