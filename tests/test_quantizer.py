"""The min-max quantizer: at most 2^bits levels per group row, exact zeros, the grid it reports, and the
quantization model_args (validated before anything loads)."""

from __future__ import annotations

import pytest
import torch

from llmkick_models.arguments import CompressionArgumentError, build_spec
from llmkick_models.engine.quantizer import (
    QuantizerConfig,
    fake_quantize,
    fake_quantize_into,
    find_params,
    level_bounds,
    rtn_quantize,
)
from llmkick_models.workflow.sweep_plan import SweepError, plan_points


def _weights(rows: int = 16, cols: int = 64, seed: int = 0) -> torch.Tensor:
    W = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    W[3] = W[3].abs()  # a row with no negative weights: the range must still contain 0
    W[5] = 0.0  # an all-zero row
    return W


def _max_levels(Q: torch.Tensor, group_size: int | None) -> int:
    size = group_size or Q.shape[1]
    return max(
        len(torch.unique(Q[r, s : s + size])) for r in range(Q.shape[0]) for s in range(0, Q.shape[1], size)
    )


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group_size", [None, 16])
def test_at_most_two_to_the_bits_levels_per_group_row(bits: int, sym: bool, group_size: int | None) -> None:
    W = _weights()
    Q, grid = rtn_quantize(W, QuantizerConfig(bits, sym, group_size))
    assert _max_levels(Q, group_size) <= 2**bits
    assert torch.all(Q[5] == 0)
    assert grid.scale.shape == (16, 64 // (group_size or 64))
    torch.testing.assert_close(grid.dequantize(Q), Q)  # the reported grid is the one the weights lie on
    # Round to nearest: no weight moves by more than half a step (plus clipping, which min-max avoids).
    step = grid.scale[:, grid.group_of_columns(64)]
    assert torch.all((W - Q).abs() <= step / 2 + 1e-6)


def test_zeros_stay_exactly_zero_and_symmetric_grid_is_signed_integers() -> None:
    W = _weights()
    W[:, ::3] = 0.0
    config = QuantizerConfig(4, True, 16)
    Q, grid = rtn_quantize(W, config)
    assert torch.all(Q[:, ::3] == 0)
    codes = Q / grid.scale[:, grid.group_of_columns(64)]
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.round().min() >= -8 and codes.round().max() <= 7
    _, zero = find_params(W[:, :16], QuantizerConfig(4, False, 16))
    assert torch.equal(zero, zero.round()) and torch.all((zero >= 0) & (zero <= 15))


def test_more_bits_means_smaller_error() -> None:
    W = _weights()
    errors = [(rtn_quantize(W, QuantizerConfig(b, True, 16))[0] - W).square().sum() for b in (2, 3, 4, 8)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-3 * errors[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"method": "gptq"}, r"method=gptq needs bits="),
        ({"method": "gptq", "bits": 9}, r"bits=9 is out of range; allowed: an integer from 2 to 8"),
        ({"method": "rtn", "bits": 1}, r"bits=1 is out of range"),
        ({"method": "gptq", "bits": 4, "group_size": 0}, r"group_size=0 is out of range"),
        ({"method": "gptq", "bits": 4, "group_size": -1, "static_groups": True}, r"static_groups=true needs"),
        ({"method": "rtn", "bits": 4, "act_order": True}, r"act_order=True does not apply to method=rtn"),
        ({"method": "sparsegpt", "sparsity": 0.5, "bits": 4, "act_order": True}, r"does not apply"),
        ({"method": "wanda", "sparsity": 0.5, "group_size": 64}, r"group_size=64 needs bits="),
        ({"method": "wanda", "sparsity": 0.5, "percdamp": 0.1}, r"percdamp=0.1 needs bits="),
        ({"method": "magnitude", "sparsity": 0.5, "bits": 4, "act_order": True}, r"quantizer=rtn here"),
        (
            {"method": "wanda", "sparsity": 0.5, "bits": 4, "quantizer": "awq"},
            r"allowed: quantizer=gptq\|rtn",
        ),
        ({"method": "gptq", "bits": 4, "sparsity": 0.5}, r"sparsity=0.5 does not apply to method=gptq"),
        ({"method": "gptq", "bits": 4, "sym": "maybe"}, r"sym='maybe' is not a boolean"),
    ],
)
def test_quantization_args_are_validated_before_load(args: dict, message: str) -> None:
    with pytest.raises(CompressionArgumentError, match=message):
        build_spec(**args)


def test_quantization_spec_defaults_and_recorded_options() -> None:
    gptq = build_spec("gptq", bits=4, calibration="random")
    assert (gptq.group_size, gptq.sym, gptq.act_order, gptq.static_groups) == (128, True, False, False)
    assert gptq.calibration is not None  # calibrated: defaults to c4, here random
    assert build_spec("gptq", bits="3", group_size="-1").group_size is None
    rtn = build_spec("rtn", bits=8)
    assert rtn.calibration is None and rtn.to_dict() == {
        "method": "rtn", "sparsity": 0.0, "pattern": "unstructured",
        "bits": 8, "group_size": 128, "sym": True,
    }  # fmt: skip
    assert build_spec("wanda", 0.5, bits=4).quantizer == "gptq"
    magnitude = build_spec("magnitude", 0.5, bits=4)
    assert magnitude.quantizer == "rtn" and magnitude.calibration is None
    assert build_spec("magnitude", 0.5, bits=4, quantizer="gptq").calibration is not None
    assert "bits" not in build_spec("wanda", 0.5).to_dict()  # pruning alone records no quantizer


def test_sweep_quantization_points_are_validated() -> None:
    points = plan_points(["gptq", "rtn"], bits=[8, 4])
    assert [p.point_id for p in points] == ["dense", "gptq-8bit", "gptq-4bit", "rtn-8bit", "rtn-4bit"]
    with pytest.raises(SweepError, match=r"--bits 9: no method of --methods takes it \(gptq allows 2-8\)"):
        plan_points(["gptq"], bits=[9])


@pytest.mark.parametrize("sym", [True, False])
def test_in_place_fake_quantize_is_bit_for_bit_the_plain_one(sym: bool) -> None:
    """The column loops quantize into a preallocated row (or the weights' own row) with no temporaries;
    the values must be exactly ``fake_quantize``'s, zeros (pruned weights) included."""
    generator = torch.Generator().manual_seed(5)
    W = torch.randn(64, 40, generator=generator)
    W[:, ::7] = 0.0
    config = QuantizerConfig(3, sym, None)
    scale, zero = find_params(W[:, :20], config)  # columns 20.. reach past the grid: clamped levels
    W[0, 30], W[1, 31] = 1e9, -1e9  # levels far beyond 2^24
    low, high = level_bounds(zero.squeeze(1), config.maxq)
    for column in range(W.shape[1]):
        expected = fake_quantize(W[:, column : column + 1], scale, zero, config.maxq).squeeze(1)
        out = torch.empty(W.shape[0])
        fake_quantize_into(out, W[:, column].contiguous(), scale.squeeze(1), low, high)
        assert torch.equal(out, expected)
        row = W[:, column].clone()  # in place: the weights' own row becomes its quantized value
        fake_quantize_into(row, row, scale.squeeze(1), low, high)
        assert torch.equal(row, expected)
