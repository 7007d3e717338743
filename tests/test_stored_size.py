"""The storage model of the report: stored bits of a point relative to dense 16-bit, checked on layers whose
bits are counted by hand here (R = 256 rows, C = 512 columns, n = 131072 weights, 16 n = 2097152 bits)."""

from __future__ import annotations

from typing import Any

import pytest

from llmkick_models.engine.methods import build_spec
from llmkick_models.workflow.stored_size import stored_size

ROWS, COLS = 256, 512
N = ROWS * COLS
DENSE = 16 * N


def _report(spec: dict[str, Any], zeros: int = 0, violations: int | None = None) -> dict[str, Any]:
    layer: dict[str, Any] = {"shape": [ROWS, COLS], "zeros": zeros, "sparsity": zeros / N}
    if violations is not None:
        layer["nm_violations"] = violations
    return {"spec": spec, "layers": {"model.layers.0.mlp.up_proj": layer}}


def _linears(spec: dict[str, Any], zeros: int = 0, violations: int | None = None) -> float:
    return stored_size(_report(spec, zeros, violations), None).linears_relative  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("spec", "bits"),
    [
        # 4 bits per weight + one 16-bit scale per 128 columns of a row (256 x 4 groups); symmetric: no zero
        (build_spec("gptq", bits=4).to_dict(), 4 * N + 256 * 4 * 16),
        # asymmetric: + a 4-bit zero point per group
        (build_spec("rtn", bits=4, sym=False).to_dict(), 4 * N + 256 * 4 * (16 + 4)),
        # per output row (group_size=-1), 3 bits, asymmetric
        (build_spec("rtn", bits=3, group_size=-1, sym=False).to_dict(), 3 * N + 256 * (16 + 3)),
        # a method without group_size/sym (LLM.int8()'s layout): int8 weights, one 16-bit absmax scale a row
        ({"method": "eightbit", "sparsity": 0.0, "pattern": "unstructured", "bits": 8}, 8 * N + 256 * 16),
    ],
)
def test_quantized_linears(spec: dict[str, Any], bits: int) -> None:
    assert _linears(spec) == bits / DENSE


def test_nm_keeps_m_minus_n_of_m_with_a_position_of_log2_m_bits() -> None:
    # 2:4: half the weights kept, each 16 bits + a 2-bit position (NVIDIA's metadata): 18 / 32
    assert _linears(build_spec("magnitude", pattern="2:4").to_dict(), N // 2) == 65536 * 18 / DENSE == 0.5625
    # 4:8: half kept, 3-bit positions: 19 / 32
    assert _linears(build_spec("magnitude", pattern="4:8").to_dict(), N // 2) == 65536 * 19 / DENSE
    # a measured violation: the layer is not N:M, stored unstructured (bitmask here)
    assert _linears(build_spec("magnitude", pattern="2:4").to_dict(), N // 2, 3) == (65536 * 16 + N) / DENSE


def test_unstructured_takes_the_cheaper_of_bitmask_and_csr() -> None:
    spec = build_spec("wanda", 0.5).to_dict()
    # 50%: bitmask 131072 bits < CSR 65536 x 9 (log2 512) + 257 x 32 = 598048
    half = stored_size(_report(spec, N // 2), None)
    assert half.linears_relative == (65536 * 16 + N) / DENSE and half.index == ["bitmask"]
    # 95%: 6554 kept; CSR 6554 x 9 + 257 x 32 = 67210 < bitmask 131072
    sparse = stored_size(_report(spec, N - 6554), None)
    assert sparse.linears_relative == (6554 * 16 + 67210) / DENSE and sparse.index == ["csr"]


def test_sparse_and_quantized_together() -> None:
    spec = build_spec("sparsegpt", pattern="2:4", bits=4, sym=False).to_dict()
    # 65536 kept x (4 bits + 2-bit position) + 1024 groups x (16-bit scale + 4-bit zero)
    assert _linears(spec, N // 2) == (65536 * 6 + 1024 * 20) / DENSE


def test_the_whole_model_counts_the_rest_at_16_bits() -> None:
    report = _report(build_spec("gptq", bits=4).to_dict())
    size = stored_size(report, 1_000_000)
    # (540672 linear bits + 16 x 868928 other parameters) / (16 x 1e6)
    assert size.relative == (540672 + 16 * 868928) / 16e6 == pytest.approx(0.90272)
    assert size.linears_relative == 540672 / DENSE and size.reason is None
    assert size.linear_share == N / 1_000_000
    assert size.relative == pytest.approx(1 - size.linear_share * (1 - size.linears_relative))
    missing = stored_size(report, None)
    assert missing.relative is None and missing.linears_relative == size.linears_relative
    assert missing.reason == "model_num_parameters None does not cover the 131072 compressed weights"


def test_dense_is_one_and_a_missing_report_is_said() -> None:
    dense = stored_size(_report(build_spec("none").to_dict(), zeros=5000), 1_000_000)
    assert (dense.relative, dense.linears_relative) == (1.0, 1.0)
    absent = stored_size(None, 1_000_000)
    assert absent.relative is None and absent.reason == (
        "no compression report with per-layer shapes in the results"
    )
