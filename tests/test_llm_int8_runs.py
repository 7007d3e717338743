"""method=llm_int8 end to end: compressed-hf in every dtype, the cache (a verified hit rebuilds the same
int8 modules), ``lm_eval --model compressed-hf`` and ``llmkick compress --format bitsandbytes``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers
from lm_eval.api.instance import Instance
from task_fixtures import lm_eval_cli

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.workflow.cli import main

bnb = pytest.importorskip("bitsandbytes", reason="the [int8] extra (bitsandbytes) is not installed")

INT8_ARGS = {
    "method": "llm_int8",
    "calibration": "random",
    "nsamples": 2,
    "seqlen": 16,
    "int8_threshold": 2.0,
}
REQUESTS = [("The quick brown fox", " jumps over the lazy dog."), ("What is 2 plus one? Answer:", " 3")]
IDS = torch.arange(3, 43).reshape(2, 20)


def _loglikelihoods(lm: CompressedHFLM) -> list[float]:
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(REQUESTS)
    ]
    return [logprob for logprob, _ in lm.loglikelihood(instances)]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
def test_every_supported_dtype_runs_int8_modules(tiny_llama_dir: Path, dtype: str) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", dtype=dtype, cache=False, **INT8_ARGS)
    targets = decoder_linears(lm.model)
    assert all(isinstance(t.module, bnb.nn.Linear8bitLt) and not t.module.training for t in targets)
    assert all(t.module.weight.dtype == torch.int8 for t in targets)
    assert lm.model.dtype == getattr(torch, dtype)
    int8 = _loglikelihoods(lm)
    dense = _loglikelihoods(CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", dtype=dtype))
    assert all(math.isfinite(value) for value in int8) and int8 != dense


def test_cache_hit_rebuilds_the_same_int8_modules(
    tiny_llama_dir: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    args = {
        "pretrained": str(tiny_llama_dir),
        "device": "cpu",
        "llmkick_cache_dir": str(tmp_path),
        **INT8_ARGS,
    }
    miss = CompressedHFLM(**args)
    stored = miss.get_model_info()["llmkick_compression"]
    assert stored["cache"]["hit"] is False and Path(stored["cache"]["entry"]).is_dir()
    hit = CompressedHFLM(**args)
    loaded = hit.get_model_info()["llmkick_compression"]
    assert loaded["cache"] == {**stored["cache"], "hit": True, "verified": True}
    assert loaded["layers"] == stored["layers"] and loaded["outlier_share"] == stored["outlier_share"]
    assert all(isinstance(t.module, bnb.nn.Linear8bitLt) for t in decoder_linears(hit.model))
    assert torch.equal(_logits(miss.model), _logits(hit.model))
    assert _loglikelihoods(miss) == _loglikelihoods(hit)
    assert not [w for w in recwarn if "quantization_config" in str(w.message)]  # passing the stored one


def test_cache_entry_that_loads_without_int8_modules_is_rebuilt(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    args = {
        "pretrained": str(tiny_llama_dir),
        "device": "cpu",
        "llmkick_cache_dir": str(tmp_path),
        **INT8_ARGS,
    }
    CompressedHFLM(**args)
    # Digests intact, but loaded as plain linears (what happens without its quantization_config).
    monkeypatch.setattr("llmkick_models.compressed_hf.stored_int8_config", lambda _entry: None)
    again = CompressedHFLM(**args).get_model_info()["llmkick_compression"]
    assert again["cache"]["hit"] is False
    assert "is a Linear, not a bitsandbytes Linear8bitLt" in caplog.text


def test_lm_eval_runs_compressed_hf_with_llm_int8(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path
) -> None:
    model_args = ",".join(f"{k}={v}" for k, v in {"pretrained": tiny_llama_dir, **INT8_ARGS}.items())
    results, stderr = lm_eval_cli(model_args, local_task_dir, tmp_path / "out")
    report = results["config"]["llmkick_compression"]
    assert report["spec"]["method"] == "llm_int8" and report["spec"]["int8_threshold"] == 2.0
    assert 0 < report["outlier_share"] <= 1 and report["compressed_linears"] == 14
    assert "MatMul8bitLt: inputs will be cast" not in stderr  # once per linear per batch otherwise


def test_compress_saves_a_bitsandbytes_checkpoint_that_loads_back(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    model_args = ",".join(f"{k}={v}" for k, v in INT8_ARGS.items())
    argv = [
        "compress",
        "--model",
        str(tiny_llama_dir),
        "--model_args",
        model_args,
        "--format",
        "bitsandbytes",
    ]
    assert main([*argv, "--output", str(tmp_path / "int8")]) == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "int8")
    assert all(isinstance(t.module, bnb.nn.Linear8bitLt) for t in decoder_linears(reloaded))
    assert not isinstance(reloaded.lm_head, bnb.nn.Linear8bitLt)
    built = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", cache=False, **INT8_ARGS)
    assert torch.equal(_logits(reloaded), _logits(built.model))


@pytest.mark.parametrize(
    ("model_args", "fmt", "message"),
    [
        ("method=llm_int8", "fake", "--format fake cannot hold method=llm_int8.*use --format bitsandbytes"),
        ("method=llm_int8", "compressed-tensors", "--format compressed-tensors cannot hold method=llm_int8"),
        ("method=gptq,bits=8", "bitsandbytes", "--format bitsandbytes saves LLM.int8.*for method=gptq use"),
    ],
)
def test_compress_refuses_formats_that_cannot_hold_the_model(model_args: str, fmt: str, message: str) -> None:
    argv = ["compress", "--model", "no/such-model", "--model_args", model_args, "--format", fmt]
    with pytest.raises(SystemExit, match=message):  # before the model id is even looked up
        main([*argv, "--output", "/nonexistent/out"])
