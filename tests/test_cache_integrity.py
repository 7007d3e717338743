"""The model cache serves only what it stored: digests, measured reports, read-only folders, locks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import filelock
import pytest
import torch

from llmkick_models.compressed_hf import CompressedHFLM
from llmkick_models.engine.model_layout import decoder_linears
from llmkick_models.storage.cache_key import describe_source, sha256_file
from llmkick_models.storage.cache_verify import verify_loaded
from llmkick_models.storage.model_cache import MANIFEST, CacheLockTimeout, ModelCache

ARGS = {"device": "cpu", "method": "magnitude", "sparsity": 0.5}


def _key(name: str) -> str:
    """A key (32 lowercase hex digits, as cache_key() makes them) that a test can refer to by name."""
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def _lm(model_dir: Path, cache: Path, **extra: object) -> CompressedHFLM:
    return CompressedHFLM(pretrained=str(model_dir), llmkick_cache_dir=str(cache), **{**ARGS, **extra})


def _info(lm: CompressedHFLM) -> dict:
    return lm.get_model_info()["llmkick_compression"]


def _overwrite_middle(file: Path, size: int = 4096) -> None:
    """Damage the tensor data without changing the file size (what a bad disk or a stray write does)."""
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + size] = b"\x11" * size
    file.write_bytes(bytes(data))


def _rewrite_digests(entry: Path) -> None:
    """Make the manifest agree with the damaged files, so only the weight measurement can notice."""
    manifest = json.loads((entry / MANIFEST).read_text())
    manifest["sha256"] = {name: sha256_file(entry / name) for name in manifest["files"]}
    (entry / MANIFEST).write_text(json.dumps(manifest))


def test_same_size_damage_is_caught_by_the_digest(tiny_llama_dir: Path, tmp_path: Path, caplog) -> None:
    first = _lm(tiny_llama_dir, tmp_path / "c")
    entry = Path(_info(first)["cache"]["entry"])
    weights = entry / "model.safetensors"
    size = weights.stat().st_size
    _overwrite_middle(weights)
    assert weights.stat().st_size == size
    with caplog.at_level(logging.WARNING):
        rebuilt = _lm(tiny_llama_dir, tmp_path / "c")
    assert "does not match the sha256" in caplog.text
    info = _info(rebuilt)
    assert info["cache"]["hit"] is False and info["overall_sparsity"] == 0.5
    ref = first.model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in rebuilt.model.state_dict().items())
    assert _info(_lm(tiny_llama_dir, tmp_path / "c"))["cache"]["hit"] is True


def test_damage_the_digest_misses_is_caught_by_measuring_the_weights(
    tiny_llama_dir: Path, tmp_path: Path, caplog
) -> None:
    entry = Path(_info(_lm(tiny_llama_dir, tmp_path / "c"))["cache"]["entry"])
    _overwrite_middle(entry / "model.safetensors", size=1 << 16)
    _rewrite_digests(entry)
    with caplog.at_level(logging.WARNING):
        rebuilt = _info(_lm(tiny_llama_dir, tmp_path / "c"))
    assert "disagree with the stored report" in caplog.text and "zeros" in caplog.text
    assert rebuilt["cache"]["hit"] is False and rebuilt["overall_sparsity"] == 0.5


def test_unloadable_entry_is_rebuilt_not_fatal(tiny_llama_dir: Path, tmp_path: Path, caplog) -> None:
    entry = Path(_info(_lm(tiny_llama_dir, tmp_path / "c"))["cache"]["entry"])
    weights = entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"\xff" * 32  # the JSON header, same size: unparseable
    weights.write_bytes(bytes(data))
    _rewrite_digests(entry)
    with caplog.at_level(logging.WARNING):
        assert _info(_lm(tiny_llama_dir, tmp_path / "c"))["cache"]["hit"] is False
    assert "does not load" in caplog.text
    assert _info(_lm(tiny_llama_dir, tmp_path / "c"))["cache"]["hit"] is True


def test_hit_report_is_measured_from_the_weights(tiny_llama_dir: Path, tmp_path: Path) -> None:
    lm = _lm(tiny_llama_dir, tmp_path / "c")
    stored = lm.compression_report.to_dict()
    report, problems = verify_loaded(lm.model, lm.compression_spec, stored)
    assert problems == [] and report.overall_sparsity == stored["overall_sparsity"]
    with torch.no_grad():
        decoder_linears(lm.model)[0].weight.fill_(0.25)  # one layer loses all its zeros
    report, problems = verify_loaded(lm.model, lm.compression_spec, stored)
    assert report.overall_sparsity < 0.5
    assert any("zeros, the stored report says" in p for p in problems)


def test_quantization_levels_are_checked(tiny_llama_dir: Path, tmp_path: Path) -> None:
    lm = _lm(tiny_llama_dir, tmp_path / "c", method="rtn", sparsity=None, bits=2, group_size=-1)
    stored = lm.compression_report.to_dict()
    assert verify_loaded(lm.model, lm.compression_spec, stored)[1] == []
    with torch.no_grad():
        weight = decoder_linears(lm.model)[0].weight
        weight.copy_(torch.randn_like(weight))  # far more than 4 values per row
    problems = verify_loaded(lm.model, lm.compression_spec, stored)[1]
    assert any("distinct values" in p for p in problems)


def test_read_only_cache_still_evaluates(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "c"
    stored = _info(_lm(tiny_llama_dir, cache))
    before = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    cache.chmod(0o555)
    try:
        if os.access(cache, os.W_OK):  # root ignores permissions: simulate what a real user sees
            monkeypatch.setattr(ModelCache, "writable", lambda self: False)
        hit = _info(_lm(tiny_llama_dir, cache))
        assert hit["cache"]["hit"] is True and hit["cache"]["writable"] is False
        assert hit["layers"] == stored["layers"]
        miss = _info(_lm(tiny_llama_dir, cache, sparsity=0.3))  # not in the cache: compressed in memory
        assert miss["cache"]["hit"] is False and miss["cache"]["stored"] is False
        assert miss["overall_sparsity"] == pytest.approx(0.3, abs=1e-3)
        assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == before
    finally:
        cache.chmod(0o755)


def test_entry_without_digests_is_rebuilt(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    entry = cache.store(_key("k"), lambda folder: (folder.mkdir(), (folder / "w.bin").write_bytes(b"x")), {})
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["sha256"] == {"w.bin": sha256_file(entry / "w.bin")}
    del manifest["sha256"]  # as written by an older llmkick
    (entry / MANIFEST).write_text(json.dumps(manifest))
    assert cache.lookup(_key("k")) is None and not entry.exists()


def test_lock_times_out_instead_of_hanging(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    holder = filelock.FileLock(str(tmp_path / f"{_key('k')}.lock"), is_singleton=False, thread_local=False)
    holder.acquire()
    try:
        with (
            pytest.raises(CacheLockTimeout, match="held by another process"),
            cache.lock(_key("k"), timeout=0.3),
        ):
            pass
    finally:
        holder.release()
    with cache.lock(_key("k"), timeout=0.3):
        pass


def test_hub_revision_resolved_by_huggingface_hub(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    source = describe_source("org/tiny", hub_cache_dir=str(tmp_path / "hub"))
    assert source["commit"] == commit
    assert describe_source("org/absent", hub_cache_dir=str(tmp_path / "hub"))["commit"] is None


def _store(cache: ModelCache, name: str, used: float, size: int = 10_000) -> None:
    def save(folder: Path) -> None:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w" * size)

    entry = cache.store(
        _key(name),
        save,
        {"key_parts": {"source": {"local_path": f"/m/{name}"}, "spec": {"method": "magnitude"}}},
    )
    os.utime(entry / MANIFEST, (used, used))


def test_cache_ls_rm_prune_least_recently_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmkick_models.workflow.cli import main

    cache = ModelCache(tmp_path)
    now = time.time()
    for age, key in ((300, "old"), (200, "middle"), (100, "new")):
        _store(cache, key, now - age)
    assert cache.lookup(_key("old")) is not None  # a hit makes "old" the most recently used
    assert [e.key for e in cache.entries()] == [_key("middle"), _key("new"), _key("old")]

    assert main(["cache", "--dir", str(tmp_path), "ls"]) == 0
    listing = capsys.readouterr().out
    assert (
        "3 entries" in listing and "/m/old magnitude" not in listing and "/m/old method=magnitude" in listing
    )

    size = cache.entries()[0].size_bytes
    assert main(["cache", "--dir", str(tmp_path), "prune", "--max-gb", str(2.5 * size / 1e9)]) == 0
    assert f"evicted {_key('middle')}" in capsys.readouterr().out
    assert [e.key for e in cache.entries()] == [_key("new"), _key("old")]

    assert main(["cache", "--dir", str(tmp_path), "rm", _key("new")]) == 0
    with pytest.raises(SystemExit) as refused:
        main(["cache", "--dir", str(tmp_path), "rm", _key("absent")])
    assert refused.value.code == 2
    assert [e.key for e in cache.entries()] == [_key("old")]


def test_prune_skips_entries_in_use(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    _store(cache, "busy", time.time() - 100)
    _store(cache, "idle", time.time() - 50)
    holder = filelock.FileLock(str(tmp_path / f"{_key('busy')}.lock"), is_singleton=False, thread_local=False)
    with holder:
        result = cache.prune(0)
    assert [e.key for e in result.evicted] == [_key("idle")]
    assert [e.key for e in result.busy] == [_key("busy")]
    assert [e.key for e in cache.entries()] == [_key("busy")]


def test_size_cap_evicts_on_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _store(ModelCache(tmp_path), "a", time.time() - 100)
    size = ModelCache(tmp_path).entries()[0].size_bytes
    monkeypatch.setenv("LLMKICK_CACHE_MAX_GB", str(1.5 * size / 1e9))
    _store(ModelCache(tmp_path), "b", time.time())
    assert [e.key for e in ModelCache(tmp_path).entries()] == [_key("b")]
    monkeypatch.setenv("LLMKICK_CACHE_MAX_GB", "0")
    _store(ModelCache(tmp_path), "c", time.time())  # the entry just stored is kept even above the cap
    assert [e.key for e in ModelCache(tmp_path).entries()] == [_key("c")]
    monkeypatch.setenv("LLMKICK_CACHE_MAX_GB", "lots")
    with pytest.raises(
        ValueError, match=r"\$LLMKICK_CACHE_MAX_GB='lots' is not a number; expected a finite size"
    ):
        ModelCache(tmp_path)  # refused when the cache is opened, before any model loads


def test_unusable_lock_file_falls_back_to_read_only(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    cache = tmp_path / "c"
    _lm(tiny_llama_dir, cache)

    def refuse(self: filelock.FileLock, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", self.lock_file)  # another user's lock file

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    with caplog.at_level(logging.WARNING):
        hit = _info(_lm(tiny_llama_dir, cache))
        miss = _info(_lm(tiny_llama_dir, cache, sparsity=0.25))
    assert "cannot take the lock" in caplog.text
    assert hit["cache"]["hit"] is True and hit["cache"]["writable"] is False
    assert miss["cache"]["stored"] is False and miss["overall_sparsity"] == pytest.approx(0.25, abs=1e-3)
