"""Each method declares its options once: a new method is one module plus one registry line, and the
adapter, the sweep, the spec's JSON form and the README table all follow from the declarations."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkick_models.arguments import (
    FOREIGN_NAMES,
    CompressionArgumentError,
    check_calibration_memory,
    model_args_table,
)
from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.compress import compress_model
from llmkick_models.engine.methods import METHODS, build_spec, method_class, option_names
from llmkick_models.engine.methods.base import CompressionMethod
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.workflow.sweep_plan import plan_points, point_args
from tiny_models import build_model, build_tokenizer

PROJECT = Path(__file__).resolve().parents[1]


def _example_method() -> str:
    """The complete example method that ends ``CompressionMethod``'s docstring."""
    return textwrap.dedent(inspect.getdoc(CompressionMethod).rsplit("::\n", 1)[1]).strip() + "\n"


@pytest.fixture
def toy_method() -> Iterator[str]:
    """The docstring's example method (``shrinkprune``: pruning, kept weights scaled), registered."""
    exec(compile(_example_method(), "CompressionMethod example", "exec"), {"__name__": "toy_llmkick_method"})
    yield "shrinkprune"
    del METHODS["shrinkprune"]


def test_a_registered_method_is_accepted_by_compressed_hf(toy_method: str, tiny_llama_dir: Path) -> None:
    lm = CompressedHFLM(
        pretrained=str(tiny_llama_dir),
        device="cpu",
        method=toy_method,
        sparsity=0.25,
        shrink=0.5,
        cache=False,
    )
    spec = lm.compression_spec
    assert spec.method == "shrinkprune" and spec.option("shrink") == 0.5
    assert spec.to_dict() == {
        "method": "shrinkprune",
        "sparsity": 0.25,
        "pattern": "unstructured",
        "shrink": 0.5,
    }
    for target in decoder_linears(lm.model):
        assert abs(float((target.weight == 0).float().mean()) - 0.25) < 0.02
    with pytest.raises(CompressionArgumentError, match=r"shrink=2 is out of range"):
        build_spec(toy_method, 0.5, shrink=2)
    with pytest.raises(CompressionArgumentError, match=r"shrink=0.5 does not apply to method=wanda"):
        build_spec("wanda", 0.5, shrink=0.5)


def test_a_registered_method_is_routed_by_the_sweep(toy_method: str) -> None:
    points = plan_points([toy_method], sparsities=[0.3])
    assert [p.point_id for p in points] == ["dense", f"{toy_method}-s0.3"]
    args = point_args(points[1], "pretrained=x", {"shrink": "0.9", "nsamples": "4"})
    assert "shrink=0.9" in args and "nsamples" not in args


def test_readme_shows_the_example_method_of_the_base_class() -> None:
    readme = (PROJECT / "llmkick_models" / "README.md").read_text()
    assert f"```python\n{_example_method()}```" in readme, "copy CompressionMethod's example into the README"


def test_a_method_returns_one_layer_result_per_layer(
    toy_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(method_class(toy_method), "compress_layer", lambda self, job: {})
    with pytest.raises(
        TypeError,
        match=r"method=shrinkprune: compress_group must return a list of one LayerResult per layer "
        r"\(model\.layers\.0\.self_attn\.q_proj\), got \['dict'\]",
    ):
        compress_model(build_model("llama", build_tokenizer()), build_spec(toy_method, 0.5))


def test_a_method_that_compresses_nothing_is_named(toy_method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(method_class(toy_method), "compress_layer")
    with pytest.raises(
        NotImplementedError, match=r"ShrinkPrune implements neither compress_layer nor compress_group"
    ):
        compress_model(build_model("llama", build_tokenizer()), build_spec(toy_method, 0.5))


def test_readme_model_args_table_is_the_generated_one() -> None:
    readme = (PROJECT / "README.md").read_text()
    assert model_args_table() in readme, "regenerate it with: llmkick model-args"


def test_every_declared_option_is_a_compression_arg() -> None:
    names = option_names()
    assert names[0] == "method"
    for expected in ("sparsity", "pattern", "calibration", "nsamples", "bits", "group_size", "quantizer"):
        assert expected in names


@pytest.mark.parametrize(("foreign", "ours"), sorted(FOREIGN_NAMES.items()))
def test_other_tools_names_fail_before_load_naming_ours(foreign: str, ours: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"  # a load would fail with OSError; we must fail first
    with pytest.raises(CompressionArgumentError, match=rf"{foreign!r}.*calls this option {ours!r}"):
        CompressedHFLM(pretrained=str(missing), device="cpu", method="wanda", sparsity=0.5, **{foreign: "1"})


def test_misspelling_is_named_before_missing_arguments(tmp_path: Path) -> None:
    with pytest.raises(CompressionArgumentError, match=r"'sparsty'.*did you mean 'sparsity'"):
        CompressedHFLM(pretrained=str(tmp_path / "absent"), device="cpu", method="wanda", sparsty=0.5)


def test_unknown_compression_keyword_names_the_nearest() -> None:
    with pytest.raises(
        CompressionArgumentError, match=r"nsample=2 is not a compression argument.*'nsamples'"
    ):
        build_spec("wanda", 0.5, calibration="random", nsample=2)


def test_calibration_larger_than_memory_names_nsamples() -> None:
    spec = build_spec("wanda", 0.5, calibration="random", nsamples=1_000_000_000, seqlen=2048)
    with pytest.raises(CompressionArgumentError, match=r"nsamples=1000000000 x seqlen=2048.*lower nsamples="):
        check_calibration_memory(spec, hidden_size=576, available=24 * 2**30)
    check_calibration_memory(build_spec("wanda", 0.5, nsamples=128), hidden_size=4096, available=24 * 2**30)


def test_compressed_hf_checks_calibration_memory_before_loading(tiny_llama_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr("llmkick_models.arguments._available_memory", lambda: 2**20)
    with pytest.raises(CompressionArgumentError, match="nsamples=64"):
        CompressedHFLM(
            pretrained=str(tiny_llama_dir), device="cpu", method="wanda", sparsity=0.5,
            calibration="random", nsamples=64, seqlen=256,
        )  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # "from package import module" imports that module too
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_and_tasks_never_import_models() -> None:
    files = [*PROJECT.glob("llmkick_models/**/*.py"), *PROJECT.glob("llmkick_tasks/**/*.py")]
    modules = {_module_name(f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {imported for imported in _imports(path) if imported in modules} - {name}
        if name.startswith("llmkick_tasks"):
            assert not any(t.startswith("llmkick_models") for t in _imports(path)), name

    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
