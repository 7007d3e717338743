"""compressed-hf refuses a bad dtype, and an N:M pattern or group size that a layer's width does not take,
before any weight loads; the sweep's pre-flight refuses the same before its first point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from llmkick_models import preload_checks
from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.options import CompressionArgumentError
from llmkick_models.preload_checks import check_dtypes, check_model_args
from llmkick_models.workflow.cli import main
from tiny_models import build_config, build_model, build_tokenizer

HFLM_ARGS = frozenset(["dtype", "device", "revision", "softmax_dtype", "mixed_precision_dtype"])


@pytest.fixture
def no_weight_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if HFLM gets as far as loading a model."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the bad argument was refused")

    monkeypatch.setattr(HFLM, "_create_model", refuse)


_NOT_A_DTYPE = "is not a dtype compressed-hf can use; allowed: "
_FLOATS = "float16 (half), bfloat16, float32 (float), float64 (double)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"dtype": "float13"}, f"dtype='float13' {_NOT_A_DTYPE}auto (the checkpoint's own), {_FLOATS}"),
        ({"dtype": "torch.bfloat16"}, "; write dtype=bfloat16 (without torch.)"),
        ({"dtype": "int8"}, f"dtype='int8' {_NOT_A_DTYPE}auto"),
        ({"softmax_dtype": "auto"}, f"softmax_dtype='auto' {_NOT_A_DTYPE}{_FLOATS}"),
        ({"mixed_precision_dtype": "float13"}, f"mixed_precision_dtype='float13' {_NOT_A_DTYPE}{_FLOATS}"),
    ],
)
def test_bad_dtypes_are_refused_before_loading(
    args: dict, message: str, tmp_path: Path, no_weight_loads: None
) -> None:
    with pytest.raises(CompressionArgumentError, match=re.escape(message)):
        CompressedHFLM(pretrained=str(tmp_path / "no-such-model"), device="cpu", **args)


@pytest.mark.parametrize(
    "value",
    ["auto", "float16", "half", "bfloat16", "float32", "float", "float64", "double", torch.bfloat16, None],
)
def test_every_dtype_hflm_resolves_passes(value: object) -> None:
    check_dtypes({"dtype": value})
    if value != "auto":
        check_dtypes({"softmax_dtype": value, "mixed_precision_dtype": value})


_Q_PROJ = r"layer model\.layers\.0\.self_attn\.q_proj"
WIDTH_CASES = [
    ("llama", {"pattern": "2:3"}, rf"pattern=2:3: {_Q_PROJ} has 64 input columns, not a multiple of 3; .* "
     r"\(model config: hidden_size=64; checked before loading the weights\)"),
    ("gpt2", {"pattern": "2:3"}, r"pattern=2:3: layer transformer\.h\.0\.attn\.c_attn has 64 input "
     r"columns.*model config: n_embd=64"),
    ("gpt_neox", {"pattern": "1:3"}, r"pattern=1:3: .* has 64 input columns.*hidden_size=64"),
    ("qwen2", {"method": "rtn", "bits": 4, "group_size": 64}, r"group_size=64: layer model\.layers\.0\."
     r"mlp\.down_proj has 96 input columns, not a multiple of 64.*model config: intermediate_size=96"),
]  # fmt: skip


@pytest.mark.parametrize(("arch", "args", "message"), WIDTH_CASES)
def test_widths_are_checked_from_the_config_before_loading(
    tiny_model_dirs: dict[str, Path], arch: str, args: dict, message: str, no_weight_loads: None
) -> None:
    args = {"method": "magnitude", **args}
    with pytest.raises(CompressionArgumentError, match=message):
        CompressedHFLM(pretrained=str(tiny_model_dirs[arch]), device="cpu", **args)


def test_attention_output_width_is_named_by_heads_and_head_dim(tmp_path: Path) -> None:
    import transformers

    tokenizer = build_tokenizer()
    config = build_config("llama", len(tokenizer))
    config.head_dim = 24  # o_proj reads 4 x 24 = 96 columns, every other linear 64 or 128
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    expected = r"o_proj has 96 input.*num_attention_heads x head_dim = 4 x 24"
    with pytest.raises(CompressionArgumentError, match=expected):
        check_model_args(str(tmp_path), {"method": "magnitude", "pattern": "32:64"}, HFLM_ARGS)


def test_widths_that_fit_pass_and_return_the_config(tiny_llama_dir: Path) -> None:
    checked = check_model_args(str(tiny_llama_dir), {"method": "magnitude", "pattern": "8:16"}, HFLM_ARGS)
    assert checked.config.hidden_size == 64 and checked.spec.pattern is not None


def test_a_loaded_model_is_checked_on_its_own_layers() -> None:
    tokenizer = build_tokenizer()
    model = build_model("llama", tokenizer)
    before = [t.weight.clone() for t in decoder_linears(model)]
    with pytest.raises(
        CompressionArgumentError, match=r"pattern=2:3: .*hidden_size=64; checked before loading"
    ):
        CompressedHFLM(pretrained=model, tokenizer=tokenizer, method="magnitude", pattern="2:3")
    assert all(torch.equal(b, t.weight) for b, t in zip(before, decoder_linears(model), strict=True))


def test_an_unbuildable_config_is_left_to_the_check_after_loading(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No config at all: the load reports the missing model itself.
    check_model_args(str(tmp_path / "no-such-model"), {"method": "magnitude", "pattern": "2:3"}, HFLM_ARGS)
    import transformers

    def cannot_build(*args: object, **kwargs: object) -> None:
        raise ValueError("unknown architecture")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", cannot_build)
    preload_checks._meta_linears.cache_clear()
    try:
        checked = check_model_args(str(tiny_llama_dir), {"method": "magnitude", "pattern": "2:3"}, HFLM_ARGS)
        assert checked.config is None  # no guess: nothing refused before loading
        # ... but a calibrated method still gets the config's hidden size for its memory check
        calibrated = {"method": "wanda", "pattern": "2:3", "calibration": "random"}
        assert check_model_args(str(tiny_llama_dir), calibrated, HFLM_ARGS).config.hidden_size == 64
        with pytest.raises(ValueError, match=rf"pattern=2:3: {_Q_PROJ} has 64"):
            CompressedHFLM(pretrained=str(tiny_llama_dir), device="cpu", method="magnitude", pattern="2:3")
    finally:
        preload_checks._meta_linears.cache_clear()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--patterns", "2:3"],
            "point magnitude-2of3: pattern=2:3: layer model.layers.0.self_attn.q_proj has 64",
        ),
        (["--patterns", "2:4", "--model_args", "dtype=float13"], "dtype='float13' is not a dtype"),
    ],
)
def test_the_sweep_refuses_them_before_point_1(
    tiny_llama_dir: Path,
    local_task_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_weight_loads: None,
    extra: list[str],
    message: str,
) -> None:
    run_dir = tmp_path / "run"
    argv = ["sweep", "--model", str(tiny_llama_dir), "--methods", "magnitude", "--device", "cpu",
            "--tasks", "local_fixture_choice", "--include_path", str(local_task_dir),
            "--output", str(run_dir), *extra]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (run_dir / "points").exists()
