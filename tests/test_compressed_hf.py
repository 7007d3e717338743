"""CompressedHFLM inside lm-eval: dense equals ``hf``, the report reaches the results, loaded models work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.model_layout import decoder_linears
from tiny_models import build_model, build_tokenizer

REQUESTS = [
    ("What is 2 plus one? Answer:", " 3"),
    ("The quick brown fox", " jumps over the lazy dog."),
    ("Please give answer to this question: who wrote Hamlet?\nThe answer is", " William Shakespeare"),
]


def _loglikelihoods(lm: HFLM) -> list[tuple[float, bool]]:
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(REQUESTS)
    ]
    return lm.loglikelihood(instances)


def test_method_none_matches_hf_exactly(tiny_llama_dir: Path) -> None:
    reference = _loglikelihoods(HFLM(pretrained=str(tiny_llama_dir), device="cpu"))
    dense = _loglikelihoods(CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", method="none"))
    assert dense == reference


def test_pruning_changes_loglikelihoods(tiny_llama_dir: Path) -> None:
    reference = _loglikelihoods(HFLM(pretrained=str(tiny_llama_dir), device="cpu"))
    pruned = _loglikelihoods(
        CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", method="magnitude", sparsity=0.5)
    )
    assert all(a[0] != b[0] for a, b in zip(pruned, reference, strict=True))


def test_loaded_model_is_compressed_in_place() -> None:
    tokenizer = build_tokenizer()
    model = build_model("gpt_neox", tokenizer)
    lm = CompressedHFLM(pretrained=model, tokenizer=tokenizer, method="magnitude", pattern="4:8")
    assert lm.model is model
    for target in decoder_linears(model):
        assert float((target.weight == 0).float().mean()) == 0.5
    info = lm.get_model_info()["llmkick_compression"]
    assert info["spec"]["pattern"] == "4:8"
    assert info["overall_sparsity"] == 0.5


def test_results_json_carries_measured_report(tiny_llama_dir: Path, local_task_dir: Path) -> None:
    results = simple_evaluate(
        model="compressed-hf",
        model_args=f"pretrained={tiny_llama_dir},method=magnitude,pattern=2:4",
        tasks=["local_fixture_choice"],
        task_manager=TaskManager(include_path=str(local_task_dir)),
        device="cpu",
        limit=4,
    )
    report = results["config"]["llmkick_compression"]
    assert report["spec"] == {"method": "magnitude", "sparsity": 0.5, "pattern": "2:4"}
    assert report["compressed_linears"] == 14
    assert {layer["sparsity"] for layer in report["layers"].values()} == {0.5}
    assert "acc,none" in results["results"]["local_fixture_choice"]


def test_dense_report_measures_the_untouched_model(tiny_llama_dir: Path) -> None:
    lm = CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu")
    report = lm.get_model_info()["llmkick_compression"]
    assert report["spec"]["method"] == "none"
    assert report["overall_sparsity"] == pytest.approx(0.0)
    assert lm.model.dtype == torch.float32


def test_second_load_comes_from_the_cache(tiny_llama_dir: Path, tmp_path: Path) -> None:
    args = {"pretrained": str(tiny_llama_dir), "device": "cpu", "method": "magnitude", "pattern": "2:4"}
    first = CompressedHFLM(**args, llmkick_cache_dir=str(tmp_path / "c"))
    info = first.get_model_info()["llmkick_compression"]
    assert info["cache"]["hit"] is False and Path(info["cache"]["entry"]).is_dir()
    second = CompressedHFLM(**args, llmkick_cache_dir=str(tmp_path / "c"))
    cached = second.get_model_info()["llmkick_compression"]
    assert cached["cache"]["hit"] is True and cached["cache"]["entry"] == info["cache"]["entry"]
    assert cached["layers"] == info["layers"] and cached["overall_sparsity"] == 0.5
    first_weights, second_weights = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)
    assert _loglikelihoods(first) == _loglikelihoods(second)


def test_cache_key_separates_specs_and_can_be_disabled(tiny_llama_dir: Path, tmp_path: Path) -> None:
    common = {"pretrained": str(tiny_llama_dir), "device": "cpu", "llmkick_cache_dir": str(tmp_path / "c")}
    CompressedHFLM(**common, method="magnitude", sparsity=0.5)
    other = CompressedHFLM(**common, method="magnitude", sparsity=0.3)
    assert other.get_model_info()["llmkick_compression"]["cache"]["hit"] is False
    assert len([p for p in (tmp_path / "c").iterdir() if p.is_dir()]) == 2
    off = CompressedHFLM(**common, method="magnitude", sparsity=0.5, cache="false")
    assert off.get_model_info()["llmkick_compression"]["cache"] == {"enabled": False}
    dense = CompressedHFLM(**common)  # nothing to cache for the dense model
    assert "entry" not in dense.get_model_info()["llmkick_compression"]["cache"]


def test_corrupt_cache_entry_is_rebuilt(tiny_llama_dir: Path, tmp_path: Path) -> None:
    args = {"pretrained": str(tiny_llama_dir), "device": "cpu", "method": "magnitude", "sparsity": 0.5}
    entry = Path(CompressedHFLM(**args).get_model_info()["llmkick_compression"]["cache"]["entry"])
    (entry / "model.safetensors").write_bytes(b"truncated")
    rebuilt = CompressedHFLM(**args).get_model_info()["llmkick_compression"]
    assert rebuilt["cache"]["hit"] is False and rebuilt["overall_sparsity"] == 0.5
    assert CompressedHFLM(**args).get_model_info()["llmkick_compression"]["cache"]["hit"] is True


def test_cli_second_run_loads_from_cache_and_says_so(tiny_llama_dir: Path, local_task_dir: Path) -> None:
    command = [
        sys.executable, "-m", "lm_eval", "--model", "compressed-hf",
        "--model_args", f"pretrained={tiny_llama_dir},method=magnitude,pattern=2:4",
        "--tasks", "local_fixture_choice", "--include_path", str(local_task_dir),
        "--device", "cpu", "--limit", "2",
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "stored the compressed model in the cache" in first.stderr
    second = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "loading the compressed model from the cache" in second.stderr
    assert "compressed 14 linears" not in second.stderr  # nothing was compressed again
