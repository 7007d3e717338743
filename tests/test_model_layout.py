"""Decoder blocks and their linears are found from the module tree, for several architectures."""

from __future__ import annotations

import pytest
from torch import nn

from llmkick_models.engine.model_layout import UnsupportedModelError, decoder_linears, find_decoder_blocks
from tiny_models import ARCHITECTURES, build_model, build_tokenizer

EXPECTED = {
    # arch: (block stack, linears per block, a linear's relative name)
    "llama": ("model.layers", 7, "self_attn.q_proj"),
    "qwen2": ("model.layers", 7, "mlp.down_proj"),
    "gpt_neox": ("gpt_neox.layers", 4, "attention.query_key_value"),
    "gpt2": ("transformer.h", 4, "attn.c_attn"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_blocks_and_linears(arch: str, tokenizer) -> None:
    model = build_model(arch, tokenizer)
    stack, per_block, example = EXPECTED[arch]
    name, blocks = find_decoder_blocks(model)
    assert name == stack
    assert len(blocks) == model.config.num_hidden_layers
    targets = decoder_linears(model)
    assert len(targets) == per_block * len(blocks)
    names = {t.name for t in targets}
    assert f"{stack}.0.{example}" in names
    assert not any("embed" in n or "lm_head" in n or "wte" in n for n in names)
    for target in targets:
        module = target.module
        out_features = getattr(module, "out_features", None) or module.nf  # Conv1D keeps (in, out)
        assert target.shape[0] == out_features


def test_model_without_blocks_is_refused() -> None:
    class NoBlocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

    with pytest.raises(UnsupportedModelError, match="NoBlocks"):
        decoder_linears(NoBlocks())
