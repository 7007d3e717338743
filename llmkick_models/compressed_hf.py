"""``compressed-hf``: lm-eval's HF model, compressed on load before any request is served.

    lm_eval --model compressed-hf --model_args pretrained=X,method=magnitude,sparsity=0.5 --tasks ...

compressed-hf's own arguments are the named parameters below; everything else is HFLM's (``dtype``,
``device``, ``parallelize``, ...) or ``from_pretrained``'s, exactly as with ``--model hf``.
"""

from __future__ import annotations

import inspect
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from llmkick_models.arguments import check_calibration_memory, parse_cache_flag
from llmkick_models.chunked_loglikelihood import forward_context, score_requests
from llmkick_models.engine.calibration import calibration_tokens, load_documents, model_context_length
from llmkick_models.engine.compress import compress_model
from llmkick_models.engine.report import CompressionReport
from llmkick_models.head_split import HeadSplit, check_split, split_head
from llmkick_models.logits_budget import (
    body_budget_bytes,
    body_row_bytes,
    body_rows,
    bounded_batch_size,
    budget_bytes,
    bytes_per_logit,
    chunk_positions,
    scoring_method,
)
from llmkick_models.preload_checks import check_model_args, hidden_size
from llmkick_models.storage.cache_key import cache_key, describe_source
from llmkick_models.storage.cache_verify import verify_loaded
from llmkick_models.storage.int8_checkpoint import is_int8_spec, save_int8_checkpoint, stored_int8_config
from llmkick_models.storage.model_cache import CacheLockError, CacheWriteError, ModelCache
from llmkick_tasks.logs import route_logs_through_lm_eval

log = logging.getLogger(__name__)

_HFLM_ARGS = frozenset(inspect.signature(HFLM.__init__).parameters)


@register_model("compressed-hf")
class CompressedHFLM(HFLM):
    """HFLM whose decoder linears are pruned and/or quantized (fake quantization) right after loading.

    compressed-hf's own model_args are the compression options that the methods declare (see
    ``llmkick_models.engine.options`` and the README's generated table: ``method``, ``sparsity``,
    ``pattern``, ``calibration``, ``bits``, ...) plus ``cache`` (reuse / store the compressed model, default
    true) and ``llmkick_cache_dir`` (default ``$LLMKICK_CACHE_DIR``, else ``~/.cache/llmkick/models``; not
    ``cache_dir``, which is ``from_pretrained``'s download cache).  Everything else goes to ``HFLM`` and
    from there to ``from_pretrained``, exactly as with ``--model hf``.  ``pretrained`` may also be an
    already-loaded ``PreTrainedModel``, compressed in place.

    Log-probabilities are computed in float32 or wider (the model's dtype if wider) whatever the model's
    dtype: HFLM's ``softmax_dtype``, which sets both the log-softmax's dtype and that of the per-request
    sum of token log-probs, defaults here to that instead of the logits' dtype.  An explicit
    ``softmax_dtype=`` is used as given.  Which one was used is recorded as ``llmkick_scoring``.

    Loglikelihood requests are scored from the final hidden states, the LM head applied to a chunk of
    positions at a time within the logits budget (:mod:`llmkick_models.logits_budget`), so that no
    ``batch x tokens x vocab`` tensor exists, and the model's body on as many rows of a batch at a time as the
    same budget holds of its activations; ``llmkick_scoring["logits"]`` says whether this path or
    lm-eval's full logits scored the run.
    """

    def __init__(
        self,
        pretrained: str | transformers.PreTrainedModel,
        method: str | None = "none",
        cache: bool | str | None = None,
        llmkick_cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Validate everything, and read the calibration text, before HFLM loads anything.
        checked = check_model_args(pretrained, {"method": method, **kwargs}, _HFLM_ARGS)
        self.compression_spec = checked.spec
        kwargs = checked.load_args
        if self.compression_spec.calibration is not None and isinstance(pretrained, str):
            check_calibration_memory(self.compression_spec, hidden_size(checked.config))
        budget_bytes()  # a malformed $LLMKICK_LOGITS_BUDGET_MB or $LLMKICK_SCORING fails here, before loading
        scoring_method()
        #: how loglikelihood requests are scored (found on first use; lands in the results)
        self._scoring: dict[str, Any] | None = None
        self._head_split: HeadSplit | None = None
        use_cache = True if cache is None else parse_cache_flag(cache)
        self._model_cache = ModelCache(llmkick_cache_dir) if use_cache else None
        #: how this run got its weights: compressed now, or loaded from the cache (lands in the results)
        self.cache_info: dict[str, Any] = {"enabled": use_cache}
        calibration_spec = self.compression_spec.calibration
        self._calibration_documents = load_documents(calibration_spec) if calibration_spec else None
        self.compression_report: CompressionReport | None = None
        route_logs_through_lm_eval("llmkick_models")
        super().__init__(pretrained=pretrained, **kwargs)
        self._softmax_dtype_from = "model_args" if kwargs.get("softmax_dtype") is not None else "default"
        if self.softmax_dtype is None:
            # HFLM would take the log-softmax and sum the log-probs in the logits' dtype: in bfloat16 a
            # 2048-token window's log-likelihood (thousands of nats) comes back rounded to 16-32 nats.
            self.softmax_dtype = torch.promote_types(self.model.dtype, torch.float32)
        if self.compression_report is None:  # a loaded model skips _create_model
            self._compress()

    def _create_model(self, pretrained: str, **kwargs: Any) -> None:
        if self._model_cache is None or self.compression_spec.is_dense:
            super()._create_model(pretrained, **kwargs)
            self._compress()
            return
        key = self._cache_key(pretrained, kwargs)
        cache = self._model_cache
        self.cache_info.update(key=key)
        if not cache.writable():
            # Never fail a run over the cache: serve a valid entry, else compress in memory.
            log.warning("llmkick: the model cache %s is not writable; a hit is still used, a miss is "
                        "compressed in memory and not stored", cache.root)  # fmt: skip
            self.cache_info["writable"] = False
            if not self._load_from_cache(key, kwargs):
                self._compress_without_storing(pretrained, kwargs)
            return
        try:
            # One process compresses, concurrent ones (accelerate ranks) wait on the lock and then load it.
            with cache.lock(key):
                if self._load_from_cache(key, kwargs):
                    return
                super()._create_model(pretrained, **kwargs)
                self._compress()
                try:
                    entry = cache.store(
                        key,
                        self._save_for_cache,
                        {"report": self.compression_report.to_dict(), "key_parts": self._key_parts},
                    )
                except CacheWriteError as error:  # disk full, permissions changed mid-run: the model is fine
                    log.warning("llmkick: %s; the run goes on with the model in memory", error)
                    self.cache_info.update(hit=False, stored=False)
                    return
                log.info("llmkick: stored the compressed model in the cache: %s", entry)
                self.cache_info.update(entry=str(entry), hit=False)
        except CacheLockError as error:  # never fail the run over the cache: use it read-only
            log.warning("llmkick: %s; the cache is used read-only for this run", error)
            self.cache_info["writable"] = False
            if not self._load_from_cache(key, kwargs):
                self._compress_without_storing(pretrained, kwargs)

    def _compress_without_storing(self, pretrained: str, kwargs: dict[str, Any]) -> None:
        super()._create_model(pretrained, **kwargs)
        self._compress()
        self.cache_info.update(hit=False, stored=False)

    def _load_from_cache(self, key: str, kwargs: dict[str, Any]) -> bool:
        """Load a verified entry: file digests first, then the weights measured against the stored report.

        Any mismatch, or an entry that does not load, is discarded (the caller recompresses)."""
        cache = self._model_cache
        assert cache is not None
        hit = cache.lookup(key)
        if hit is None:
            return False
        entry, manifest = hit
        log.info("llmkick: loading the compressed model from the cache: %s", entry)
        local = {**kwargs, "gguf_file": None, "subfolder": "", "quantization_config": None}
        try:
            if is_int8_spec(self.compression_spec):  # its int8 modules are rebuilt from the stored codes
                local["quantization_config"] = stored_int8_config(entry)
            with warnings.catch_warnings():  # transformers: the entry's own config wins (the one passed)
                warnings.filterwarnings("ignore", "You passed `quantization_config`", UserWarning)
                super()._create_model(str(entry), **local)
        except Exception as error:  # e.g. a damaged header: rebuild rather than fail every later run
            cache.discard(key, f"it does not load: {error!r}")
            self._model = None
            return False
        report, problems = verify_loaded(self._model, self.compression_spec, manifest.get("report") or {})
        if problems:
            cache.discard(
                key, "the loaded weights disagree with the stored report: " + "; ".join(problems[:5])
            )
            self._model = None
            return False
        self.compression_report = report
        self.cache_info.update(entry=str(entry), hit=True, verified=True)
        return True

    def _cache_key(self, pretrained: str, load_kwargs: dict[str, Any]) -> str:
        """Everything that determines the compressed weights: source weights, load options, spec."""
        calibration = self.compression_spec.calibration
        self._key_parts = {
            "source": describe_source(
                pretrained,
                load_kwargs.get("revision"),
                load_kwargs.get("gguf_file"),
                hub_cache_dir=load_kwargs.get("cache_dir"),
            ),
            "subfolder": load_kwargs.get("subfolder") or "",
            "dtype": str(load_kwargs.get("dtype")),
            "spec": self.compression_spec.to_dict(),
            # A local calibration file/folder counts by content; named sources (c4, ...) by name (in spec).
            "calibration_source": describe_source(calibration.source)
            if calibration and Path(calibration.source).exists()
            else None,
        }
        return cache_key(self._key_parts)

    def save_weights(self, folder: Path) -> None:
        """Save the compressed model (no tokenizer) as a plain HF folder, as a cache entry holds it."""
        self._save_for_cache(folder)

    def _save_for_cache(self, folder: Path) -> None:
        model = self._model
        if is_int8_spec(self.compression_spec):  # run-time modules: their int8 codes and scales
            save_int8_checkpoint(model, folder, self.compression_spec)
            return
        if getattr(model.config, "quantization_config", None) is not None and not getattr(
            model, "is_quantized", False
        ):
            del model.config.quantization_config  # GGUF-loaded weights are plain floats by now
        model.save_pretrained(folder)

    def _compress(self) -> None:
        model = self._model
        # Weights may still be on the CPU (HFLM moves the model afterwards): do the per-layer work on the
        # accelerator anyway.  With a device_map, leave each layer where it lives.
        on_accelerator = self._device.type not in ("cpu", "meta") and not hasattr(model, "hf_device_map")
        calibration = None
        if self.compression_spec.calibration is not None:
            calibration = calibration_tokens(
                self.compression_spec.calibration,
                self._calibration_documents,
                self.tokenizer,
                vocab_size=model.get_input_embeddings().num_embeddings,
                max_context=model_context_length(model.config),
            )
            self._calibration_documents = None  # the text is no longer needed
        self.compression_report = compress_model(
            model, self.compression_spec, self._device if on_accelerator else None, calibration
        )
        if not self.compression_spec.is_dense:
            self.compression_report.log()

    def _loglikelihood_tokens(
        self, requests: list[Any], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        """Continuations scored from the final hidden states, the LM head applied to a budgeted chunk of
        positions at a time and the body to as many rows of a batch as the budget holds of its activations
        (:mod:`llmkick_models.chunked_loglikelihood`); where the model cannot be split at
        its head, or ``$LLMKICK_SCORING=full-logits``, HFLM's full logits in batches cut to the budget."""
        if requests and self._resolve_scoring()["logits"] == "chunked":
            assert self._head_split is not None
            chunk = chunk_positions(self._vocab(), self.model.dtype, self.softmax_dtype, budget_bytes())
            return score_requests(
                self, self._head_split, requests, chunk, self._body_rows, disable_tqdm, override_bs
            )
        return self._full_logits(requests, disable_tqdm, override_bs)

    def _resolve_scoring(self) -> dict[str, Any]:
        """Whether requests are scored in chunks: asked for, and the model's split checked on a probe."""
        if self._scoring is not None:
            return self._scoring
        reason = None
        if scoring_method() == "full-logits":
            reason = "$LLMKICK_SCORING=full-logits"
        elif self.backend != "causal":
            reason = f"a {self.backend} model"
        else:
            split = split_head(self.model)
            if isinstance(split, str):
                reason = split
            else:
                with forward_context(self):
                    reason = check_split(self.model, split, self._vocab(), self.device)
                self._head_split = None if reason else split
        if reason is None:
            self._scoring = {"logits": "chunked"}
            if body_row_bytes(self._text_config(), self.model.dtype, 1) is None:
                log.warning("llmkick: the model's config names no hidden_size: its body runs on lm-eval's "
                            "whole batches, their activations not bounded by the logits budget")  # fmt: skip
        else:
            self._scoring = {"logits": "full", "full_logits_reason": reason}
            if not reason.startswith("$"):
                log.warning(
                    "llmkick: loglikelihood falls back to lm-eval's full logits (batches cut to the logits "
                    "budget): %s", reason,
                )  # fmt: skip
        return self._scoring

    def _body_rows(self, length: int) -> int:
        """How many rows of ``length`` tokens one forward pass of the body may take: as many as the body's
        budget on this device holds of their estimated activations (all of lm-eval's batch when the config
        gives none)."""
        row_bytes = body_row_bytes(self._text_config(), self.model.dtype, length)
        return body_rows(row_bytes, body_budget_bytes(self.device)) if row_bytes is not None else sys.maxsize

    def _text_config(self) -> Any:
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    def _vocab(self) -> int:
        head = self.model.get_output_embeddings()
        return head.weight.shape[0] if head is not None else self.model.config.vocab_size

    def _full_logits(
        self, requests: list[Any], disable_tqdm: bool, override_bs: int | None
    ) -> list[tuple[float, bool]]:
        """HFLM's scoring, in batches cut to the logits budget (see :mod:`llmkick_models.logits_budget`)."""
        requested = self.batch_size_per_gpu
        if not isinstance(requested, int) or not requests:  # "auto": lm-eval probes memory itself
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        longest = min(max(len(context) + len(continuation) for _, context, continuation in requests) - 1,
                      self.max_length)  # fmt: skip
        vocab = self._vocab()
        per_logit = bytes_per_logit(self.model.dtype, self.softmax_dtype)
        bounded = bounded_batch_size(requested, longest, vocab, per_logit, budget_bytes())
        if bounded == requested:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        log.info(
            "loglikelihood batches of %d sequences (asked %d): %d tokens x %d vocabulary entries of logits"
            " per sequence fit the %d MiB logits budget ($LLMKICK_LOGITS_BUDGET_MB)",
            bounded, requested, longest, vocab, budget_bytes() // 2**20,
        )  # fmt: skip
        self.batch_size_per_gpu = bounded
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        finally:
            self.batch_size_per_gpu = requested

    def get_model_info(self) -> dict[str, Any]:
        """HFLM's model info plus the compression report and the log-softmax dtype (land in the results JSON
        ``config`` as ``llmkick_compression`` and ``llmkick_scoring``)."""
        info = super().get_model_info()
        info["llmkick_scoring"] = {
            "softmax_dtype": str(self.softmax_dtype).removeprefix("torch."),
            "softmax_dtype_from": self._softmax_dtype_from,
            **self._resolve_scoring(),
        }
        if self.compression_report is not None:
            info["llmkick_compression"] = {**self.compression_report.to_dict(), "cache": self.cache_info}
        return info


__all__ = ["CompressedHFLM"]
