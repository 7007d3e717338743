"""The compressed-model cache: stable keys, atomic entries, corruption detected, one compression per key."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from llmkick_models.storage.cache_key import cache_key, describe_source
from llmkick_models.storage.cache_settings import default_cache_dir
from llmkick_models.storage.model_cache import MANIFEST, ModelCache

KEY = "0123456789abcdef" * 2  # keys have the shape cache_key() gives them: 32 lowercase hex digits
SHARED = "fedcba9876543210" * 2


def _write_model(folder: Path, payload: bytes = b"weights") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(payload)
    (folder / "config.json").write_text("{}")


def test_key_depends_on_weights_content_and_spec(tmp_path: Path) -> None:
    model = tmp_path / "model"
    _write_model(model)
    spec = {"method": "magnitude", "sparsity": 0.5}
    source = describe_source(str(model))
    key = cache_key({"source": source, "spec": spec})
    assert key == cache_key({"source": describe_source(str(model)), "spec": dict(spec)})
    assert key != cache_key({"source": source, "spec": {**spec, "sparsity": 0.4}})
    _write_model(model, b"other weights")
    assert key != cache_key({"source": describe_source(str(model)), "spec": spec})


def test_hub_ids_are_described_by_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    described = describe_source("org/not-a-local-folder", revision="abc123")
    assert described["model_id"] == "org/not-a-local-folder"
    assert described["revision"] == "abc123"


def test_store_then_lookup(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    assert cache.lookup(KEY) is None
    entry = cache.store(KEY, _write_model, {"report": {"overall_sparsity": 0.5}})
    found = cache.lookup(KEY)
    assert found is not None and found[0] == entry
    assert found[1]["report"] == {"overall_sparsity": 0.5}
    assert set(found[1]["files"]) == {"model.safetensors", "config.json"}
    assert not list(cache.root.glob(".tmp-*"))


def test_truncated_or_unmanifested_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    entry = cache.store(KEY, _write_model, {})
    (entry / "model.safetensors").write_bytes(b"w")  # truncated
    assert cache.lookup(KEY) is None
    cache.store(KEY, _write_model, {})
    assert cache.lookup(KEY) is not None
    (entry / MANIFEST).unlink()  # e.g. a copy interrupted before the manifest
    assert cache.lookup(KEY) is None


def test_failed_save_leaves_nothing(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)

    def crash(folder: Path) -> None:
        _write_model(folder)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.store(KEY, crash, {})
    assert cache.lookup(KEY) is None
    assert not list(tmp_path.glob(".tmp-*"))


def _compress_once(root: str, counter: str) -> None:
    cache = ModelCache(root)
    with cache.lock(SHARED):
        if cache.lookup(SHARED) is None:
            with open(counter, "a") as handle:
                handle.write("compressed\n")
            time.sleep(0.3)  # a slow compression: the other process must wait, not start its own
            cache.store(SHARED, _write_model, {})


def test_concurrent_processes_compress_once(tmp_path: Path) -> None:
    counter = tmp_path / "count.txt"
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_compress_once, args=(str(tmp_path / "c"), str(counter))) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert counter.read_text().count("compressed") == 1
    assert json.loads((tmp_path / "c" / SHARED / MANIFEST).read_text())["key"] == SHARED


def test_default_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMKICK_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("LLMKICK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "llmkick" / "models"
