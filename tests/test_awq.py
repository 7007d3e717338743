"""AWQ (``method=awq``): the α search, the folding of its scales, refusals, errors against RTN, report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from calibration_fixtures import calibration_set, compress_tiny, write_corpus

import llmkick_models.engine.methods.awq as awq
from llmkick_models.arguments import build_spec
from llmkick_models.engine.awq_folding import AWQFoldingError
from llmkick_models.engine.awq_search import ScaleChoice, search_clip, search_scales
from llmkick_models.engine.compress import compress_model
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.engine.options import CompressionArgumentError
from llmkick_models.engine.quantizer import QuantizerConfig
from tiny_models import ARCHITECTURES, build_model, build_tokenizer


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):
    return calibration_set(str(write_corpus(tmp_path_factory.mktemp("awq_corpus"))), nsamples=8)


def _fake_quantize(W: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Asymmetric min-max round-to-nearest per row and group, written out independently in float64."""
    rows, columns = W.shape
    segments = W.reshape(rows, columns // group, group)
    low = segments.amin(-1, keepdim=True).clamp(max=0)
    high = segments.amax(-1, keepdim=True).clamp(min=0)
    step = (high - low) / (2**bits - 1)
    zero = torch.round(-low / step)
    codes = torch.clamp(torch.round(segments / step) + zero, 0, 2**bits - 1)
    return (step * (codes - zero)).reshape(rows, columns)


def test_alpha_search_keeps_the_brute_force_best_alpha() -> None:
    """Every α's error is the output error ‖(Ŵ − W) Xᵀ‖² on the tokens themselves, and the kept α is the
    brute-force argmin over the same candidates."""
    torch.manual_seed(0)
    X = torch.randn(300, 32, dtype=torch.float64) * torch.linspace(0.05, 8.0, 32, dtype=torch.float64)
    W = torch.randn(12, 32, dtype=torch.float64)
    magnitude = X.abs().mean(0)
    errors = []
    for step in range(10):
        s = magnitude.pow(step / 10).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        W_hat = _fake_quantize(W * s, bits=3, group=8) / s
        errors.append(float(((W_hat - W) @ X.t()).square().sum()))
    choice = search_scales(
        W.float(), magnitude.float(), (X.t() @ X).float(), QuantizerConfig(3, False, 8), 10
    )
    assert choice.errors == pytest.approx(errors, rel=1e-3)
    assert choice.alpha == errors.index(min(errors)) / 10
    assert choice.alpha > 0  # the outlier channels make scaling worth it here: not the trivial α = 0


def test_clip_search_minimises_each_groups_output_error() -> None:
    torch.manual_seed(1)
    X = torch.randn(200, 16)
    W = torch.randn(4, 16)
    W[0, 3] = 9.0  # an outlier weight: clipping its group pays off
    H = X.t() @ X
    config = QuantizerConfig(3, False, 8)
    clipped, ratios = search_clip(W, H, config)
    assert ratios.shape == (4, 2) and ratios[0, 0] < 1
    assert (clipped.abs() <= W.abs()).all() and clipped[0, 3] < 9.0
    for row in range(4):
        for group in range(2):
            cols = slice(group * 8, group * 8 + 8)
            w = W[row : row + 1, cols]

            def error(ratio: float, w: torch.Tensor = w, cols: slice = cols) -> float:
                bound = w.abs().max() * ratio
                d = _fake_quantize(w.clamp(-bound, bound).double(), 3, 8) - w.double()
                return float(d @ H[cols, cols].double() @ d.t())

            best = min(error(1 - i / 20) for i in range(10))
            assert error(float(ratios[row, group])) == pytest.approx(best, rel=1e-4)


def _tiny(arch: str) -> torch.nn.Module:
    """The tiny ``arch``; also Llama, Gemma 3 and Phi-3 with as many key/value heads as heads (so o ← v
    folds), Gemma 3's norms multiplying by (1 + weight), Phi-3's fused qkv_proj and gate_up_proj.  Norm
    weights randomised: folding must move them."""
    tokenizer = build_tokenizer()
    if arch in ARCHITECTURES:
        model = build_model(arch, tokenizer)
    else:
        torch.manual_seed(0)
        common = {"vocab_size": len(tokenizer), "bos_token_id": len(tokenizer) - 1, "eos_token_id": 0}
        shape = {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        }
        shape |= {"num_key_value_heads": 4, "max_position_embeddings": 256}
        if arch == "llama_mha":
            config = transformers.LlamaConfig(**shape, **common)
        elif arch == "phi3":  # fused qkv_proj and gate_up_proj
            config = transformers.Phi3Config(**shape, **common, pad_token_id=0)
        else:
            config = transformers.Gemma3TextConfig(**shape, **common, head_dim=16, sliding_window=32)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if (parameter.dim() == 1 and "norm" in name.lower()) or ".ln_" in name:
                parameter.uniform_(0.5, 1.5)
    return model


FOLD_ARCHITECTURES = (*ARCHITECTURES, "llama_mha", "gemma3", "phi3")


@pytest.mark.parametrize("arch", FOLD_ARCHITECTURES)
def test_folding_alone_keeps_the_logits(calibration, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random scales in [0.25, 4] folded everywhere AWQ folds them, and quantization off: the logits move by
    less than 1e-5 relative, while the weights and norms did change."""
    generator = torch.Generator().manual_seed(0)

    def random_scales(W, magnitude, H, config, grid) -> ScaleChoice:
        return ScaleChoice(0.5, torch.rand(W.shape[1], generator=generator) * 3.75 + 0.25, [])

    monkeypatch.setattr(awq, "search_scales", random_scales)
    monkeypatch.setattr(awq, "quantize_scaled", lambda W, H, config, clip: (W, None, None))
    model = _tiny(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = calibration.input_ids[:2]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    spec = build_spec("awq", group_size=16, calibration="random")
    report = compress_model(model, spec, calibration=calibration)
    with torch.no_grad():
        actual = model(input_ids=ids).logits
    assert float((actual - expected).norm() / expected.norm()) < 1e-5
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any("norm" in k or ".ln_" in k for k in changed), "no norm absorbed a scale"
    scaled = {layer.name.split(".")[-1] for layer in report.layers if "awq_alpha" in layer.extra}
    expected_scaled = {
        "llama": {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"},  # o: GQA, skipped
        "qwen2": {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"},
        "gpt_neox": {"query_key_value", "dense_h_to_4h"},  # o: fused, interleaved heads; fc2 after gelu
        "gpt2": {"c_attn", "c_proj", "c_fc"},  # attention's c_proj ← v third of c_attn; mlp.c_proj: gelu
        "llama_mha": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
        "gemma3": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
        "phi3": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},  # o ← v third, down ← up half
    }[arch]
    assert scaled == expected_scaled


class _AddedBias(torch.nn.Module):
    """A norm-like op whose weight is added, not multiplied: no per-channel scale can fold into it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.rms_norm(x, x.shape[-1:]) + self.weight


def test_op_that_cannot_absorb_a_scale_is_refused_before_any_weight_changes(calibration) -> None:
    model = build_model("llama", build_tokenizer())
    for layer in model.model.layers:
        layer.input_layernorm = _AddedBias(64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        AWQFoldingError,
        match=r"method=awq cannot fold its scales into model\.layers\.0\.input_layernorm \(_AddedBias\), "
        r"which produces the input of model\.layers\.0\.self_attn\.q_proj\+.*no weight has been changed",
    ):
        compress_model(model, build_spec("awq", group_size=16, calibration="random"), calibration=calibration)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_folding_that_changes_the_block_output_is_put_back_and_named(calibration, monkeypatch) -> None:
    """The numeric guard: were o_proj's scale folded into q_proj's rows (which do not feed o channel by
    channel), the block's output on the first sample changes; every weight is restored and the block named."""
    from llmkick_models.engine.awq_folding import SinkLayout, find_sinks

    def wrong_sinks(block):
        sinks = find_sinks(block)
        sinks[1] = SinkLayout("self_attn.q_proj", "linear", 0, 64)  # groups: q/k/v, o, gate/up, down
        return sinks

    monkeypatch.setattr(awq, "find_sinks", wrong_sinks)
    model = build_model("llama", build_tokenizer())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(AWQFoldingError, match=r"folding the scales of model\.layers\.0 .* were put back"):
        compress_model(model, build_spec("awq", group_size=16, calibration="random"), calibration=calibration)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"awq_grid": 0}, r"awq_grid=0 is out of range; allowed: an integer >= 1"),
        ({"bits": 9}, r"bits=9 is out of range; allowed: an integer from 2 to 8"),
        ({"sparsity": 0.5}, r"sparsity=0.5 does not apply to method=awq: AWQ searches the scales of a whole"),
        ({"pattern": "2:4"}, r"pattern='2:4' does not apply to method=awq: AWQ searches"),
        ({"awq_clip": "maybe"}, r"awq_clip='maybe' is not a boolean"),
    ],
)
def test_bad_awq_arguments_are_refused_before_load(args: dict, message: str) -> None:
    with pytest.raises(CompressionArgumentError, match=message):
        build_spec("awq", **args)


def test_awq_after_pruning_is_refused_with_the_reason() -> None:
    with pytest.raises(
        CompressionArgumentError, match=r"quantizer='awq'.*AWQ searches the scales of a whole"
    ):
        build_spec("wanda", 0.5, bits=4, quantizer="awq")


def test_defaults_and_cache_identity() -> None:
    """4-bit asymmetric groups of 128 with the clip search by default; every option is part of the spec's
    recorded form, which the cache key hashes."""
    spec = build_spec("awq")
    recorded = spec.to_dict()
    assert (spec.bits, spec.sym, spec.group_size) == (4, False, 128)
    assert recorded["awq_grid"] == 20 and recorded["awq_clip"] is True
    assert build_spec("awq", awq_grid=10).to_dict() != recorded
    assert build_spec("awq", awq_clip=False).to_dict() != recorded


GROUPS = {"attn_in": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "mlp_in": ("gate_proj", "up_proj")}
GROUPS |= {"down": ("down_proj",)}


def _first_block_group_errors(report, kept: dict[str, float]) -> dict[str, float]:
    """Absolute output errors of block 0's input groups: relative errors times ‖W X‖² (``kept``)."""
    errors = {layer.name: layer.extra["recon_error"] for layer in report.layers}
    return {
        group: sum(errors[name] * kept[name] for name in kept if name.rsplit(".", 1)[-1] in projections)
        for group, projections in GROUPS.items()
    }


def test_error_is_never_above_rtn_on_the_same_grid(calibration) -> None:
    """Without clipping, α = 0 is RTN itself, so each group's output error in block 0 (same inputs for
    both) is at most RTN's; o_proj (GQA: no scale) is RTN's exactly."""
    model = build_model("llama", build_tokenizer())
    kept: dict[str, float] = {}
    hooks = []
    for target in decoder_linears(model):
        if target.block_index == 0:

            def record(module, args, output, name=target.name) -> None:
                kept[name] = kept.get(name, 0.0) + float(output.double().square().sum())

            hooks.append(target.module.register_forward_hook(record))
    with torch.no_grad():
        model(input_ids=calibration.input_ids)
    for hook in hooks:
        hook.remove()
    args = {"bits": 3, "group_size": 16, "sym": False}
    _, ours = compress_tiny("llama", calibration, "awq", awq_clip=False, **args)
    _, rtn = compress_tiny("llama", calibration, "rtn", error_tokens="all", **args)
    ours_errors, rtn_errors = _first_block_group_errors(ours, kept), _first_block_group_errors(rtn, kept)
    for group in ("attn_in", "mlp_in", "down"):
        assert ours_errors[group] <= rtn_errors[group] * (1 + 1e-5), group
    assert ours_errors["attn_in"] < rtn_errors["attn_in"]
    assert ours_errors["o"] == pytest.approx(rtn_errors["o"], rel=1e-4)


def test_report_carries_alpha_clip_and_errors(calibration) -> None:
    _, report = compress_tiny("qwen2", calibration, "awq", group_size=16)
    layers = {layer.name: layer.extra for layer in report.layers}
    q = layers["model.layers.0.self_attn.q_proj"]
    assert q["bits"] == 4 and q["group_size"] == 16
    assert (
        0 <= q["awq_alpha"] < 1 and q["awq_alpha"] == layers["model.layers.0.self_attn.v_proj"]["awq_alpha"]
    )
    assert 0.55 <= q["awq_clip_min"] <= q["awq_clip_mean"] <= 1
    assert layers["model.layers.0.self_attn.o_proj"]["awq_scaled"] == 0
    assert all(0 < extra["recon_error"] < 1 for extra in layers.values())
    assert set(report.quantized) == set(layers)


def test_lm_eval_runs_awq_on_load(tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    corpus = write_corpus(tmp_path / "corpus")
    results = simple_evaluate(
        model="compressed-hf",
        model_args=f"pretrained={tiny_llama_dir},method=awq,group_size=16,calibration={corpus},nsamples=4,seqlen=32",
        tasks=["local_fixture_choice"],
        task_manager=TaskManager(include_path=str(local_task_dir)),
        device="cpu",
        limit=4,
    )
    report = results["config"]["llmkick_compression"]
    assert report["spec"]["method"] == "awq" and report["spec"]["awq_grid"] == 20
    assert "awq_alpha" in report["layers"]["model.layers.0.self_attn.q_proj"]["extra"]
    assert "acc,none" in results["results"]["local_fixture_choice"]


def test_mean_magnitudes_are_accumulated_only_for_methods_that_read_them(calibration, monkeypatch) -> None:
    """The running mean of |x_j| over batches equals the mean over all tokens; the driver keeps it only
    when a method's needs ask for it (AWQ), not for GPTQ."""
    import llmkick_models.engine.sequential as sequential
    from llmkick_models.engine.input_statistics import InputStatistics

    X = torch.randn(3, 50, 16)
    stats = InputStatistics(16, torch.device("cpu"), feature_abs_means=True)
    for batch in X:
        stats.add(batch)
    assert torch.allclose(stats.feature_abs_mean, X.reshape(-1, 16).abs().mean(0), rtol=1e-5)
    made: list[InputStatistics] = []

    def recording(*a, **k):
        made.append(InputStatistics(*a, **k))
        return made[-1]

    monkeypatch.setattr(sequential, "InputStatistics", recording)
    compress_tiny("llama", calibration, "gptq", bits=4, group_size=16)
    assert made and all(s._feature_abs_mean is None for s in made)
    with pytest.raises(ValueError, match=r"Needs\(feature_abs_means=True\)"):
        made[0].feature_abs_mean  # noqa: B018
    made.clear()
    compress_tiny("llama", calibration, "awq", group_size=16)
    assert made and all(s._feature_abs_mean is not None for s in made)


def test_awq_model_is_cached_and_a_hit_is_verified(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """The folded norms travel with the cached weights: a hit gives the same state and logits, and the
    hit's measured report (levels per group within 2^bits) holds."""
    from llmkick_models.compressed_hf import CompressedHFLM

    corpus = write_corpus(tmp_path / "corpus")
    args = {"pretrained": str(tiny_llama_dir), "device": "cpu", "method": "awq", "group_size": 16}
    args |= {
        "calibration": str(corpus),
        "nsamples": 4,
        "seqlen": 32,
        "llmkick_cache_dir": str(tmp_path / "c"),
    }
    first = CompressedHFLM(**args)
    second = CompressedHFLM(**args)
    info = second.get_model_info()["llmkick_compression"]
    assert info["cache"]["hit"] is True and info["spec"]["awq_clip"] is True
    first_state, second_state = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)
    dense = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    norm = "model.layers.0.input_layernorm.weight"
    assert not torch.equal(second_state[norm], dense.state_dict()[norm])  # the folded scales came back
    other = CompressedHFLM(**(args | {"awq_grid": 5}))
    assert other.get_model_info()["llmkick_compression"]["cache"]["hit"] is False


def test_groups_left_unscaled_are_logged_once(calibration, caplog: pytest.LogCaptureFixture) -> None:
    """Under GQA no op feeds o_proj channel by channel: said once for the block structure, not per block."""
    import logging

    with caplog.at_level(logging.INFO, logger="llmkick_models.engine.methods.awq"):
        compress_tiny("llama", calibration, "awq", group_size=16)
    lines = [r.getMessage() for r in caplog.records if "absorbs a per-channel scale" in r.getMessage()]
    assert lines == [
        "method=awq: no op before model.layers.0.self_attn.o_proj (and the same linears of the following "
        "blocks) absorbs a per-channel scale; they are rounded without AWQ scales, as the reference does"
    ]


@pytest.mark.parametrize(
    ("gains", "scales"),
    [
        ((0.5, 1.5), (1.0, 300.0)),  # w' = (1 + w)/s − 1 near −1: bfloat16 keeps ~2^-9 of 1 + w'
        ((10.0, 30.0), (0.25, 4.0)),  # |w| as on Gemma-3-270m: 1 + w/s within 2% of (1 + w)/s
    ],
)
def test_gemma_norms_absorb_scales_in_bfloat16(
    calibration, monkeypatch: pytest.MonkeyPatch, gains: tuple[float, float], scales: tuple[float, float]
) -> None:
    """Gemma 3's norms multiply by (1 + w).  In bfloat16 the form must still be told apart from y·w when
    |w| is large (the check runs in float32), and large scales, whose folded 1 + w' bfloat16 rounds by tens
    of percent, are matched by the linears' columns taking the scale the stored norm realises: the folding
    check passes, every group is scaled, and the logits stay within twice the bfloat16 model's own distance
    from float32."""
    generator = torch.Generator().manual_seed(0)
    low, high = scales

    def random_scales(W, magnitude, H, config, grid) -> ScaleChoice:
        return ScaleChoice(0.5, torch.rand(W.shape[1], generator=generator) * (high - low) + low, [])

    monkeypatch.setattr(awq, "search_scales", random_scales)
    monkeypatch.setattr(awq, "quantize_scaled", lambda W, H, config, clip: (W, None, None))
    model = _tiny("gemma3")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("input_layernorm.weight", "pre_feedforward_layernorm.weight")):
                parameter.uniform_(*gains)  # the norms that absorb scales
    ids = calibration.input_ids[:2]
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        unfolded = model.to(torch.bfloat16)(input_ids=ids).logits.float()
    report = compress_model(
        model, build_spec("awq", group_size=16, calibration="random"), calibration=calibration
    )
    with torch.no_grad():
        folded = model(input_ids=ids).logits.float()

    def off(logits: torch.Tensor) -> float:
        return float((logits - reference).norm() / reference.norm())

    assert off(folded) < 2 * off(unfolded)
    assert all("awq_alpha" in layer.extra for layer in report.layers)
