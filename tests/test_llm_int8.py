"""method=llm_int8: its arguments refused before load, its modules equal to bitsandbytes' own and explained
by a float64 reference of LLM.int8()'s decomposition, the outlier share measured from what was routed."""

from __future__ import annotations

import sys

import pytest
import torch
from calibration_fixtures import calibration_set, compress_tiny, write_corpus
from torch import nn

from llmkick_models.engine.methods import build_spec
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.options import CompressionArgumentError
from llmkick_models.preload_checks import check_model_args

bnb = pytest.importorskip("bitsandbytes", reason="the [int8] extra (bitsandbytes) is not installed")

from llmkick_models.engine.int8_modules import (  # noqa: E402
    int8_linear,
    int8_problems,
    int8_state,
    replace_with_int8,
)

CPU = torch.device("cpu")
#: Unit roundoff of what bitsandbytes computes the output in: float32 dequantization for float32/float64
#: models, then the model's own dtype for the others.
ROUNDOFF = {torch.float32: 2**-24, torch.float64: 2**-24, torch.float16: 2**-11, torch.bfloat16: 2**-8}
#: bitsandbytes' dequantization constant for 1/127² (= 6.2000124e-05): 1.8e-5 relative too large.
BNB_INV_127_SQUARED = 6.200124e-05


# --- arguments --------------------------------------------------------------------------------------------


def test_defaults_are_8_bits_threshold_6_per_row_scales() -> None:
    spec = build_spec("llm_int8")
    assert (spec.bits, spec.group_size, spec.option("int8_threshold")) == (8, None, 6.0)
    assert spec.calibration is not None and spec.calibration.source == "c4"  # measures the outlier share
    recorded = spec.to_dict()
    assert (recorded["bits"], recorded["group_size"], recorded["int8_threshold"]) == (8, -1, 6.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"bits": 4}, r"bits=4 is out of range; allowed: bits=8 "),
        ({"bits": 16}, r"bits=16 is out of range; allowed: bits=8 "),
        ({"sparsity": 0.5}, r"sparsity=0.5 does not apply to method=llm_int8 .*magnitude\|wanda\|sparsegpt"),
        ({"pattern": "2:4"}, r"pattern='2:4' does not apply to method=llm_int8"),
        ({"int8_threshold": 0}, r"int8_threshold=0 is out of range; allowed: a number > 0"),
        ({"int8_threshold": -6.0}, r"int8_threshold=-6.0 is out of range; allowed: a number > 0"),
        ({"int8_threshold": "nan"}, r"int8_threshold='nan' is out of range"),
        ({"int8_threshold": "six"}, r"int8_threshold='six' is not a number"),
        ({"group_size": 128}, r"group_size=128 does not apply to method=llm_int8"),
    ],
)
def test_bad_arguments_are_refused_naming_them(args: dict, message: str) -> None:
    with pytest.raises(CompressionArgumentError, match=message):
        build_spec("llm_int8", **args)


@pytest.mark.parametrize("method", ["none", "magnitude", "llm_int8"])
def test_load_in_8bit_is_refused_with_every_method(method: str) -> None:
    args = {"method": method, "load_in_8bit": True, **({"sparsity": 0.5} if method == "magnitude" else {})}
    with pytest.raises(CompressionArgumentError, match=r"load_in_8bit=True cannot be used .*method=llm_int8"):
        check_model_args("no/such-model", args, ())  # refused before the model id is even looked up


def test_missing_bitsandbytes_fails_before_load_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmkick_models.compressed_hf import CompressedHFLM

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what find_spec reports for a missing package
    with pytest.raises(CompressionArgumentError) as error:
        CompressedHFLM(pretrained="no/such-model", method="llm_int8")  # loading would fail otherwise
    assert str(error.value) == (
        "method=llm_int8 needs bitsandbytes, which is not installed: pip install 'llmkick[int8]' "
        "(or: pip install 'bitsandbytes>=0.50')"
    )


def test_too_old_bitsandbytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmkick_models.engine.int8_modules.version", lambda _name: "0.45.5")
    with pytest.raises(CompressionArgumentError, match=r"needs bitsandbytes>=0.50 \(found 0.45.5\)"):
        build_spec("llm_int8")


def test_the_sweep_plan_takes_llm_int8_at_8_bits_only() -> None:
    from llmkick_models.workflow.sweep_plan import plan_points

    points = plan_points(["gptq", "llm_int8"], bits=[8])
    assert [(p.method, p.bits) for p in points] == [("none", None), ("gptq", 8), ("llm_int8", 8)]
    with pytest.raises(ValueError, match="bits"):  # never a 4-bit llm_int8 point (how it is said may change)
        plan_points(["llm_int8"], bits=[4])


# --- the modules against bitsandbytes' own and against a float64 reference -----------------------------


def _bnb_reference_module(weight: torch.Tensor, bias: torch.Tensor | None, threshold: float) -> nn.Module:
    """Linear8bitLt built as bitsandbytes documents: float state dict loaded, then moved to the device."""
    rows, cols = weight.shape
    layer = bnb.nn.Linear8bitLt(cols, rows, bias is not None, has_fp16_weights=False, threshold=threshold)
    layer.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
    return layer.to("cpu").eval()


def _inputs_with_outliers(width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 24, width, generator=generator)
    x[torch.rand(x.shape, generator=generator) < 0.004] *= 12  # a few features far above the threshold
    return x.to(dtype)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # gpt2: Conv1D weights, stored transposed
def test_modules_built_on_load_equal_bitsandbytes_own(arch: str) -> None:
    dense, _ = compress_tiny(arch, None, "none")
    originals = {t.name: (t.weight.clone(), t.module.bias) for t in decoder_linears(dense)}
    calibration = calibration_set("random", nsamples=2, seqlen=16)
    model, _ = compress_tiny(arch, calibration, "llm_int8", int8_threshold=3.0)
    for index, target in enumerate(decoder_linears(model)):
        weight, bias = originals[target.name]
        reference = _bnb_reference_module(weight, bias, 3.0)
        x = _inputs_with_outliers(target.shape[1], torch.float32, seed=index)
        with torch.no_grad():
            ours, theirs = target.module(x), reference(x)
        assert target.module.state.idx.numel() > 0, "the inputs should exercise the outlier path"
        assert torch.equal(ours, theirs), target.name
        assert torch.equal(target.module.state.idx, reference.state.idx)
        for mine, own in zip(int8_state(target.module), int8_state(reference), strict=True):
            assert torch.equal(mine, own)


def _decomposition_float64(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, threshold: float, inv_127_squared: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """LLM.int8() in float64: weights per output row and activations per token on absmax int8 grids (from
    their float16 values, the scale 127/absmax rounded to float32 as bitsandbytes does, so the codes are
    the same integers), outlier input columns (|x| >= threshold in some token) multiplied in full precision
    with the dequantized int8 weights.  Returns the output and the magnitude its rounding errors scale by."""

    def codes(values: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
        return torch.round(values.float() * (127.0 / absmax.float())[:, None]).double()

    half, w_half = x.half(), weight.half()
    w_scale = w_half.abs().amax(dim=1).double()
    w_codes = codes(w_half, w_scale)
    outliers = half.abs() >= threshold
    columns = outliers.any(dim=0)
    regular = half.masked_fill(outliers, 0)  # the outliers themselves do not set a token's scale
    x_scale = regular.abs().amax(dim=1).double()
    x_codes = codes(regular, x_scale)
    x_codes[:, columns] = 0
    int8_part = (x_codes @ w_codes.T) * x_scale[:, None] * w_scale[None, :] * inv_127_squared
    w_outlier = w_codes[:, columns] * w_scale[:, None] / 127
    outlier_part = x.double()[:, columns] @ w_outlier.T
    magnitude = int8_part.abs() + x.double()[:, columns].abs() @ w_outlier.abs().T + bias.double().abs()
    return int8_part + outlier_part + bias.double(), magnitude


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_float64_reference_explains_the_output(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    dense = nn.Linear(256, 96).to(dtype)
    module = int8_linear(dense, 3.0, CPU).eval()
    x = _inputs_with_outliers(256, dtype, seed=1).reshape(-1, 256)
    with torch.no_grad():
        out = module(x).double()
    weight, bias = dense.weight.detach(), dense.bias.detach()
    reference, magnitude = _decomposition_float64(x, weight, bias, 3.0, BNB_INV_127_SQUARED)
    codes, scales = int8_state(module)
    assert torch.equal(codes.double(), torch.round(weight.half().float() * (127 / scales)[:, None]).double())
    # float32/float64 models: a few roundings of the float32 dequantization products; 16-bit models: two
    # roundings to the model's dtype (the dequantized int8 part, then the sum with the outlier part).
    tolerance = (8 if ROUNDOFF[dtype] == 2**-24 else 2) * ROUNDOFF[dtype] * magnitude
    assert bool(((out - reference).abs() <= tolerance).all())
    assert module.state.idx.numel() > 0
    # The reference is not loose: without the 16-bit outlier columns, or the dense product, falls outside it
    # (in bfloat16 the int8 error is within the output's own rounding: only the first is told apart).
    no_outliers, _ = _decomposition_float64(x, weight, bias, float("inf"), BNB_INV_127_SQUARED)
    dense_out = x.double() @ weight.double().T + bias.double()
    for other in (no_outliers, dense_out) if dtype != torch.bfloat16 else (no_outliers,):
        assert bool(((out - other).abs() > tolerance).any())
    if ROUNDOFF[dtype] == 2**-24:  # what the 1.8e-5 gap to the exact 1/127² explains
        exact, _ = _decomposition_float64(x, weight, bias, 3.0, 1 / 127**2)
        assert bool(((out - exact).abs() > tolerance).any())


# --- the outlier share --------------------------------------------------------------------------------------


def test_outlier_share_is_what_bitsandbytes_routed(tmp_path) -> None:
    calibration = calibration_set(str(write_corpus(tmp_path)), nsamples=3, seqlen=24)
    model, report = compress_tiny("llama", calibration, "llm_int8", int8_threshold=2.0)
    targets = decoder_linears(model)
    # Count independently: the float16 inputs of each forward, column by column.
    seen: dict[str, list[torch.Tensor]] = {t.name: [] for t in targets}
    hooks = [
        t.module.register_forward_pre_hook(
            lambda _m, args, name=t.name: seen[name].append(
                (args[0].half().abs() >= 2.0).flatten(0, -2).any(0)
            )
        )
        for t in targets
    ]
    with torch.no_grad():
        for window in calibration.input_ids:
            model(input_ids=window[None], use_cache=False)
    for hook in hooks:
        hook.remove()
    layers = report.to_dict()["layers"]
    shares = []
    for target in targets:
        per_forward = torch.stack(seen[target.name]).double()
        facts = layers[target.name]["extra"]
        assert facts["outlier_forwards"] == 3
        assert facts["outlier_share"] == pytest.approx(float(per_forward.mean()), abs=1e-12)
        assert facts["outlier_share_max"] == pytest.approx(float(per_forward.mean(1).max()), abs=1e-12)
        assert facts["outlier_dims_ever"] == pytest.approx(float(per_forward.amax(0).mean()), abs=1e-12)
        shares.append((facts["outlier_share"], target.shape[1]))
    assert 0 < report.outlier_share < 1  # the threshold splits the dimensions on this model
    overall = sum(s * w for s, w in shares) / sum(w for _, w in shares)
    assert report.to_dict()["outlier_share"] == pytest.approx(overall)
    assert report.to_dict()["calibration"]["tokens"] == 72


def test_int8_problems_names_what_is_wrong() -> None:
    calibration = calibration_set("random", nsamples=1, seqlen=8)
    model, _ = compress_tiny("llama", calibration, "llm_int8")
    targets = decoder_linears(model)
    assert int8_problems(targets, 6.0) == []
    assert "threshold 6.0" in int8_problems(targets[:1], 5.0)[0]
    targets[1].module.weight.data[0] //= 2  # no longer on the absmax grid
    assert int8_problems(targets[1:2], 6.0) == [f"{targets[1].name}: 1 rows are not on an absmax int8 grid"]
    dense, _ = compress_tiny("llama", None, "none")
    assert "not a bitsandbytes Linear8bitLt" in int8_problems(decoder_linears(dense)[:1], 6.0)[0]


def test_offloaded_weights_are_refused_before_any_module_changes() -> None:
    model, _ = compress_tiny("llama", None, "none")
    targets = decoder_linears(model)
    targets[3].module.to("meta")  # what accelerate's CPU/disk offload leaves in the module
    with pytest.raises(ValueError, match=rf"method=llm_int8: {targets[3].name} is offloaded"):
        replace_with_int8(model, targets, 6.0, None)
    assert not any(isinstance(t.module, bnb.nn.Linear8bitLt) for t in decoder_linears(model))
