"""Evicting entries to a size cap: malformed ones first, then the least recently used, one prune at a time,
never an entry another process holds."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmkick_models.storage.cache_entries import CacheEntry, scan_entries
from llmkick_models.storage.cache_files import CacheDeleteError, delete_entry_folder
from llmkick_models.storage.cache_lock import CacheLockError, CacheLockTimeout, entry_lock, prune_lock

log = logging.getLogger(__name__)

# Temporary folders (a store or delete cut short) older than this are a crash's leftovers.
_STALE_TMP_S = 86400


@dataclass
class PruneResult:
    """What one prune did: evicted entries, entries skipped because in use, failures, the size left."""

    evicted: list[CacheEntry] = field(default_factory=list)
    busy: list[CacheEntry] = field(default_factory=list)
    failed: list[tuple[CacheEntry, str]] = field(default_factory=list)
    left_bytes: int = 0


def prune_cache(root: Path, max_bytes: int, keep: str | None, wait: float) -> PruneResult:
    """Evict entries under ``root`` until it holds at most ``max_bytes``: malformed ones (never served)
    first, then the least recently used.

    Runs under the cache-wide prune lock (waiting at most ``wait`` s), so two prunes never race.  ``keep``
    (the entry just stored) and entries whose lock another process holds are never evicted.  Leftover
    temporary folders older than a day are removed as well.
    """
    if not root.is_dir():  # nothing to evict (and a mistyped --dir is not created)
        return PruneResult()
    with prune_lock(root, wait):
        for tmp in root.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(tmp)
        entries = sorted(scan_entries(root), key=lambda e: e.problem is None)  # stable: LRU within each
        result = PruneResult(left_bytes=sum(e.size_bytes for e in entries))
        for entry in entries:
            if result.left_bytes <= max_bytes:
                break
            if entry.key != keep:
                _evict(root, entry, result)
    return result


def _evict(root: Path, entry: CacheEntry, result: PruneResult) -> None:
    try:
        with entry_lock(root, entry.key, 0):
            delete_entry_folder(entry.path)
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
