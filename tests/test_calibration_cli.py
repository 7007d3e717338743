"""Calibrated pruning through lm-eval: the ``lm_eval`` CLI and CompressedHFLM, local calibration text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from calibration_fixtures import write_corpus

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.masks import count_nm_violations
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.spec import NMPattern


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("cli_corpus"))


def test_lm_eval_cli_wanda_2_4_with_local_calibration(
    tiny_llama_dir: Path, local_task_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    lm_eval = Path(sys.executable).with_name("lm_eval")
    model_args = (
        f"pretrained={tiny_llama_dir},method=wanda,pattern=2:4,calibration={corpus},nsamples=8,seqlen=64"
    )
    command = [
        str(lm_eval),
        "--model", "compressed-hf",
        "--model_args", model_args,
        "--tasks", "local_fixture_choice",
        "--include_path", str(local_task_dir),
        "--device", "cpu",
        "--limit", "4",
        "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "block 2/2: wanda on 7 linears" in run.stderr  # the per-block INFO log reaches lm-eval's output
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    report = json.loads(results_file.read_text())["config"]["llmkick_compression"]
    assert report["spec"]["method"] == "wanda" and report["spec"]["pattern"] == "2:4"
    assert report["spec"]["calibration"] == {"source": str(corpus), "nsamples": 8, "seqlen": 64, "seed": 0}
    assert report["calibration"]["tokens"] == 8 * 64
    assert report["overall_sparsity"] == 0.5 and report["compressed_linears"] == 14
    for name, layer in report["layers"].items():
        assert layer["sparsity"] == 0.5 and layer["nm_violations"] == 0, name
        assert 0 < layer["extra"]["recon_error"] < 1 and layer["extra"]["error_tokens"] == 256, name
    assert 0 < report["mean_recon_error"] < 1


def test_compressed_hf_sparsegpt_unstructured(tiny_model_dirs: dict[str, Path], corpus: Path) -> None:
    lm = CompressedHFLM(
        pretrained=str(tiny_model_dirs["gpt2"]),
        device="cpu",
        method="sparsegpt",
        sparsity=0.5,
        calibration=str(corpus),
        nsamples=8,
        seqlen=64,
        blocksize=32,
    )
    for target in decoder_linears(lm.model):
        assert int((target.weight == 0).sum()) == target.weight.numel() // 2, target.name
    report = lm.get_model_info()["llmkick_compression"]
    assert report["spec"]["percdamp"] == 0.01 and report["spec"]["blocksize"] == 32
    assert all(0 < layer["extra"]["recon_error"] < 1 for layer in report["layers"].values())
    with torch.no_grad():
        logits = lm.model(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()


def test_compressed_hf_nm_pattern_on_loaded_model(corpus: Path) -> None:
    from tiny_models import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model("qwen2", tokenizer)
    lm = CompressedHFLM(
        pretrained=model, tokenizer=tokenizer, method="sparsegpt", pattern="4:8", calibration=str(corpus),
        nsamples=4, seqlen=32,
    )  # fmt: skip
    assert all(count_nm_violations(t.weight, NMPattern(4, 8)) == 0 for t in decoder_linears(model))
    assert lm.get_model_info()["llmkick_compression"]["overall_sparsity"] == 0.5
