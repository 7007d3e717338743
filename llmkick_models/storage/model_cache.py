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

This module is the cache's one entry point; file operations (:mod:`.cache_files`), locks
(:mod:`.cache_lock`), the listing (:mod:`.cache_entries`) and eviction (:mod:`.cache_eviction`) live beside
it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmkick_models.storage.cache_entries import CacheEntry, resolve_keys, scan_entries
from llmkick_models.storage.cache_eviction import PruneResult, prune_cache
from llmkick_models.storage.cache_files import (
    CacheDeleteError,
    CacheWriteError,
    delete_entry_folder,
    is_write_failure,
    one_line_reason,
)
from llmkick_models.storage.cache_key import sha256_file
from llmkick_models.storage.cache_lock import (
    CacheLockError,
    CacheLockTimeout,
    entry_lock,
    prune_lock,
)
from llmkick_models.storage.cache_manifest import MANIFEST, check_key, read_manifest
from llmkick_models.storage.cache_settings import default_cache_dir, lock_timeout, max_cache_bytes

# The cache's names, importable from here as before the split (compressed_hf, the CLI and the tests use them).
__all__ = [
    "MANIFEST",
    "CacheDeleteError",
    "CacheEntry",
    "CacheLockError",
    "CacheLockTimeout",
    "CacheWriteError",
    "ModelCache",
    "PruneResult",
]

log = logging.getLogger(__name__)


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
            delete_entry_folder(entry)
        except FileNotFoundError:
            pass
        except CacheDeleteError as error:
            log.warning("%s; it stays unused", error)

    def lock(self, key: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """Exclusive per-key lock shared by all processes using this cache directory.

        Waits at most ``timeout`` seconds (default ``$LLMKICK_CACHE_LOCK_TIMEOUT`` or 6 hours), logging
        every minute, then raises :class:`CacheLockTimeout`.
        """
        return entry_lock(self.root, key, self._limit(timeout))

    def prune_lock(self, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
        """The cache-wide lock every eviction holds (``.prune.lock``): prunes run one at a time."""
        return prune_lock(self.root, self._limit(timeout))

    def _limit(self, timeout: float | None) -> float:
        return self.lock_timeout if timeout is None else timeout

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
            reason = one_line_reason(error)
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
        """Every entry, least recently used first, malformed ones included (see :func:`.scan_entries`)."""
        return scan_entries(self.root)

    def entries(self) -> list[CacheEntry]:
        """Complete entries (those with a valid manifest), least recently used first."""
        return [entry for entry in self.scan() if entry.problem is None]

    def resolve(self, given: Sequence[str]) -> list[CacheEntry]:
        """The listed entries (malformed ones included) that ``given`` names, each once; a ValueError naming
        every item that is not a key or an unambiguous prefix (see :func:`.resolve_keys`)."""
        return resolve_keys(self.scan(), given, self.root)

    def remove(self, key: str) -> bool:
        """Delete the entry ``key`` (waiting for a process that is writing it); False if absent.

        Raises :class:`CacheDeleteError` (naming the folder and the OS reason) when it cannot be deleted.
        """
        entry = self.entry_dir(key)
        if not entry.is_dir():
            return False
        try:
            with self.lock(key):
                delete_entry_folder(entry)
        except FileNotFoundError:  # removed by another process meanwhile
            return False
        except CacheLockError as error:
            raise CacheDeleteError(f"cannot delete {entry} ({error}); nothing was deleted") from error
        return True

    def prune(self, max_bytes: int, keep: str | None = None, timeout: float | None = None) -> PruneResult:
        """Evict entries until the cache holds at most ``max_bytes``, never ``keep`` nor an entry in use,
        waiting at most ``timeout`` s (default the lock timeout) for another prune (:func:`.prune_cache`)."""
        return prune_cache(self.root, max_bytes, keep, self._limit(timeout))
