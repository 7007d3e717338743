"""``compressed-vllm``: compressed-hf's compression and model cache, evaluated by lm-eval's own vLLM model.

    lm_eval --model compressed-vllm --model_args pretrained=X,method=wanda,sparsity=0.5 --tasks ...

The compression options, the cache and its key are compressed-hf's (a point compressed by either backend is
served to the other from the cache).  The compressed weights are handed to lm-eval's ``vllm`` model as a
folder: the cache entry, or a temporary folder (deleted when the model is) with ``cache=false`` or when the
cache could not store it.  Batching, generation and scoring are then vLLM's.  Everything is checked before
anything is compressed or loaded: the vLLM argument names, the method (its result must be plain weight
tensors), and the parallelism against the devices present.

vLLM starts its engine in worker processes with ``spawn``: a script that creates this model must guard its
entry point with ``if __name__ == "__main__":`` (``lm_eval`` itself does).
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from lm_eval.api.registry import register_model

from llmkick_models.preload_checks import read_config
from llmkick_models.vllm_checks import VLLMArgs, check_vllm_model_args, import_vllm_model, vllm_version

log = logging.getLogger(__name__)

VLLM = import_vllm_model()


@register_model("compressed-vllm")
class CompressedVLLM(VLLM):  # type: ignore[misc, valid-type]
    """lm-eval's ``vllm`` model serving compressed-hf's compressed weights.

    Takes compressed-hf's compression options and ``cache`` / ``llmkick_cache_dir``, the weight source
    options ``revision``, ``subfolder``, ``gguf_file``, ``device`` (where compression runs), and every
    argument of lm-eval's ``vllm`` model, ``vllm.LLM`` and vLLM's ``EngineArgs``.  ``dtype`` applies to both
    the compression and vLLM; unset, vLLM gets the dtype the weights are stored in (what compressed-hf
    evaluates in), not vLLM's own ``auto`` choice.
    """

    def __init__(
        self,
        pretrained: str,
        method: str | None = "none",
        device: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(pretrained, str):
            raise TypeError("compressed-vllm: pretrained= must be a model id or folder, not a model object")
        # Every check before anything is compressed or loaded.
        checked = check_vllm_model_args({"method": method, **kwargs}, VLLM)
        self.compression_spec = checked.spec
        kwargs, weight_source = checked.engine, checked.weight_source
        if self.compression_spec.is_dense and not weight_source.keys() - {"revision"}:
            # Nothing to compress: vLLM reads the model itself.
            self.compression_info: dict[str, Any] = {"spec": self.compression_spec.to_dict(),
                                                      "served_from": pretrained}  # fmt: skip
            folder = pretrained
            kwargs["revision"] = weight_source.get("revision")
        else:
            folder = self._compressed_folder(pretrained, checked, device)
            kwargs.setdefault("tokenizer", pretrained)  # the folder holds the weights only
            kwargs.setdefault("tokenizer_revision", weight_source.get("revision"))
        if kwargs.get("dtype") in (None, "auto"):
            kwargs["dtype"] = self._stored_dtype(folder, weight_source.get("revision") if folder == pretrained
                                                 else None, kwargs.get("trust_remote_code"))  # fmt: skip
        self.weights_folder = str(folder)
        super().__init__(pretrained=str(folder), **kwargs)

    def _compressed_folder(
        self,
        pretrained: str,
        checked: VLLMArgs,
        device: str | None,
    ) -> str:
        """Compress (or load from the cache) through compressed-hf; the folder holding the weights."""
        import torch

        from llmkick_models.compressed_hf import CompressedHFLM

        if device is None:  # HFLM's default is "cuda" even where there is none
            device = "cuda" if torch.cuda.is_available() else "cpu"
        hf = CompressedHFLM(pretrained=pretrained, batch_size=1, device=device, **checked.compression,
                            **checked.weight_source, **checked.shared)  # fmt: skip
        info = hf.get_model_info()
        self.compression_info = info.get("llmkick_compression", {})
        entry = hf.cache_info.get("entry")
        if entry is None:  # cache=false, or the cache could not store it: a folder of our own
            entry = tempfile.mkdtemp(prefix="llmkick-vllm-")
            weakref.finalize(self, shutil.rmtree, entry, ignore_errors=True)
            hf.save_weights(Path(entry))
            self.compression_info["cache"] = {**hf.cache_info, "vllm_folder": "temporary"}
            log.info("llmkick: compressed weights saved for vLLM in the temporary folder %s", entry)
        # Free the HF copy before vLLM loads its own (on a GPU both would not fit next to each other).
        del hf
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return str(entry)

    @staticmethod
    def _stored_dtype(folder: str, revision: str | None, trust_remote_code: Any) -> str:
        """The dtype the weights are stored in (config ``dtype``), the one compressed-hf evaluates in."""
        config = read_config(folder, {"revision": revision, "trust_remote_code": trust_remote_code})
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        return str(dtype).removeprefix("torch.") if dtype is not None else "auto"

    def get_model_info(self) -> dict[str, Any]:
        """The compression report (``llmkick_compression``, as compressed-hf records it), the dtype vLLM
        runs in and vLLM's version (``llmkick_backend``); land in the results JSON ``config``."""
        model_config = self.model.llm_engine.model_config if hasattr(self, "model") else None
        return {
            "model_dtype": str(getattr(model_config, "dtype", "")).removeprefix("torch."),
            "llmkick_compression": self.compression_info,
            "llmkick_backend": {
                "engine": "vllm",
                "vllm_version": vllm_version(),
                "weights": self.weights_folder,
            },
        }


__all__ = ["CompressedVLLM"]
