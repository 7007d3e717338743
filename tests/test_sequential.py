"""The block-by-block driver: faithful replay, shared-input groups, error accounting, offload, ordering."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers
from calibration_fixtures import calibration_set, compress_tiny, write_corpus

from llmkick_models.arguments import build_spec
from llmkick_models.engine.block_inputs import capture_first_block_inputs
from llmkick_models.engine.compress import compress_model
from llmkick_models.engine.model_layout import decoder_linears, find_decoder_blocks
from llmkick_models.engine.sequential import probe_input_groups
from tiny_models import ARCHITECTURES, build_model, build_tokenizer, save_tiny_model


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory):
    return calibration_set(str(write_corpus(tmp_path_factory.mktemp("sequential_corpus"))))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_captured_inputs_replay_the_model_exactly(calibration, arch: str) -> None:
    """Block 0's captured arguments, replayed block by block, give the model's own hidden states."""
    model = build_model(arch, build_tokenizer())
    _, blocks = find_decoder_blocks(model)
    ids = calibration.input_ids[:6]
    with torch.no_grad():
        expected = model(input_ids=ids, output_hidden_states=True).hidden_states
        inputs = capture_first_block_inputs(model, blocks[0], ids, batch_size=4, device=torch.device("cpu"))
        assert [c.rows for c in inputs.calls] == [slice(0, 1), slice(1, 5), slice(5, 6)]
        for index, block in enumerate(blocks):
            torch.testing.assert_close(inputs.hidden, expected[index], rtol=1e-5, atol=1e-5)
            inputs.advance(block)


LLAMA_GROUPS = [
    ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
    ["self_attn.o_proj"],
    ["mlp.gate_proj", "mlp.up_proj"],
    ["mlp.down_proj"],
]
GPT2_GROUPS = [["attn.c_attn"], ["attn.c_proj"], ["mlp.c_fc"], ["mlp.c_proj"]]


@pytest.mark.parametrize(("arch", "groups"), [("llama", LLAMA_GROUPS), ("gpt2", GPT2_GROUPS)])
def test_linears_reading_the_same_input_share_statistics(calibration, arch: str, groups) -> None:
    model = build_model(arch, build_tokenizer())
    _, blocks = find_decoder_blocks(model)
    inputs = capture_first_block_inputs(model, blocks[0], calibration.input_ids, 64, torch.device("cpu"))
    targets = [t for t in decoder_linears(model) if t.block_index == 0]
    with torch.no_grad():
        found, single_calls = probe_input_groups(blocks[0], targets, inputs)
    assert [[t.name.split(".0.", 1)[1] for t in g.members] for g in found] == groups
    assert single_calls


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_later_blocks_reuse_the_first_blocks_groups(calibration, monkeypatch, arch: str) -> None:
    """Blocks of one structure are probed once: block 1's groups from block 0's layout are the ones a probe
    of block 1 finds, and a whole compression probes a single time."""
    import llmkick_models.engine.sequential as sequential

    model = build_model(arch, build_tokenizer())
    _, blocks = find_decoder_blocks(model)
    inputs = capture_first_block_inputs(model, blocks[0], calibration.input_ids, 64, torch.device("cpu"))
    first = [t for t in decoder_linears(model) if t.block_index == 0]
    second = [t for t in decoder_linears(model) if t.block_index == 1]
    with torch.no_grad():
        _, _, layout = sequential.block_input_groups(blocks[0], first, inputs, None)
        reused, single_calls, kept = sequential.block_input_groups(blocks[1], second, inputs, layout)
        probed, _ = probe_input_groups(blocks[1], second, inputs)
    assert layout is not None and kept is layout and single_calls
    assert [[t.name for t in g.members] for g in reused] == [[t.name for t in g.members] for g in probed]
    calls: list[int] = []
    probe = sequential.probe_input_groups
    monkeypatch.setattr(sequential, "probe_input_groups", lambda *a: calls.append(1) or probe(*a))
    compress_tiny(arch, calibration, "wanda", sparsity=0.5)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("method", "args", "norms"),
    [
        ("sparsegpt", {"sparsity": 0.5}, False),
        ("gptq", {"bits": 4, "group_size": 16}, False),
        ("wanda", {"sparsity": 0.5}, True),
        ("wanda", {"sparsity": 0.5, "bits": 4, "group_size": 16}, True),  # Wanda, then GPTQ
    ],
)
def test_feature_norms_are_accumulated_only_for_methods_that_read_them(
    calibration, monkeypatch, method: str, args: dict, norms: bool
) -> None:
    """SparseGPT and GPTQ never read the per-feature norms: the statistics pass skips them (one reduction
    over every token and column per input group); Wanda, also before GPTQ, still gets them."""
    import llmkick_models.engine.sequential as sequential
    from llmkick_models.engine.input_statistics import InputStatistics

    made: list[InputStatistics] = []

    def recording(*a, **k):
        made.append(InputStatistics(*a, **k))
        return made[-1]

    monkeypatch.setattr(sequential, "InputStatistics", recording)
    compress_tiny("llama", calibration, method, **args)
    assert made and all((stats._feature_sq_mean is not None) is norms for stats in made)
    if not norms:
        with pytest.raises(ValueError, match="feature_norms"):
            made[0].feature_sq_mean  # noqa: B018


ORDER_CASES = [("llama", {"sparsity": 0.5}), *[(arch, {"pattern": "2:4"}) for arch in ARCHITECTURES]]


@pytest.mark.parametrize(
    ("arch", "args"), [("llama", {"sparsity": 0.5}), *[(a, {"pattern": "2:4"}) for a in ARCHITECTURES]]
)
def test_reconstruction_error_order_sparsegpt_wanda_magnitude(calibration, arch: str, args: dict) -> None:
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        exact = {} if method == "sparsegpt" else {"error_tokens": "all"}  # SparseGPT's error is always exact
        _, report = compress_tiny(arch, calibration, method, **exact, **args)
        assert report.overall_sparsity == 0.5
        errors[method] = report.mean_recon_error
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


def _layer_input(model: torch.nn.Module, name: str, input_ids: torch.Tensor) -> torch.Tensor:
    module = dict(model.named_modules())[name]
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(input_ids=input_ids, use_cache=False)
    handle.remove()
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in seen]).double()


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_reported_error_is_the_layer_reconstruction_error(calibration, method: str) -> None:
    layer = "model.layers.0.self_attn.o_proj"  # reads dense block 0's attention output
    dense = build_model("llama", build_tokenizer())
    exact = {} if method == "sparsegpt" else {"error_tokens": "all"}
    model, report = compress_tiny("llama", calibration, method, sparsity=0.5, **exact)
    W = dict(dense.named_modules())[layer].weight.detach().double()
    W_hat = dict(model.named_modules())[layer].weight.detach().double()
    X = _layer_input(dense, layer, calibration.input_ids)
    direct = float(((W - W_hat) @ X.t()).square().sum() / (W @ X.t()).square().sum())
    reported = next(entry for entry in report.layers if entry.name == layer).extra
    assert reported["recon_error"] == pytest.approx(direct, rel=1e-3)
    assert reported["error_tokens"] == X.shape[0]


def test_error_tokens_subsample_is_counted_and_close(calibration) -> None:
    _, exact = compress_tiny("llama", calibration, "wanda", sparsity=0.5, error_tokens="all")
    _, sampled = compress_tiny("llama", calibration, "wanda", sparsity=0.5, error_tokens=256)
    total = calibration.input_ids.numel()
    stride = math.ceil(total / 256)
    for a, b in zip(exact.layers, sampled.layers, strict=True):
        assert a.zeros == b.zeros  # the subsample only affects the measurement, not the mask
        assert a.extra["error_tokens"] == total and b.extra["error_tokens"] == math.ceil(total / stride)
        assert b.extra["recon_error"] == pytest.approx(a.extra["recon_error"], rel=0.25)


def test_true_sequential_recomputes_statistics_after_earlier_groups(calibration) -> None:
    plain, _ = compress_tiny("llama", calibration, "sparsegpt", sparsity=0.5)
    true_seq, report = compress_tiny("llama", calibration, "sparsegpt", sparsity=0.5, true_sequential=True)
    assert report.overall_sparsity == 0.5
    same = {
        a.name: torch.equal(a.weight, b.weight)
        for a, b in zip(decoder_linears(plain), decoder_linears(true_seq), strict=True)
    }
    # q/k/v of block 0 read the same inputs either way; o_proj onwards see already-pruned q/k/v.
    first_group = [f"model.layers.0.self_attn.{n}_proj" for n in "qkv"]
    assert all(same[name] for name in first_group)
    assert not same["model.layers.0.self_attn.o_proj"] and not same["model.layers.0.mlp.down_proj"]


def test_magnitude_with_calibration_only_adds_errors(calibration) -> None:
    without, plain_report = compress_tiny("llama", None, "magnitude", sparsity=0.5)
    with_errors, report = compress_tiny("llama", calibration, "magnitude", sparsity=0.5)
    for a, b in zip(decoder_linears(without), decoder_linears(with_errors), strict=True):
        assert torch.equal(a.weight, b.weight)
    assert all("recon_error" not in layer.extra for layer in plain_report.layers)
    assert all(0 < layer.extra["recon_error"] < 1 for layer in report.layers)
    assert report.calibration is not None and report.calibration["tokens"] == calibration.input_ids.numel()


def test_offloaded_blocks_are_compressed_and_written_back(tmp_path: Path, calibration) -> None:
    directory = save_tiny_model("llama", tmp_path / "model")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",  # weights on the meta device, reloaded from disk at every forward
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    offloaded = transformers.AutoModelForCausalLM.from_pretrained(
        directory, device_map=device_map, offload_folder=str(tmp_path / "offload")
    )
    assert offloaded.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    in_memory = transformers.AutoModelForCausalLM.from_pretrained(directory)
    spec = build_spec("sparsegpt", 0.5, calibration="random")
    offloaded_report = compress_model(offloaded, spec, calibration=calibration)
    in_memory_report = compress_model(in_memory, spec, calibration=calibration)
    assert offloaded_report.overall_sparsity == 0.5
    for a, b in zip(offloaded_report.layers, in_memory_report.layers, strict=True):
        assert (a.name, a.zeros) == (b.name, b.zeros)
        assert a.extra["recon_error"] == pytest.approx(b.extra["recon_error"], rel=1e-5)
    with torch.no_grad():  # the forward reloads layer 1 from the offload store: it must be the pruned one
        torch.testing.assert_close(
            offloaded(calibration.input_ids[:2]).logits, in_memory(calibration.input_ids[:2]).logits
        )


FUSED_CASES = [
    ("sparsegpt", {"sparsity": 0.5}),
    ("sparsegpt", {"pattern": "2:4"}),
    ("sparsegpt", {"sparsity": 0.5, "bits": 4, "group_size": 16}),
    ("gptq", {"bits": 4, "group_size": 16}),
    ("gptq", {"bits": 3, "group_size": -1, "act_order": True}),
    ("gptq", {"bits": 4, "group_size": 16, "act_order": True, "static_groups": True}),
    ("wanda", {"pattern": "2:4", "bits": 4, "group_size": 16}),  # pruned one by one, GPTQ together
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize(("method", "args"), FUSED_CASES)
def test_shared_input_layers_compressed_together_equal_the_per_layer_path(
    calibration, monkeypatch, arch: str, method: str, args: dict
) -> None:
    """q/k/v and gate/up share one damped inverse and one column loop over their stacked rows; every weight,
    grid and reported error is bit for bit what compressing each linear alone gives (fused QKV of
    GPT-NeoX and GPT-2's transposed Conv1D included)."""
    from llmkick_models.engine.methods import method_class

    fused_model, fused = compress_tiny(arch, calibration, method, **args)
    cls = method_class(method)
    together = cls.compress_group
    group_sizes: list[int] = []

    def one_at_a_time(self, jobs):  # the per-layer path: each linear on its own
        group_sizes.append(len(jobs))
        return [together(self, [job])[0] for job in jobs]

    monkeypatch.setattr(cls, "compress_group", one_at_a_time)
    alone_model, alone = compress_tiny(arch, calibration, method, **args)
    if arch in ("llama", "qwen2"):
        assert max(group_sizes) == 3  # q/k/v really were a group
    for a, b in zip(decoder_linears(fused_model), decoder_linears(alone_model), strict=True):
        assert torch.equal(a.weight, b.weight), a.name
    for a, b in zip(fused.layers, alone.layers, strict=True):
        assert a.extra == b.extra, a.name
    for name, grid in fused.quantized.items():
        assert torch.equal(grid.scale, alone.quantized[name].scale), name
        assert torch.equal(grid.zero, alone.quantized[name].zero), name


def test_an_error_a_method_leaves_to_the_driver_is_measured_against_the_weights_it_received(
    calibration, monkeypatch
) -> None:
    """A result without an error (Wanda's, magnitude's, RTN's; here SparseGPT's, withheld) is measured by
    the driver on the statistics, against a copy of each weight taken before the method ran: the number
    SparseGPT computes itself from its column loop."""
    from dataclasses import replace

    from llmkick_models.engine.methods.sparsegpt import SparseGPT

    _, own = compress_tiny("llama", calibration, "sparsegpt", sparsity=0.5)
    original = SparseGPT.compress_group

    def withholding(self, jobs):
        return [replace(result, error=None) for result in original(self, jobs)]

    monkeypatch.setattr(SparseGPT, "compress_group", withholding)
    _, measured = compress_tiny("llama", calibration, "sparsegpt", sparsity=0.5)
    for a, b in zip(own.layers, measured.layers, strict=True):
        assert 0 < b.extra["recon_error"] == pytest.approx(a.extra["recon_error"], rel=1e-4), a.name
