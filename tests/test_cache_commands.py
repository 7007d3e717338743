"""`llmkick cache ls | rm | prune` under hostile input: only listed entries are ever deleted, malformed
manifests are reported (not crashed on), numbers are strict, prunes do not race, failures are reported."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path

import filelock
import pytest

from llmkick_models.storage.model_cache import MANIFEST, CacheLockTimeout, ModelCache
from llmkick_models.workflow.cli import main

K_A = "abcdef01" + "0" * 24
K_B = "abcdef01" + "1" * 24  # shares its first 8 digits with K_A
K_C = "12345678" + "9" * 24


def _store(cache: ModelCache, key: str, used: float | None = None, size: int = 10_000) -> Path:
    def save(folder: Path) -> None:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"w" * size)
        (folder / "config.json").write_text("{}")

    parts = {"source": {"local_path": f"/m/{key[:4]}"}, "spec": {"method": "magnitude"}}
    entry = cache.store(key, save, {"key_parts": parts})
    if used is not None:
        os.utime(entry / MANIFEST, (used, used))
    return entry


def _snapshot(folder: Path) -> list[tuple[str, int]]:
    """Every file and its size, lock files aside (taking a lock creates one)."""
    files = (p for p in folder.rglob("*") if p.is_file() and p.suffix != ".lock")
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in files)


def _cli(*args: str) -> int:
    """The exit status of ``llmkick ARGS``, whether returned or raised (user errors raise SystemExit)."""
    try:
        return main(list(args))
    except SystemExit as stop:
        return int(stop.code or 0)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[ModelCache, Path]:
    """A cache with three entries, and a real folder outside it that must survive everything."""
    cache = ModelCache(tmp_path / "cache")
    for age, key in ((300, K_A), (200, K_B), (100, K_C)):
        _store(cache, key, time.time() - age)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not the cache's")
    return cache, outside


@pytest.mark.parametrize(
    "given", [".", "", "..", "../outside", "OUTSIDE", f"./{K_A}", K_A.upper(), K_C[:7], "notes"]
)
def test_rm_refuses_anything_but_a_listed_key(
    layout: tuple[ModelCache, Path], given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache, outside = layout
    (cache.root / "notes").mkdir()  # the user's own folder inside the cache folder is not an entry
    argument = str(outside) if given == "OUTSIDE" else given
    before = _snapshot(cache.root.parent)
    assert _cli("cache", "--dir", str(cache.root), "rm", argument) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and f"{argument!r} is not a key" in error and "nothing was deleted" in error
    assert "allowed: a key listed by `llmkick cache ls`" in error
    assert _snapshot(cache.root.parent) == before
    assert (outside / "precious.txt").read_text() == "not the cache's"
    assert [e.key for e in cache.entries()] == [K_A, K_B, K_C]


def test_one_bad_key_refuses_the_whole_rm(layout: tuple[ModelCache, Path], capsys) -> None:
    cache, outside = layout
    before = _snapshot(cache.root.parent)
    assert _cli("cache", "--dir", str(cache.root), "rm", K_A, str(outside), K_B, "f" * 32) == 2
    error = capsys.readouterr().err.strip()
    assert f"{str(outside)!r} is not a key" in error and f"'{'f' * 32}' matches no entry" in error
    assert _snapshot(cache.root.parent) == before


def test_rm_by_full_key_or_unique_prefix(layout: tuple[ModelCache, Path], capsys) -> None:
    cache, _ = layout
    assert _cli("cache", "--dir", str(cache.root), "rm", "abcdef01") == 2  # K_A and K_B
    error = capsys.readouterr().err
    assert "'abcdef01' matches 2 entries" in error and K_A in error and K_B in error
    assert [e.key for e in cache.entries()] == [K_A, K_B, K_C]
    assert _cli("cache", "--dir", str(cache.root), "rm", "abcdef011", K_C, K_C[:8]) == 0
    assert capsys.readouterr().out.splitlines() == [f"removed {K_B}", f"removed {K_C}"]
    assert [e.key for e in cache.entries()] == [K_A]


BAD_MANIFESTS = {
    "files as a list": ({"files": ["model.safetensors"]}, "'files' must map file names to sizes"),
    "a size as text": ({"files": {"model.safetensors": "10000"}}, "files['model.safetensors'] is '10000'"),
    "a name outside the entry": ({"files": {"../outside/precious.txt": 15}}, "a relative path inside"),
    "sha256 not text": (
        {"sha256": {"model.safetensors": 7, "config.json": 7}},
        "sha256['model.safetensors']",
    ),
    "key_parts as text": ({"key_parts": "magnitude"}, "key_parts is a str; allowed: an object"),
    "source as a list": ({"key_parts": {"source": ["org/x"]}}, "key_parts.source is a list"),
    "a spec value as a list": ({"key_parts": {"spec": {"sparsity": [0.5]}}}, "key_parts.spec.sparsity is"),
    "a model id as a number": ({"key_parts": {"source": {"model_id": 7}}}, "key_parts.source.model_id"),
    "another entry's key": ({"key": K_A}, "is not the folder's name"),
}


def _break_manifest(entry: Path, change: dict) -> None:
    manifest = json.loads((entry / MANIFEST).read_text())
    (entry / MANIFEST).write_text(json.dumps({**manifest, **change}))


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_ls_reports_a_malformed_entry_and_goes_on(
    layout: tuple[ModelCache, Path], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache, outside = layout
    change, reason = BAD_MANIFESTS[case]
    _break_manifest(cache.entry_dir(K_B), change)
    assert _cli("cache", "--dir", str(cache.root), "ls") == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines[:-1]}
    assert set(listed) == {K_A, K_B, K_C}
    assert "malformed:" in listed[K_B] and reason in listed[K_B] and f"llmkick cache rm {K_B}" in listed[K_B]
    assert "/m/abcd method=magnitude" in listed[K_A]
    assert lines[-1].startswith("2 entries") and lines[-1].endswith("1 malformed entries skipped")
    assert cache.entry_dir(K_B).is_dir() and (outside / "precious.txt").exists()  # ls deletes nothing
    assert _cli("cache", "--dir", str(cache.root), "rm", K_B) == 0
    assert not cache.entry_dir(K_B).exists()


def test_unreadable_manifests_are_reported_too(layout: tuple[ModelCache, Path], capsys) -> None:
    cache, _ = layout
    (cache.entry_dir(K_A) / MANIFEST).write_text("{not json")
    (cache.entry_dir(K_B) / MANIFEST).unlink()
    (cache.entry_dir(K_C) / MANIFEST).write_text("[1, 2]")
    assert _cli("cache", "--dir", str(cache.root), "ls") == 0
    out = capsys.readouterr().out
    assert f"{MANIFEST} is not valid JSON" in out and f"it has no {MANIFEST}" in out
    assert "the manifest is a list, not an object" in out and "0 entries" in out


def test_prune_evicts_malformed_entries_first_and_says_so(layout: tuple[ModelCache, Path], capsys) -> None:
    cache, _ = layout
    _break_manifest(cache.entry_dir(K_C), {"key_parts": "magnitude"})  # the most recently used one
    size = cache.entries()[0].size_bytes
    assert _cli("cache", "--dir", str(cache.root), "prune", "--max-gb", str(2.5 * size / 1e9)) == 0
    out = capsys.readouterr().out
    assert f"evicted {K_C}" in out and "malformed: key_parts is a str" in out and "1 entries evicted" in out
    assert [e.key for e in cache.scan()] == [K_A, K_B]  # the least recently used valid one is kept


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "abc", "1e400"])
def test_max_gb_flag_is_strict(layout: tuple[ModelCache, Path], value: str, capsys) -> None:
    cache, _ = layout
    assert _cli("cache", "--dir", str(cache.root), "prune", f"--max-gb={value}") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--max-gb" in error and repr(value) in error and "expected a finite size in GB >= 0" in error
    assert [e.key for e in cache.entries()] == [K_A, K_B, K_C]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LLMKICK_CACHE_MAX_GB", "nan"),
        ("LLMKICK_CACHE_MAX_GB", "inf"),
        ("LLMKICK_CACHE_MAX_GB", "-1"),
        ("LLMKICK_CACHE_LOCK_TIMEOUT", "nan"),
        ("LLMKICK_CACHE_LOCK_TIMEOUT", "inf"),
        ("LLMKICK_CACHE_LOCK_TIMEOUT", "-5"),
        ("LLMKICK_CACHE_LOCK_TIMEOUT", "soon"),
    ],
)
def test_environment_numbers_are_strict(
    layout: tuple[ModelCache, Path], variable: str, value: str, monkeypatch, capsys
) -> None:
    cache, _ = layout
    monkeypatch.setenv(variable, value)
    for command in ("ls", "prune"):
        assert _cli("cache", "--dir", str(cache.root), command) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and f"${variable}={value!r} is not" in error and "finite" in error
    with pytest.raises(ValueError, match=rf"\${variable}="):
        ModelCache(cache.root)  # what an lm_eval run opening the cache gets, before any model loads
    assert [e.key for e in cache.scan()] == [K_A, K_B, K_C]


def test_a_second_prune_waits_for_the_first(
    layout: tuple[ModelCache, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, _ = layout
    size = cache.entries()[0].size_bytes
    monkeypatch.setenv("LLMKICK_CACHE_LOCK_TIMEOUT", "0.2")
    real_rmtree = shutil.rmtree
    nested: list[str] = []

    def rmtree_then_prune_again(path: object, *args: object, **kwargs: object) -> None:
        if not nested:  # while the first prune deletes its first entry, a second one starts
            nested.append("started")
            try:
                ModelCache(cache.root).prune(int(2.5 * size))
            except CacheLockTimeout as error:
                nested.append(str(error))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree_then_prune_again)
    cache.prune(int(2.5 * size))
    assert "held by another process" in nested[-1] and ".prune.lock" in nested[-1]
    assert [e.key for e in cache.entries()] == [K_B, K_C]  # one eviction in all, not one per prune


def test_prune_command_waits_then_reports_a_busy_cache(layout: tuple[ModelCache, Path], monkeypatch, capsys):
    cache, _ = layout
    monkeypatch.setenv("LLMKICK_CACHE_LOCK_TIMEOUT", "0.2")
    holder = filelock.FileLock(str(cache.root / ".prune.lock"), is_singleton=False, thread_local=False)
    with holder:
        assert _cli("cache", "--dir", str(cache.root), "prune", "--max-gb", "0") == 2
    error = capsys.readouterr().err
    assert "another prune of" in error and "waiting for it" in error
    assert "prune: nothing was evicted: waited" in error and "held by another process" in error
    assert [e.key for e in cache.entries()] == [K_A, K_B, K_C]
    assert _cli("cache", "--dir", str(cache.root), "prune", "--max-gb", "0") == 0
    assert cache.entries() == []


def test_eviction_on_store_takes_the_prune_lock(layout: tuple[ModelCache, Path], monkeypatch, caplog) -> None:
    cache, _ = layout
    monkeypatch.setenv("LLMKICK_CACHE_MAX_GB", "0")
    monkeypatch.setenv("LLMKICK_CACHE_LOCK_TIMEOUT", "0.2")
    holder = filelock.FileLock(str(cache.root / ".prune.lock"), is_singleton=False, thread_local=False)
    new_key = "0" * 32
    with holder, caplog.at_level(logging.WARNING):
        _store(ModelCache(cache.root), new_key)  # stored; eviction waits for the running prune, then skips
    assert "not evicting old entries now" in caplog.text
    assert [e.key for e in cache.entries()][:3] == [K_A, K_B, K_C] and cache.lookup(new_key) is not None


def _refuse_deletes(monkeypatch: pytest.MonkeyPatch, root: Path, only: str | None = None) -> None:
    """What a read-only cache folder does to a user who is not root (the tests run as root, for whom
    permissions do not apply): renames and deletions under ``root`` (or of files named ``only``) fail."""
    real = {name: getattr(os, name) for name in ("rename", "unlink", "rmdir")}
    root = root.resolve()

    def refused(path: object, dir_fd: int | None) -> bool:
        if only is not None:
            return os.path.basename(str(path)) == only
        return dir_fd is not None or Path(str(path)).resolve().is_relative_to(root)

    def fake(name: str):
        def call(path: object, *args: object, dir_fd: int | None = None, **kwargs: object) -> object:
            if refused(path, dir_fd):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            if dir_fd is not None:
                kwargs["dir_fd"] = dir_fd
            return real[name](path, *args, **kwargs)

        return call

    for name in real:
        if only is None or name != "rename":
            monkeypatch.setattr(os, name, fake(name))


def test_rm_on_a_read_only_cache_says_why_and_deletes_nothing(
    layout: tuple[ModelCache, Path], monkeypatch, capsys
) -> None:
    cache, _ = layout
    before = _snapshot(cache.root)
    with monkeypatch.context() as patch:
        _refuse_deletes(patch, cache.root)
        assert _cli("cache", "--dir", str(cache.root), "rm", K_A) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert f"cannot delete {cache.entry_dir(K_A)} (PermissionError: Permission denied)" in error
    assert "nothing was deleted" in error
    assert _snapshot(cache.root) == before and cache.lookup(K_A) is not None


def test_rm_that_deletes_only_part_reports_what_is_left(
    layout: tuple[ModelCache, Path], monkeypatch, capsys
) -> None:
    cache, _ = layout
    with monkeypatch.context() as patch:
        _refuse_deletes(patch, cache.root, only="model.safetensors")
        assert _cli("cache", "--dir", str(cache.root), "rm", K_A) == 2
    error = capsys.readouterr().err.strip()
    assert f"{K_A} is out of the cache, but 1 of its files could not be deleted" in error
    assert "model.safetensors: PermissionError: Permission denied" in error
    left = Path(error.rsplit("they are left in ", 1)[1])
    assert [p.name for p in left.iterdir()] == ["model.safetensors"]
    assert not cache.entry_dir(K_A).exists() and [e.key for e in cache.scan()] == [K_B, K_C]


def test_rm_without_a_usable_lock_file_is_a_clear_error(
    layout: tuple[ModelCache, Path], monkeypatch, capsys
) -> None:
    cache, _ = layout

    def refuse(self: filelock.FileLock, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", self.lock_file)  # another user's lock

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    assert _cli("cache", "--dir", str(cache.root), "rm", K_A) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and f"cannot delete {cache.entry_dir(K_A)}" in error
    assert "cannot take the lock" in error and "nothing was deleted" in error
    assert cache.entry_dir(K_A).is_dir()


def test_prune_reports_entries_it_could_not_delete(layout: tuple[ModelCache, Path], monkeypatch, capsys):
    cache, _ = layout
    before = _snapshot(cache.root)
    with monkeypatch.context() as patch:
        _refuse_deletes(patch, cache.root)
        assert _cli("cache", "--dir", str(cache.root), "prune", "--max-gb", "0") == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1].startswith("0 entries evicted")
    refused = captured.err.splitlines()
    assert len(refused) == 3 and all(
        "PermissionError: Permission denied); nothing was deleted" in r for r in refused
    )
    assert refused[0].startswith(f"could not evict {K_A}: cannot delete {cache.entry_dir(K_A)}")
    assert _snapshot(cache.root) == before
