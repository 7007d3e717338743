"""RTN: no calibration needed, each weight on its group's min-max grid, optional error measurement."""

from __future__ import annotations

import pytest
import torch
from calibration_fixtures import calibration_set, compress_tiny, write_corpus

from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.quantizer import QuantizerConfig, rtn_quantize
from tiny_models import build_model, build_tokenizer


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):
    return calibration_set(str(write_corpus(tmp_path_factory.mktemp("rtn_corpus"))), nsamples=4)


def test_rtn_needs_no_calibration_and_rounds_each_weight_to_nearest() -> None:
    dense = build_model("gpt_neox", build_tokenizer())
    model, report = compress_tiny("gpt_neox", None, "rtn", bits=3, group_size=16)
    assert report.calibration is None and "recon_error" not in report.layers[0].extra
    for before, after, layer in zip(
        decoder_linears(dense), decoder_linears(model), report.layers, strict=True
    ):
        expected, _ = rtn_quantize(before.weight, QuantizerConfig(3, True, 16))
        assert torch.equal(after.weight, expected), after.name
        assert layer.extra == {"bits": 3, "group_size": 16}
        rows, cols = after.shape
        grouped = after.weight.reshape(rows, cols // 16, 16)
        assert max(len(torch.unique(g)) for row in grouped for g in row) <= 8
    assert set(report.quantized) == {t.name for t in decoder_linears(model)}  # grids kept for export


def test_rtn_with_calibration_only_measures_the_error(calibration) -> None:
    plain, _ = compress_tiny("llama", None, "rtn", bits=4, group_size=-1)
    measured, report = compress_tiny("llama", calibration, "rtn", bits=4, group_size=-1)
    for a, b in zip(decoder_linears(plain), decoder_linears(measured), strict=True):
        assert torch.equal(a.weight, b.weight)
    assert all(0 < layer.extra["recon_error"] < 0.1 for layer in report.layers)
