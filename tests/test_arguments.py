"""Every bad compression argument fails with a message naming it, before anything is loaded."""

from __future__ import annotations

import pytest

from llmkick_models.arguments import (
    CompressionArgumentError,
    build_spec,
    parse_pattern,
    reject_misspelled_args,
)
from llmkick_models.engine.spec import CompressionSpec, NMPattern


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"method": "pruneit", "sparsity": 0.5}, "method='pruneit'"),
        ({"method": 3}, "method=3"),
        ({"method": "magnitude", "sparsity": 1.0}, "sparsity=1.0"),
        ({"method": "magnitude", "sparsity": 1.5}, "sparsity=1.5"),
        ({"method": "magnitude", "sparsity": -0.1}, "sparsity=-0.1"),
        ({"method": "magnitude", "sparsity": "half"}, "sparsity='half'"),
        ({"method": "magnitude", "sparsity": True}, "sparsity=True"),
        ({"method": "magnitude", "pattern": "3:2"}, "pattern='3:2'"),
        ({"method": "magnitude", "pattern": "0:4"}, "pattern='0:4'"),
        ({"method": "magnitude", "pattern": "4:4"}, "pattern='4:4'"),
        ({"method": "magnitude", "pattern": "a:b"}, "pattern='a:b'"),
        ({"method": "magnitude", "pattern": "2-4"}, "pattern='2-4'"),
        ({"method": "magnitude", "pattern": "2:4", "sparsity": 0.3}, "sparsity=0.3"),
        ({"method": "magnitude"}, "needs sparsity="),
        ({"method": "none", "sparsity": 0.5}, "sparsity=0.5"),
        ({"method": None, "pattern": "2:4"}, "pattern='2:4'"),
    ],
)
def test_bad_compression_args_name_the_argument(kwargs: dict, named: str) -> None:
    with pytest.raises(CompressionArgumentError) as error:
        build_spec(**kwargs)
    assert named in str(error.value)


def test_good_specs() -> None:
    assert build_spec() == CompressionSpec()
    assert build_spec(method=None) == CompressionSpec()
    assert build_spec("magnitude", 0.5) == CompressionSpec("magnitude", 0.5, None)
    assert build_spec("magnitude", "0.25") == CompressionSpec("magnitude", 0.25, None)
    assert build_spec("magnitude", 0) == CompressionSpec("magnitude", 0.0, None)
    assert build_spec("MAGNITUDE", pattern="2:4") == CompressionSpec("magnitude", 0.5, NMPattern(2, 4))
    # A sparsity equal to N/M does not conflict.
    assert build_spec("magnitude", 0.5, "4:8").pattern == NMPattern(4, 8)
    assert build_spec("magnitude", 0.5, "unstructured").pattern is None


def test_nm_convention_is_zeros_per_group() -> None:
    assert parse_pattern("1:4").sparsity == 0.25
    assert parse_pattern("3:4").sparsity == 0.75
    assert str(parse_pattern(" 2 : 4 ")) == "2:4"


@pytest.mark.parametrize(
    ("typo", "meant"), [("sparsty", "sparsity"), ("patern", "pattern"), ("methd", "method")]
)
def test_misspelled_compression_args_are_refused(typo: str, meant: str) -> None:
    with pytest.raises(CompressionArgumentError, match=f"'{typo}'.*did you mean '{meant}'"):
        reject_misspelled_args([typo], known_elsewhere={"dtype"})


def test_ordinary_load_args_pass_through() -> None:
    reject_misspelled_args(["attn_implementation", "device_map", "low_cpu_mem_usage"], known_elsewhere=set())


def test_compressed_hf_validates_before_loading(tmp_path) -> None:
    from llmkick_models.compressed_hf import CompressedHFLM

    missing = tmp_path / "no-such-model"  # loading it would fail with OSError; we must fail first
    cases = [
        {"method": "bogus"},
        {"method": "magnitude", "sparsity": 2},
        {"method": "magnitude", "pattern": "3:2"},
        {"method": "magnitude", "sparsity": 0.5, "sparsty": 0.5},
        {"method": "magnitude", "sparsity": 0.5, "peft": "some/adapter"},
        {"method": "magnitude", "sparsity": 0.5, "load_in_4bit": True},
    ]
    for kwargs in cases:
        with pytest.raises(CompressionArgumentError):
            CompressedHFLM(pretrained=str(missing), device="cpu", **kwargs)
