"""Calibration data: sources, seeded windows, context cap, and errors raised before any model load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from calibration_fixtures import english_like_text, write_corpus

from llmkick_models.arguments import CompressionArgumentError, build_spec
from llmkick_models.engine.calibration import (
    CalibrationDataError,
    calibration_tokens,
    load_documents,
    model_context_length,
)
from llmkick_models.engine.spec import CalibrationSpec
from tiny_models import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _contains(haystack: list[int], needle: list[int]) -> bool:
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def test_text_file_windows_are_seeded_slices_of_the_document(tmp_path: Path, tokenizer) -> None:
    path = write_corpus(tmp_path)
    spec = CalibrationSpec(str(path), nsamples=12, seqlen=48, seed=3)
    documents = load_documents(spec)
    assert documents is not None and len(documents) == 1
    ids = calibration_tokens(spec, documents, tokenizer, len(tokenizer)).input_ids
    assert ids.shape == (12, 48) and ids.dtype == torch.long
    stream = tokenizer(documents[0], add_special_tokens=False)["input_ids"]
    assert all(_contains(stream, row.tolist()) for row in ids)
    assert len({tuple(row.tolist()) for row in ids}) > 1  # random offsets, not one repeated window
    again = calibration_tokens(spec, load_documents(spec), tokenizer, len(tokenizer)).input_ids
    assert torch.equal(ids, again)
    other = CalibrationSpec(str(path), nsamples=12, seqlen=48, seed=4)
    assert not torch.equal(ids, calibration_tokens(other, documents, tokenizer, len(tokenizer)).input_ids)


def test_jsonl_uses_only_documents_longer_than_seqlen(tmp_path: Path, tokenizer) -> None:
    long_text = english_like_text(300, seed=1)
    path = tmp_path / "docs.jsonl"
    records = [{"text": "Short one."}, {"text": long_text}, {"text": "Also short."}, "A bare string record."]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    spec = CalibrationSpec(str(path), nsamples=6, seqlen=40, seed=0)
    documents = load_documents(spec)
    assert documents is not None and len(documents) == 4
    ids = calibration_tokens(spec, documents, tokenizer, len(tokenizer)).input_ids
    stream = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    assert all(_contains(stream, row.tolist()) for row in ids)


def test_too_short_documents_fail_naming_seqlen(tmp_path: Path, tokenizer) -> None:
    path = tmp_path / "short.jsonl"
    path.write_text(json.dumps({"text": "Only a few words here."}) + "\n")
    spec = CalibrationSpec(str(path), nsamples=2, seqlen=64)
    with pytest.raises(CalibrationDataError, match=r"seqlen=64"):
        calibration_tokens(spec, load_documents(spec), tokenizer, len(tokenizer))


def test_bad_jsonl_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"body": "no text field"}) + "\n")
    with pytest.raises(CalibrationDataError, match=r"record 1.*\"text\""):
        load_documents(CalibrationSpec(str(path)))


def test_directory_reads_text_and_jsonl_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second file")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "first file"}) + "\n")
    (tmp_path / "README").write_text("not calibration text")
    (tmp_path / "empty.txt").write_text("   \n")
    assert list(load_documents(CalibrationSpec(str(tmp_path)))) == ["first file", "second file"]
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(CalibrationDataError, match=r"no .*files"):
        load_documents(CalibrationSpec(str(empty)))


def test_seqlen_is_capped_at_the_model_context(tmp_path: Path, tokenizer) -> None:
    spec = CalibrationSpec(str(write_corpus(tmp_path)), nsamples=2, seqlen=4096)
    calibration = calibration_tokens(spec, load_documents(spec), tokenizer, len(tokenizer), max_context=256)
    assert calibration.seqlen == 256
    assert calibration.describe() == {
        "source": str(tmp_path / "calibration.txt"),
        "nsamples": 2,
        "seqlen": 256,
        "seed": 0,
        "tokens": 512,
    }
    from tiny_models import build_config

    assert model_context_length(build_config("gpt2", 384)) == 256
    assert model_context_length(build_config("llama", 384)) == 256


def test_random_tokens_are_seeded_and_in_range(tokenizer) -> None:
    spec = CalibrationSpec("random", nsamples=4, seqlen=32, seed=5)
    assert load_documents(spec) is None
    first = calibration_tokens(spec, None, tokenizer, vocab_size=100).input_ids
    assert first.shape == (4, 32) and 0 <= int(first.min()) and int(first.max()) < 100
    assert torch.equal(first, calibration_tokens(spec, None, tokenizer, vocab_size=100).input_ids)


@pytest.mark.parametrize("source", ["c4", "wikitext2"])
def test_hub_sources_offline_fail_clearly_naming_the_local_alternative(source: str) -> None:
    # conftest sets HF_DATASETS_OFFLINE=1: with no cached copy the loader must refuse, not hang or download.
    with pytest.raises(CalibrationDataError) as error:
        load_documents(CalibrationSpec(source))
    message = str(error.value)
    assert f"calibration={source}" in message and "Offline" in message and "calibration=/path/to" in message


def test_c4_offline_fails_before_the_model_loads(tmp_path: Path) -> None:
    from llmkick_models.compressed_hf import CompressedHFLM

    missing = tmp_path / "no-such-model"  # a model load would raise OSError: we must fail earlier
    with pytest.raises(CalibrationDataError, match="calibration=c4"):
        CompressedHFLM(pretrained=str(missing), device="cpu", method="wanda", sparsity=0.5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        (
            {"method": "wanda", "sparsity": 0.5, "calibration": "/no/such/file.txt"},
            "calibration='/no/such/file.txt'",
        ),
        ({"method": "wanda", "sparsity": 0.5, "calibration": "c5"}, "calibration='c5'"),
        ({"method": "wanda", "sparsity": 0.5, "calibration": 3}, "calibration=3"),
        ({"method": "wanda", "sparsity": 0.5, "nsamples": 0}, "nsamples=0"),
        ({"method": "wanda", "sparsity": 0.5, "nsamples": "many"}, "nsamples='many'"),
        ({"method": "wanda", "sparsity": 0.5, "nsamples": 2.5}, "nsamples=2.5"),
        ({"method": "wanda", "sparsity": 0.5, "seqlen": 1}, "seqlen=1"),
        ({"method": "wanda", "sparsity": 0.5, "calibration_seed": -1}, "calibration_seed=-1"),
        ({"method": "wanda", "sparsity": 0.5, "true_sequential": "maybe"}, "true_sequential='maybe'"),
        ({"method": "wanda", "sparsity": 0.5, "error_tokens": 0}, "error_tokens=0"),
        ({"method": "wanda", "sparsity": 0.5, "percdamp": 0.1}, "percdamp=0.1"),
        ({"method": "sparsegpt", "sparsity": 0.5, "percdamp": 2}, "percdamp=2"),
        ({"method": "sparsegpt", "sparsity": 0.5, "percdamp": "x"}, "percdamp='x'"),
        ({"method": "sparsegpt", "sparsity": 0.5, "blocksize": 0}, "blocksize=0"),
        ({"method": "sparsegpt", "pattern": "4:8", "blocksize": 12}, "blocksize=12"),
        ({"method": "sparsegpt", "sparsity": 0.5, "error_tokens": 100}, "error_tokens=100"),
        ({"method": "magnitude", "sparsity": 0.5, "nsamples": 16}, "nsamples=16"),
        ({"method": "magnitude", "sparsity": 0.5, "true_sequential": True}, "true_sequential=True"),
        ({"method": "none", "calibration": "c4"}, "calibration='c4'"),
    ],
)
def test_bad_calibration_args_name_the_argument(kwargs: dict, named: str) -> None:
    with pytest.raises(CompressionArgumentError) as error:
        build_spec(**kwargs)
    assert named in str(error.value)


def test_calibration_defaults_follow_the_paper(tmp_path: Path) -> None:
    spec = build_spec("sparsegpt", 0.5)
    assert spec.calibration == CalibrationSpec("c4", nsamples=128, seqlen=2048, seed=0)
    assert (spec.percdamp, spec.blocksize, spec.true_sequential) == (0.01, 128, False)
    assert build_spec("magnitude", 0.5).calibration is None
    custom = build_spec(
        "wanda",
        pattern="2:4",
        calibration=str(tmp_path),
        nsamples="16",
        seqlen=64,
        calibration_seed=7,
        true_sequential="true",
        error_tokens="all",
    )
    assert custom.calibration == CalibrationSpec(str(tmp_path), 16, 64, 7)
    assert custom.true_sequential is True and custom.error_tokens is None
    described = custom.to_dict()
    assert "percdamp" not in described and described["calibration"]["nsamples"] == 16


def test_compressed_hf_validates_calibration_args_before_loading(tmp_path: Path) -> None:
    from llmkick_models.compressed_hf import CompressedHFLM

    missing = tmp_path / "no-such-model"
    for kwargs in (
        {"method": "wanda", "sparsity": 0.5, "calibration": str(tmp_path / "absent.txt")},
        {"method": "sparsegpt", "sparsity": 0.5, "calibration": "random", "percdamp": -1},
        {"method": "wanda", "sparsity": 0.5, "calibration": "random", "nsample": 8},  # misspelled
    ):
        with pytest.raises(CompressionArgumentError):
            CompressedHFLM(pretrained=str(missing), device="cpu", **kwargs)


def test_real_wikitext2_text_calibrates(shared_data: Path, tokenizer) -> None:
    spec = CalibrationSpec(str(shared_data / "wikitext2"), nsamples=4, seqlen=128, seed=0)
    documents = load_documents(spec)
    assert documents is not None and len(documents) == 2  # test.txt and valid.txt; README is skipped
    ids = calibration_tokens(spec, documents, tokenizer, len(tokenizer)).input_ids
    assert ids.shape == (4, 128)


def _bos_tokenizer():
    """The tiny tokenizer, but adding a BOS by default (as Llama's): the reference loaders keep it."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = build_tokenizer().backend_tokenizer
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="<|endoftext|>")


def _reference_windows(documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int) -> list:
    """The draw of Wanda's lib/data.py and SparseGPT's datautils.py, written out: the global ``random``
    seeded, C4 draws a document index until one is longer than seqlen, WikiText-2 (one joined text) draws
    none; the start is randint(0, len - seqlen - 1); the text is tokenized as ``tokenizer(text)``."""
    import random

    random.seed(seed)
    windows = []
    for _ in range(nsamples):
        if len(documents) == 1:
            ids = tokenizer(documents[0])["input_ids"]
        else:
            while True:
                ids = tokenizer(documents[random.randint(0, len(documents) - 1)])["input_ids"]
                if len(ids) > seqlen:
                    break
        start = random.randint(0, len(ids) - seqlen - 1)
        windows.append(ids[start : start + seqlen])
    return windows


@pytest.mark.parametrize("seed", [0, 7])
def test_windows_are_the_reference_loaders_windows(tmp_path: Path, seed: int, monkeypatch) -> None:
    """Same seed, same text -> the same windows as the Wanda/SparseGPT loaders, BOS included; the old draw
    (no special tokens, a document drawn for one text, starts up to len - seqlen) gives other windows."""
    tokenizer = _bos_tokenizer()
    docs = [english_like_text(n, seed=i) for i, n in enumerate([20, 150, 400, 30, 260, 90])]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    single = tmp_path / "wiki.txt"
    single.write_text(english_like_text(3000, seed=11))
    for path, seqlen in ((jsonl, 64), (single, 96)):
        spec = CalibrationSpec(str(path), nsamples=10, seqlen=seqlen, seed=seed)
        documents = list(load_documents(spec))
        ids = calibration_tokens(spec, documents, tokenizer, len(tokenizer)).input_ids
        assert ids.tolist() == _reference_windows(documents, tokenizer, 10, seqlen, seed)
    # A long text tokenized in pieces still gets exactly tokenizer(text)'s ids, its BOS once.
    import llmkick_models.engine.calibration as calibration_module

    monkeypatch.setattr(calibration_module, "TOKENIZE_CHUNK_CHARS", 500)
    text = single.read_text()
    assert calibration_module._tokenize(tokenizer, text).tolist() == tokenizer(text)["input_ids"]
    spec = CalibrationSpec(str(single), nsamples=10, seqlen=96, seed=seed)
    ids = calibration_tokens(spec, [text], tokenizer, len(tokenizer)).input_ids
    assert ids.tolist() == _reference_windows([text], tokenizer, 10, 96, seed)
