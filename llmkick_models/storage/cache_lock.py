"""The cache's inter-process locks: one per key (compressing or deleting that entry) and one cache-wide
(pruning), each waited for up to a limit with a log line every minute."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from llmkick_models.storage.cache_manifest import check_key
from llmkick_models.storage.cache_settings import LOCK_TIMEOUT_ENV

log = logging.getLogger(__name__)

_LOCK_LOG_EVERY_S = 60.0
#: The cache-wide lock every eviction holds, so that two prunes (or a prune and a store) never race.
PRUNE_LOCK = ".prune.lock"


class CacheLockError(RuntimeError):
    """An entry's lock could not be taken (lock file not creatable, or held too long)."""


class CacheLockTimeout(CacheLockError):
    """Another process held an entry's lock for longer than the lock timeout."""


def entry_lock(root: Path, key: str, limit: float) -> contextlib.AbstractContextManager[None]:
    """The lock of the entry ``key`` (a ValueError for anything but a key), held while it is written or
    deleted."""
    return hold_lock(root, f"{check_key(key)}.lock", f"another process compressing {key}", limit)


def prune_lock(root: Path, limit: float) -> contextlib.AbstractContextManager[None]:
    """The cache-wide lock every eviction holds (``.prune.lock``): prunes run one at a time."""
    return hold_lock(root, PRUNE_LOCK, "another process pruning the cache", limit)


@contextlib.contextmanager
def hold_lock(root: Path, name: str, holder: str, limit: float) -> Iterator[None]:
    """Hold the lock file ``root/name``, waiting at most ``limit`` seconds for ``holder`` to release it.

    Logs every minute while waiting; :class:`CacheLockTimeout` past the limit, :class:`CacheLockError`
    when the folder or the lock file cannot be created.
    """
    import filelock

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CacheLockError(f"cannot create {root} for the lock {name}: {error}") from error
    lock = filelock.FileLock(str(root / name))
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
