"""CompressedHFLM inside lm-eval: dense equals ``hf``, the report reaches the results, loaded models work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.model_layout import decoder_linears
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
