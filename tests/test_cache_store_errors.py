"""A cache entry that cannot be written (disk full, quota, I/O) never fails the run; a bug still does."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.storage.model_cache import ModelCache

ARGS = {"device": "cpu", "method": "magnitude", "sparsity": 0.5}

#: What the libraries raise when a write is refused for lack of space (messages as they word them).
WRITE_FAILURES = {
    "safetensors": safetensors.SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    ),
    "older safetensors": safetensors.SafetensorError(
        "Error while serializing: "
        'IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    ),
    "torch.save": RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
    "torch.save, older": RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
    "OSError": OSError(errno.ENOSPC, "No space left on device"),
    "quota": OSError(errno.EDQUOT, "Disk quota exceeded"),
}


def _failing_save(error: BaseException):
    def save(self: CompressedHFLM, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half a model")  # what a full disk leaves behind
        raise error

    return save


@pytest.mark.parametrize("case", sorted(WRITE_FAILURES))
def test_a_store_that_cannot_write_warns_and_the_run_goes_on(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, case: str
) -> None:
    cache = tmp_path / "c"
    monkeypatch.setattr(CompressedHFLM, "_save_for_cache", _failing_save(WRITE_FAILURES[case]))
    with caplog.at_level(logging.WARNING):
        lm = CompressedHFLM(pretrained=str(tiny_llama_dir), llmkick_cache_dir=str(cache), **ARGS)
    info = lm.get_model_info()["llmkick_compression"]
    assert info["cache"]["stored"] is False and info["cache"]["hit"] is False
    assert info["overall_sparsity"] == 0.5  # the model in memory is the compressed one
    warnings = [r.getMessage() for r in caplog.records if "could not store" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert (
        f"in the cache {cache} (" in warnings[0] and "the run goes on with the model in memory" in warnings[0]
    )
    assert type(WRITE_FAILURES[case]).__name__ in warnings[0]
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []  # no temp folder left


@pytest.mark.parametrize(
    "error",
    [
        TypeError("save_pretrained() got an unexpected keyword argument 'x'"),
        KeyError("model.layers.0"),
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        safetensors.SafetensorError("Error while serializing: TensorInvalidInfo"),
    ],
    ids=type,
)
def test_a_bug_while_storing_still_fails_the_run(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    cache = tmp_path / "c"
    monkeypatch.setattr(CompressedHFLM, "_save_for_cache", _failing_save(error))
    with pytest.raises(type(error)) as raised:
        CompressedHFLM(pretrained=str(tiny_llama_dir), llmkick_cache_dir=str(cache), **ARGS)
    assert raised.value is error
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_store_raises_cache_write_error_and_cleans_up(tmp_path: Path) -> None:
    from llmkick_models.storage.model_cache import CacheWriteError

    cache = ModelCache(tmp_path)

    def fill_the_disk(folder: Path) -> None:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
        raise WRITE_FAILURES["safetensors"]

    with pytest.raises(
        CacheWriteError, match=r"could not store 0{32} in the cache .*SafetensorError: .*os error 28"
    ):
        cache.store("0" * 32, fill_the_disk, {})
    assert list(tmp_path.iterdir()) == []


def test_a_real_refused_write_is_recognised(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Not a mock: the process may not write files past 64 KB (RLIMIT_FSIZE), so the model's weights are
    refused by the real safetensors writer with its real error (EFBIG rather than ENOSPC, same path)."""
    script = textwrap.dedent(
        f"""
        import json, resource, signal
        from llmkick_models.compressed_hf import CompressedHFLM
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get the error from write(), not the signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
        lm = CompressedHFLM(pretrained={str(tiny_llama_dir)!r}, llmkick_cache_dir={str(tmp_path / "c")!r},
                            device="cpu", method="magnitude", sparsity=0.5)
        print(json.dumps(lm.get_model_info()["llmkick_compression"]["cache"]))
        """
    )
    weights = sum(p.stat().st_size for p in tiny_llama_dir.glob("*.safetensors"))
    assert weights > 65536  # else nothing would be refused
    project = str(Path(__file__).resolve().parents[1])  # this checkout's code, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["stored"] is False
    assert "SafetensorError: Error while serializing: I/O error" in done.stderr
    assert "the run goes on with the model in memory" in done.stderr
