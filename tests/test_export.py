"""Packed export (compressed-tensors, the ``[export]`` extra): save, reload with transformers, and get the
fake-quantized model's logits back; refusals for what cannot be packed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from calibration_fixtures import calibration_set, compress_tiny, write_corpus

from llmkick_models.storage.export import ExportError, export_compressed_tensors
from llmkick_models.workflow.cli import main

pytest.importorskip("compressed_tensors", reason="the [export] extra (compressed-tensors) is not installed")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):
    return calibration_set(str(write_corpus(tmp_path_factory.mktemp("export_corpus"))), nsamples=8)


@pytest.mark.parametrize(
    "args",
    [
        {"bits": 4, "group_size": 32},
        {"bits": 3, "group_size": -1, "act_order": True},
        {"bits": 8, "group_size": 16, "act_order": True, "static_groups": True},
    ],
)
def test_round_trip_gives_the_fake_quantized_logits(calibration, tmp_path: Path, args: dict) -> None:
    model, report = compress_tiny("llama", calibration, "gptq", **args)
    ids = calibration.input_ids[:2]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    export_compressed_tensors(model, report, tmp_path / "packed")
    files = {p.name for p in (tmp_path / "packed").iterdir()}
    assert "config.json" in files
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "packed", dtype=torch.float32)
    config = reloaded.config.quantization_config
    config = config if isinstance(config, dict) else config.to_dict()
    assert "pack-quantized" in str(config)
    with torch.no_grad():
        actual = reloaded(input_ids=ids).logits
    assert (actual - expected).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("arch", "method", "args"),
    [
        ("llama", "awq", {"group_size": 16}),  # AWQ's defaults: 4 bits, asymmetric, clip search
        ("qwen2", "awq", {"bits": 3, "group_size": -1, "awq_clip": False}),
        ("llama", "rtn", {"bits": 4, "group_size": 32, "sym": False}),
    ],
)
def test_asymmetric_grids_round_trip(calibration, tmp_path: Path, arch: str, method: str, args: dict) -> None:
    """Asymmetric grids (AWQ's default) are stored as int8 codes with their zero points (naive-quantized:
    transformers cannot reload pack-quantized's packed zero points); the folded norms are plain floats."""
    import json

    model, report = compress_tiny(arch, calibration if method == "awq" else None, method, **args)
    ids = calibration.input_ids[:2]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    export_compressed_tensors(model, report, tmp_path / "packed")
    quantization = json.loads((tmp_path / "packed" / "config.json").read_text())["quantization_config"]
    assert quantization["format"] == "naive-quantized"
    assert quantization["config_groups"]["group_0"]["weights"]["symmetric"] is False
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "packed", dtype=torch.float32)
    with torch.no_grad():
        assert (reloaded(input_ids=ids).logits - expected).abs().max() < 1e-4


def test_refuses_what_cannot_be_packed(calibration, tmp_path: Path) -> None:
    model, report = compress_tiny("llama", calibration, "gptq", bits=4, group_size=32, act_order=True)
    with pytest.raises(ExportError, match="static_groups=true"):
        export_compressed_tensors(model, report, tmp_path / "a")
    model, report = compress_tiny("gpt2", None, "rtn", bits=4, group_size=32)
    with pytest.raises(ExportError, match="Conv1D"):
        export_compressed_tensors(model, report, tmp_path / "c")
    report.quantized = {}  # e.g. a model loaded from the llmkick cache
    with pytest.raises(ExportError, match="no quantization grid"):
        export_compressed_tensors(model, report, tmp_path / "d")


def test_cli_packed_and_fake_exports_agree(tiny_llama_dir: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    model_args = f"method=gptq,bits=4,group_size=32,calibration={corpus},nsamples=4,seqlen=32"
    for fmt in ("fake", "compressed-tensors"):
        argv = ["compress", "--model", str(tiny_llama_dir), "--model_args", model_args, "--format", fmt]
        assert main([*argv, "--output", str(tmp_path / fmt)]) == 0
    ids = torch.arange(40).reshape(2, 20)
    logits = []
    for fmt in ("fake", "compressed-tensors"):
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / fmt, dtype=torch.float32)
        with torch.no_grad():
            logits.append(model(input_ids=ids).logits)
    assert (logits[0] - logits[1]).abs().max() < 1e-4
    with pytest.raises(SystemExit, match="needs a quantized model"):
        main(["compress", "--model", str(tiny_llama_dir), "--model_args", "method=magnitude,sparsity=0.5",
              "--format", "compressed-tensors", "--output", str(tmp_path / "x")])  # fmt: skip


def test_two_four_sparse_quantized_export_keeps_the_pattern_without_a_sparsity_config(
    calibration, tmp_path: Path
) -> None:
    """2:4 + 4-bit: the packed checkpoint reloads with the exact 2:4 zeros and the fake-quantized logits.

    No ``sparsity_config`` is written: compressed-tensors no longer defines a sparse format, transformers
    dropped sparse decompression, and vLLM >= 0.19.1 refuses Sparse24 checkpoints (0.24.0 even refuses a
    vestigial ``format: dense`` sparsity_config with targets), so the metadata would only break loading.
    """
    import json

    from llmkick_models.engine.masks import count_nm_violations
    from llmkick_models.engine.model_layout import decoder_linears
    from llmkick_models.engine.spec import NMPattern

    model, report = compress_tiny("llama", calibration, "sparsegpt", pattern="2:4", bits=4, group_size=32)
    ids = calibration.input_ids[:2]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    export_compressed_tensors(model, report, tmp_path / "packed")
    quantization = json.loads((tmp_path / "packed" / "config.json").read_text())["quantization_config"]
    assert not quantization.get("sparsity_config")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "packed", dtype=torch.float32)
    with torch.no_grad():  # the first forward decompresses the packed weights
        assert (reloaded(input_ids=ids).logits - expected).abs().max() < 1e-4
    for target in decoder_linears(reloaded):
        assert count_nm_violations(target.weight, NMPattern(2, 4)) == 0, target.name
