"""Joint sparse + quant: SparseGPT quantizing inside its column loop, and Wanda/magnitude followed by
GPTQ or RTN with the mask fixed.  The N:M pattern must survive exactly, with <= 2^bits levels per group row.
"""

from __future__ import annotations

import pytest
import torch
from calibration_fixtures import calibration_set, compress_tiny, write_corpus

from llmkick_models.engine.masks import count_nm_violations
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.spec import NMPattern

TWO_FOUR = NMPattern(2, 4)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):
    return calibration_set(str(write_corpus(tmp_path_factory.mktemp("joint_corpus"))))


def _check_two_four_and_levels(model: torch.nn.Module, group_size: int, bits: int = 4) -> None:
    for target in decoder_linears(model):
        W = target.weight
        rows, cols = W.shape
        assert count_nm_violations(W, TWO_FOUR) == 0, target.name
        grouped = W.reshape(rows, cols // group_size, group_size)
        assert max(len(torch.unique(g)) for row in grouped for g in row) <= 2**bits, target.name


def test_sparsegpt_joint_keeps_exact_two_four_and_sixteen_levels(calibration) -> None:
    pruned, pruned_report = compress_tiny("llama", calibration, "sparsegpt", pattern="2:4")
    joint, report = compress_tiny("llama", calibration, "sparsegpt", pattern="2:4", bits=4, group_size=32)
    _check_two_four_and_levels(joint, 32)
    assert report.layers[0].extra["bits"] == 4 and report.spec.to_dict()["bits"] == 4
    # Quantization really happened: the pruned-only model has far more distinct values per row.
    q_proj = decoder_linears(pruned)[0].weight
    assert len(torch.unique(q_proj[0, :32])) > 16
    # And the joint loop compensates both errors, so it costs more than pruning alone but not wildly more.
    for p, j in zip(pruned_report.layers, report.layers, strict=True):
        assert p.extra["recon_error"] < j.extra["recon_error"] < 2 * p.extra["recon_error"] + 0.02


@pytest.mark.parametrize(
    ("method", "quantizer"), [("wanda", "gptq"), ("magnitude", "rtn"), ("magnitude", "gptq")]
)
def test_prune_then_quantize_never_revives_a_pruned_weight(calibration, method: str, quantizer: str) -> None:
    pruned, _ = compress_tiny("qwen2", calibration if method == "wanda" else None, method, pattern="2:4")
    needs_calibration = method == "wanda" or quantizer == "gptq"
    joint, report = compress_tiny(
        "qwen2", calibration if needs_calibration else None, method, pattern="2:4", bits=4,
        group_size=32, quantizer=quantizer,
    )  # fmt: skip
    _check_two_four_and_levels(joint, 32)
    for p, j in zip(decoder_linears(pruned), decoder_linears(joint), strict=True):
        if method == "magnitude" or p.block_index == 0:  # block 1's Wanda scores see quantized inputs
            assert torch.all(j.weight[p.weight == 0] == 0), j.name
    assert report.spec.quantizer == quantizer
    if needs_calibration:
        assert all(0 < layer.extra["recon_error"] < 0.5 for layer in report.layers)
