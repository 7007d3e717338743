"""Compressed-model cache: compress once per (model, compression, calibration, llmkick version), then reuse.

An entry is a ``save_pretrained`` folder named by its key plus ``llmkick_cache.json`` (what the key was made
of, the compression report, and the size and sha256 of every file).  Entries are written to a temporary
folder and renamed into place, so a crash never leaves a half-written entry under its final name; deleting
renames the entry away first, for the same reason.  Every lookup checks the manifest's fields and the files
against the digests written at store time; an entry that fails is discarded with a warning and rebuilt.
A per-key ``filelock`` makes concurrent processes (e.g. ``accelerate launch`` ranks) compress once: the
first takes the lock and compresses, the others wait, then load.  A cache folder that cannot be written is
used read-only (hits still load; misses compress in memory), and an entry that cannot be written (disk
full) raises :class:`CacheWriteError` for the caller to carry on without it.  ``$LLMKICK_CACHE_MAX_GB``
caps the total size: storing an entry evicts the least recently used ones, under a cache-wide prune lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmkick_models.storage.cache_key import sha256_file
from llmkick_models.storage.cache_manifest import (
    KEY_LENGTH,
    MANIFEST,
    MalformedManifest,
    check_key,
    is_key,
    read_manifest,
)
from llmkick_models.storage.cache_settings import (
    LOCK_TIMEOUT_ENV,
    default_cache_dir,
    lock_timeout,
    max_cache_bytes,
)

log = logging.getLogger(__name__)

_LOCK_LOG_EVERY_S = 60.0
#: The cache-wide lock every eviction holds, so that two prunes (or a prune and a store) never race.
PRUNE_LOCK = ".prune.lock"
#: The shortest key prefix ``llmkick cache rm`` accepts (a typo of one or two digits deletes nothing).
MIN_KEY_PREFIX = 8
_KEY_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_KEY_PREFIX},{KEY_LENGTH}}}")
# How safetensors words an I/O failure ("I/O error: ... (os error 28)"; older releases "IoError(Os {...})").
_SAFETENSORS_IO = re.compile(r"I/O error|IoError|os error \d+")
# Where torch's zip writer fails when a write is refused (its errors carry no errno).
_TORCH_WRITER_MARKS = ("PytorchStreamWriter", "inline_container.cc")


def _reason(error: BaseException) -> str:
    """An exception as one line: its type and message."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"{type(error).__name__}: {' '.join(text.split())}"


def is_write_failure(error: BaseException) -> bool:
    """Whether ``error`` means the files could not be written (disk full, quota, permissions, I/O).

    Deliberately narrow, so that a bug (a TypeError, a KeyError, ...) is never mistaken for a full disk:
    any OSError; safetensors' SafetensorError (its one exception type) only when it reports an I/O error;
    torch's RuntimeError only when it comes from its file writer.
    """
    if isinstance(error, OSError):
        return True
    name, text = type(error).__name__, str(error)
    if name == "SafetensorError":
        return bool(_SAFETENSORS_IO.search(text))
    return isinstance(error, RuntimeError) and any(mark in text for mark in _TORCH_WRITER_MARKS)


def _rmtree_collecting(path: Path) -> list[tuple[str, BaseException]]:
    """Delete what can be deleted under ``path``; the (path, error) pairs of what could not."""
    failures: list[tuple[str, BaseException]] = []
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _function, failed, error: failures.append((failed, error)))
    else:
        shutil.rmtree(path, onerror=lambda _function, failed, info: failures.append((failed, info[1])))
    return failures


def _files_under(folder: Path) -> list[Path]:
    found = []
    with contextlib.suppress(OSError):
        found = [p for p in folder.rglob("*") if p.is_file()]
    return found


def _size(folder: Path) -> int:
    total = 0
    for file in _files_under(folder):
        with contextlib.suppress(OSError):  # a file removed while we count
            total += file.stat().st_size
    return total


class CacheLockError(RuntimeError):
    """An entry's lock could not be taken (lock file not creatable, or held too long)."""


class CacheLockTimeout(CacheLockError):
    """Another process held an entry's lock for longer than the lock timeout."""


class CacheWriteError(RuntimeError):
    """An entry could not be written (disk full, permissions, I/O error); the cache is left as it was."""


class CacheDeleteError(RuntimeError):
    """An entry could not be (completely) deleted; the message names the folder, the reason, what is left."""


@dataclass(frozen=True)
class CacheEntry:
    """One entry as listed by ``llmkick cache ls``: complete, or malformed (``problem`` says why)."""

    key: str
    path: Path
    size_bytes: int
    last_used: float  # seconds since the epoch: the manifest's mtime, touched on every hit
    manifest: dict[str, Any]
    problem: str | None = None

    def describe(self) -> str:
        """What was compressed (source and spec) in one line; for a malformed entry, what is wrong."""
        if self.problem is not None:
            return f"malformed: {self.problem}"
        parts = self.manifest.get("key_parts") or {}
        source = parts.get("source") or {}
        name = source.get("model_id") or source.get("local_path") or "?"
        spec = parts.get("spec") or {}
        settings = ",".join(f"{k}={v}" for k, v in spec.items() if v is not None and k != "calibration")
        return f"{name} {settings}"


@dataclass
class PruneResult:
    """What one prune did: evicted entries, entries skipped because in use, failures, the size left."""

    evicted: list[CacheEntry] = field(default_factory=list)
    busy: list[CacheEntry] = field(default_factory=list)
    failed: list[tuple[CacheEntry, str]] = field(default_factory=list)
    left_bytes: int = 0


class ModelCache:
    """A directory of compressed models, one sub-folder per key."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        # Read (and validated) now, so a bad value fails before any model is loaded.
        self.max_bytes = max_cache_bytes()
        self.lock_timeout = lock_timeout()

    def entry_dir(self, key: str) -> Path:
        """Where the entry for ``key`` lives once complete (a ValueError for anything but a key)."""
        return self.root / check_key(key)

    def writable(self) -> bool:
        """Whether entries and locks can be written here (creates the folder when it can)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            probe.touch()
            probe.unlink()
        except OSError:
            return False
        return True

    def lookup(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The complete, verified entry for ``key`` and its manifest, or None.

        Every stored file is checked against the size and sha256 written at store time.  A partial,
        damaged, malformed or unreadable entry is discarded (when the folder is writable) with a warning,
        so the caller rebuilds it; a hit marks the entry as recently used.
        """
        entry = self.entry_dir(key)
        if not entry.exists():
            return None
        try:
            manifest = read_manifest(entry)
            for name, size in manifest["files"].items():
                file = entry / name
                if file.stat().st_size != size:
                    raise ValueError(f"{name} has {file.stat().st_size} bytes, the manifest says {size}")
                if sha256_file(file) != manifest["sha256"][name]:
                    raise ValueError(f"{name} does not match the sha256 written when it was stored")
        except (OSError, ValueError) as error:
            self.discard(key, str(error))
            return None
        with contextlib.suppress(OSError):  # a read-only cache cannot record use; eviction order only
            os.utime(entry / MANIFEST)
        return entry, manifest

    def discard(self, key: str, reason: str) -> None:
        """Warn and delete a bad entry (left in place, still never served, if the folder is read-only)."""
        entry = self.entry_dir(key)
        log.warning("llmkick cache entry %s is damaged (%s); discarding it, the model is recompressed", entry,
                    reason)  # fmt: skip
        try:
            self._delete(entry)
        except FileNotFoundError:
            pass
        except CacheDeleteError as error:
            log.warning("%s; it stays unused", error)

    def _delete(self, entry: Path) -> None:
        """Delete an entry folder: first renamed out of the cache's names in one step, then its files.

        So an entry is either still complete under its key or gone from the listing; files that cannot be
        deleted after the rename are reported (and a later prune retries them).  FileNotFoundError when
        the entry is already gone; :class:`CacheDeleteError` otherwise.
        """
        trash = self.root / f".tmp-rm-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(entry, trash)
        except FileNotFoundError:
            raise
        except OSError as error:
            reason = _reason(error)
            raise CacheDeleteError(f"cannot delete {entry} ({reason}); nothing was deleted") from error
        failures = _rmtree_collecting(trash)
        if failures:
            failed, error = failures[0]
            left = len(_files_under(trash))
            raise CacheDeleteError(
                f"{entry.name} is out of the cache, but {left} of its files could not be deleted "
                f"({failed}: {_reason(error)}); they are left in {trash}"
            )

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Exclusive per-key lock shared by all processes using this cache directory.

        Waits at most ``timeout`` seconds (default ``$LLMKICK_CACHE_LOCK_TIMEOUT`` or 6 hours), logging
        every minute, then raises :class:`CacheLockTimeout`.
        """
        with self._held(f"{check_key(key)}.lock", f"another process compressing {key}", timeout):
            yield

    @contextlib.contextmanager
    def prune_lock(self, timeout: float | None = None) -> Iterator[None]:
        """The cache-wide lock every eviction holds (``.prune.lock``): prunes run one at a time."""
        with self._held(PRUNE_LOCK, "another process pruning the cache", timeout):
            yield

    @contextlib.contextmanager
    def _held(self, name: str, holder: str, timeout: float | None) -> Iterator[None]:
        import filelock

        limit = self.lock_timeout if timeout is None else timeout
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheLockError(f"cannot create {self.root} for the lock {name}: {error}") from error
        lock = filelock.FileLock(str(self.root / name))
        start = time.monotonic()
        while True:
            waited = time.monotonic() - start
            try:
                lock.acquire(timeout=max(0.0, min(_LOCK_LOG_EVERY_S, limit - waited)))
                break
            except filelock.Timeout:  # (a subclass of OSError: caught first)
                waited = time.monotonic() - start
                if waited >= limit:
                    raise CacheLockTimeout(
                        f"waited {waited:.0f} s for {lock.lock_file}, held by another process "
                        f"(${LOCK_TIMEOUT_ENV} sets the limit)"
                    ) from None
                log.info("llmkick cache: waiting for %s (%.0f s)", holder, waited)
            except OSError as error:  # e.g. a lock file left by another user, read-only for us
                raise CacheLockError(f"cannot take the lock {lock.lock_file}: {error}") from error
        try:
            yield
        finally:
            lock.release()

    def store(self, key: str, save: Callable[[Path], None], manifest: dict[str, Any]) -> Path:
        """Write an entry atomically: ``save(tmp_dir)``, add the manifest with digests, rename into place.

        A failure to write (see :func:`is_write_failure`: disk full, permissions, I/O) raises
        :class:`CacheWriteError` and leaves no trace; any other exception from ``save`` propagates as is.
        Afterwards, if ``$LLMKICK_CACHE_MAX_GB`` is set, least recently used entries are evicted.
        """
        final = self.entry_dir(key)
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            save(tmp)
            stored = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in stored}
            digests = {str(p.relative_to(tmp)): sha256_file(p) for p in stored}
            (tmp / MANIFEST).write_text(
                json.dumps({**manifest, "key": key, "files": files, "sha256": digests}, indent=1, default=str)
            )
            if final.exists():  # a damaged entry we were asked to replace
                shutil.rmtree(final)
            os.replace(tmp, final)
        except Exception as error:
            if not is_write_failure(error):
                raise
            reason = _reason(error)
            raise CacheWriteError(f"could not store {key} in the cache {self.root} ({reason})") from error
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self.max_bytes is not None:
            self._evict_after_store(key)
        return final

    def _evict_after_store(self, key: str) -> None:
        try:
            result = self.prune(self.max_bytes or 0, keep=key)
        except (CacheLockError, OSError) as error:  # the entry is stored; a later store or prune evicts
            log.warning("llmkick cache: not evicting old entries now (%s)", error)
            return
        for entry, reason in result.failed:
            log.warning("llmkick cache: could not evict %s (%s)", entry.path, reason)

    def scan(self) -> list[CacheEntry]:
        """Every entry, least recently used first: complete ones and malformed ones (``problem`` set).

        Only folders named like a key are entries; anything else in the folder is not the cache's.
        """
        found: list[CacheEntry] = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if not is_key(folder.name) or folder.is_symlink() or not folder.is_dir():
                continue  # the cache writes real folders only: a link (or a file) is not its to delete
            try:
                manifest, problem = read_manifest(folder), None
            except MalformedManifest as error:
                manifest, problem = {}, str(error)
            try:
                last_used = (folder / MANIFEST).stat().st_mtime
            except OSError:
                try:
                    last_used = folder.stat().st_mtime
                except OSError:  # removed while we looked
                    continue
            found.append(CacheEntry(folder.name, folder, _size(folder), last_used, manifest, problem))
        return sorted(found, key=lambda e: e.last_used)

    def entries(self) -> list[CacheEntry]:
        """Complete entries (those with a valid manifest), least recently used first."""
        return [entry for entry in self.scan() if entry.problem is None]

    def resolve(self, given: Sequence[str]) -> list[CacheEntry]:
        """The listed entries (malformed ones included) that ``given`` names, each once.

        Each item must be a listed key or a prefix of at least 8 hex digits matching exactly one entry;
        otherwise a ValueError naming every item that is not, so that nothing is deleted for any of them.
        """
        entries = self.scan()
        chosen: dict[str, CacheEntry] = {}
        problems = []
        for text in given:
            if not _KEY_PREFIX.fullmatch(text):
                problems.append(f"{text!r} is not a key")
                continue
            matches = [entry for entry in entries if entry.key.startswith(text)]
            if not matches:
                problems.append(f"{text!r} matches no entry in {self.root}")
            elif len(matches) > 1:
                keys = ", ".join(entry.key for entry in matches)
                problems.append(f"{text!r} matches {len(matches)} entries ({keys})")
            else:
                chosen.setdefault(matches[0].key, matches[0])
        if problems:
            raise ValueError(
                "; ".join(problems)
                + f" (allowed: a key listed by `llmkick cache ls`, {KEY_LENGTH} lowercase hex digits, "
                f"or a prefix of {MIN_KEY_PREFIX}+ of them that matches only that entry)"
            )
        return list(chosen.values())

    def remove(self, key: str) -> bool:
        """Delete the entry ``key`` (waiting for a process that is writing it); False if absent.

        Raises :class:`CacheDeleteError` (naming the folder and the OS reason) when it cannot be deleted.
        """
        entry = self.entry_dir(key)
        if not entry.is_dir():
            return False
        try:
            with self.lock(key):
                self._delete(entry)
        except FileNotFoundError:  # removed by another process meanwhile
            return False
        except CacheLockError as error:
            raise CacheDeleteError(f"cannot delete {entry} ({error}); nothing was deleted") from error
        return True

    def prune(self, max_bytes: int, keep: str | None = None, timeout: float | None = None) -> PruneResult:
        """Evict entries until the cache holds at most ``max_bytes``: malformed ones (never served) first,
        then the least recently used.

        Runs under :meth:`prune_lock` (waiting at most ``timeout`` s, default the lock timeout), so two
        prunes never race.  ``keep`` (the entry just stored) and entries whose lock another process holds
        are never evicted.  Leftover temporary folders older than a day are removed as well.
        """
        if not self.root.is_dir():  # nothing to evict (and a mistyped --dir is not created)
            return PruneResult()
        with self.prune_lock(timeout):
            for tmp in self.root.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    if time.time() - tmp.stat().st_mtime > 86400:
                        shutil.rmtree(tmp)
            entries = sorted(self.scan(), key=lambda e: e.problem is None)  # stable: LRU within each
            result = PruneResult(left_bytes=sum(e.size_bytes for e in entries))
            for entry in entries:
                if result.left_bytes <= max_bytes:
                    break
                if entry.key != keep:
                    self._evict(entry, result)
        return result

    def _evict(self, entry: CacheEntry, result: PruneResult) -> None:
        try:
            with self.lock(entry.key, timeout=0):
                self._delete(entry.path)
        except CacheLockTimeout:
            result.busy.append(entry)  # in use by another process right now
            return
        except FileNotFoundError:  # removed by another process meanwhile
            result.left_bytes -= entry.size_bytes
            return
        except (CacheLockError, CacheDeleteError) as error:
            result.failed.append((entry, str(error)))
            return
        result.left_bytes -= entry.size_bytes
        result.evicted.append(entry)
        if entry.problem is None:
            log.info("llmkick cache: evicted %s (%.2f GB, least recently used)", entry.path,
                     entry.size_bytes / 1e9)  # fmt: skip
        else:
            log.warning("llmkick cache: evicted the malformed entry %s (%s)", entry.path, entry.problem)
