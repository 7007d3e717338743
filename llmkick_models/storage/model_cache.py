"""Compressed-model cache: compress once per (model, compression, calibration, llmkick version), then reuse.

An entry is a ``save_pretrained`` folder plus ``llmkick_cache.json`` (what the key was made of, the
compression report, and the size and sha256 of every file).  Entries are written to a temporary folder and
renamed into place, so a crash never leaves a half-written entry under its final name.  Every lookup checks
the files against the digests written at store time; an entry whose manifest is missing or whose files do
not match is discarded with a warning and rebuilt.  A per-key ``filelock`` makes concurrent processes (e.g.
``accelerate launch`` ranks) compress once: the first takes the lock and compresses, the others wait, then
load.  A cache folder that cannot be written is used read-only (hits still load; misses compress in memory).
``$LLMKICK_CACHE_MAX_GB`` caps the total size: storing an entry evicts the least recently used ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "llmkick_cache.json"
CACHE_DIR_ENV = "LLMKICK_CACHE_DIR"
MAX_GB_ENV = "LLMKICK_CACHE_MAX_GB"
LOCK_TIMEOUT_ENV = "LLMKICK_CACHE_LOCK_TIMEOUT"
#: How long a process waits for another one compressing the same key before compressing on its own.
DEFAULT_LOCK_TIMEOUT_S = 6 * 3600.0
_LOCK_LOG_EVERY_S = 60.0
_WHOLE_FILE_HASH_LIMIT = 64 * 2**20  # hash small files fully; large ones by size, mtime and their ends
_EDGE_BYTES = 2**20


def default_cache_dir() -> Path:
    """``$LLMKICK_CACHE_DIR``, else ``$XDG_CACHE_HOME/llmkick/models``, else ``~/.cache/llmkick/models``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "llmkick" / "models"


def llmkick_version() -> str:
    """The installed llmkick version (part of every key: a new release never reuses old compressions)."""
    try:
        return version("llmkick")
    except PackageNotFoundError:  # running from a source tree
        return "source"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    stat = path.stat()
    if stat.st_size <= _WHOLE_FILE_HASH_LIMIT:
        digest.update(path.read_bytes())
    else:  # hashing tens of GB per lookup is too slow; size, mtime and both ends catch real changes
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_EDGE_BYTES))
            handle.seek(-_EDGE_BYTES, os.SEEK_END)
            digest.update(handle.read(_EDGE_BYTES))
    return digest.hexdigest()


def _hub_commit(model_id: str, revision: str | None, cache_dir: str | None = None) -> str | None:
    """The commit a hub revision resolves to: from the hub when online, else from the local HF cache."""
    from huggingface_hub import HfApi, constants, snapshot_download

    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().model_info(model_id, revision=revision).sha
        except Exception as error:  # unreachable hub, gated or unknown repo: try the local cache
            log.debug("could not ask the hub for %s@%s: %r", model_id, revision, error)
    try:
        # With local_files_only the library resolves branch/tag names through its own cache layout.
        folder = snapshot_download(model_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
        return Path(folder).name
    except Exception as error:  # not cached either: the key falls back to the revision name
        log.debug("could not resolve %s@%s to a commit: %r", model_id, revision, error)
    return None


def describe_source(
    pretrained: str,
    revision: str | None = None,
    gguf_file: str | None = None,
    hub_cache_dir: str | None = None,
) -> dict[str, Any]:
    """What identifies the weights: a local folder by its files' content, a hub id by its commit."""
    path = Path(pretrained)
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.is_file() and MANIFEST not in p.name)
        if gguf_file:
            files = [p for p in files if p.name == Path(gguf_file).name or p.suffix == ".json"]
        content = hashlib.sha256()
        for file in files:
            content.update(f"{file.relative_to(path)}\0{_file_digest(file)}\0".encode())
        return {
            "local_path": str(path.resolve()),
            "content_sha256": content.hexdigest(),
            "gguf_file": gguf_file,
        }
    return {
        "model_id": pretrained,
        "revision": revision,
        "commit": _hub_commit(pretrained, revision, hub_cache_dir),
        "gguf_file": gguf_file,
    }


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of everything that determines the compressed weights."""
    canonical = json.dumps({**parts, "llmkick_version": llmkick_version()}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def sha256_file(path: Path) -> str:
    """The sha256 of a file's whole content (about 1 s per 300 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(2**22):
            digest.update(chunk)
    return digest.hexdigest()


def max_cache_bytes() -> int | None:
    """The size cap from ``$LLMKICK_CACHE_MAX_GB`` (GB = 10^9 bytes), or None when unset."""
    text = os.environ.get(MAX_GB_ENV, "").strip()
    if not text:
        return None
    try:
        gigabytes = float(text)
    except ValueError:
        raise ValueError(f"${MAX_GB_ENV}={text!r} is not a number; allowed: a size in GB, e.g. 50") from None
    if gigabytes < 0:
        raise ValueError(f"${MAX_GB_ENV}={text!r} is negative; allowed: a size in GB >= 0, e.g. 50")
    return int(gigabytes * 1e9)


def _lock_timeout() -> float:
    text = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"${LOCK_TIMEOUT_ENV}={text!r} is not a number; allowed: seconds to wait, e.g. 3600"
        ) from None


class CacheLockError(RuntimeError):
    """An entry's lock could not be taken (lock file not creatable, or held too long)."""


class CacheLockTimeout(CacheLockError):
    """Another process held an entry's lock for longer than the lock timeout."""


@dataclass(frozen=True)
class CacheEntry:
    """One complete entry as listed by ``llmkick cache ls``."""

    key: str
    path: Path
    size_bytes: int
    last_used: float  # seconds since the epoch: the manifest's mtime, touched on every hit
    manifest: dict[str, Any]

    def describe(self) -> str:
        """What was compressed: source and spec, in one line."""
        parts = self.manifest.get("key_parts", {})
        source = parts.get("source", {})
        name = source.get("model_id") or source.get("local_path") or "?"
        spec = parts.get("spec", {})
        settings = ",".join(f"{k}={v}" for k, v in spec.items() if v is not None and k != "calibration")
        return f"{name} {settings}"


class ModelCache:
    """A directory of compressed models, one sub-folder per key."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        # Read (and validated) now, so a bad value fails before any model is loaded.
        self.max_bytes = max_cache_bytes()
        self.lock_timeout = _lock_timeout()

    def entry_dir(self, key: str) -> Path:
        """Where the entry for ``key`` lives once complete."""
        return self.root / key

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

    def _read_manifest(self, key: str) -> dict[str, Any]:
        manifest = json.loads((self.entry_dir(key) / MANIFEST).read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise ValueError("the manifest has no file list")
        return manifest

    def lookup(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The complete, verified entry for ``key`` and its manifest, or None.

        Every stored file is checked against the size and sha256 written at store time.  A partial,
        damaged or unreadable entry is discarded (when the folder is writable) with a warning, so the
        caller rebuilds it; a hit marks the entry as recently used.
        """
        entry = self.entry_dir(key)
        if not entry.exists():
            return None
        try:
            manifest = self._read_manifest(key)
            digests = manifest.get("sha256")
            if not isinstance(digests, dict) or set(digests) != set(manifest["files"]):
                raise ValueError("the manifest has no sha256 digests (written by an older llmkick)")
            for name, size in manifest["files"].items():
                file = entry / name
                if file.stat().st_size != size:
                    raise ValueError(f"{name} has {file.stat().st_size} bytes, the manifest says {size}")
                if sha256_file(file) != digests[name]:
                    raise ValueError(f"{name} does not match the sha256 written when it was stored")
        except (OSError, ValueError, KeyError, TypeError) as error:
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
            shutil.rmtree(entry)
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("could not delete %s (%s); it stays unused", entry, error)

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Exclusive per-key lock shared by all processes using this cache directory.

        Waits at most ``timeout`` seconds (default ``$LLMKICK_CACHE_LOCK_TIMEOUT`` or 6 hours), logging
        every minute, then raises :class:`CacheLockTimeout`.
        """
        import filelock

        limit = self.lock_timeout if timeout is None else timeout
        self.root.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(self.root / f"{key}.lock"))
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
                log.info("llmkick cache: waiting for another process compressing %s (%.0f s)", key, waited)
            except OSError as error:  # e.g. a lock file left by another user, read-only for us
                raise CacheLockError(f"cannot take the lock {lock.lock_file}: {error}") from error
        try:
            yield
        finally:
            lock.release()

    def store(self, key: str, save: Callable[[Path], None], manifest: dict[str, Any]) -> Path:
        """Write an entry atomically: ``save(tmp_dir)``, add the manifest with digests, rename into place.

        Afterwards, if ``$LLMKICK_CACHE_MAX_GB`` is set, least recently used entries are evicted.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            save(tmp)
            stored = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in stored}
            digests = {str(p.relative_to(tmp)): sha256_file(p) for p in stored}
            (tmp / MANIFEST).write_text(
                json.dumps({**manifest, "key": key, "files": files, "sha256": digests}, indent=1, default=str)
            )
            final = self.entry_dir(key)
            if final.exists():  # a damaged entry we were asked to replace
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if self.max_bytes is not None:
            self.prune(self.max_bytes, keep=key)
        return final

    def entries(self) -> list[CacheEntry]:
        """Complete entries (those with a readable manifest), least recently used first."""
        found = []
        if not self.root.is_dir():
            return found
        for folder in self.root.iterdir():
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            try:
                manifest = self._read_manifest(folder.name)
                last_used = (folder / MANIFEST).stat().st_mtime
            except (OSError, ValueError):
                continue
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            found.append(CacheEntry(folder.name, folder, size, last_used, manifest))
        return sorted(found, key=lambda e: e.last_used)

    def remove(self, key: str) -> bool:
        """Delete the entry ``key`` (waiting for a process that is writing it); False if absent."""
        entry = self.entry_dir(key)
        if not entry.is_dir():
            return False
        with self.lock(key):
            shutil.rmtree(entry, ignore_errors=True)
        return True

    def prune(self, max_bytes: int, keep: str | None = None) -> list[CacheEntry]:
        """Evict least recently used entries until the cache holds at most ``max_bytes``.

        ``keep`` (the entry just stored) and entries whose lock another process holds are never evicted.
        Leftover temporary folders of crashed writers older than a day are removed as well.
        """
        import filelock

        for tmp in self.root.glob(".tmp-*") if self.root.is_dir() else ():
            with contextlib.suppress(OSError):
                if time.time() - tmp.stat().st_mtime > 86400:
                    shutil.rmtree(tmp)
        entries = self.entries()
        total = sum(e.size_bytes for e in entries)
        evicted = []
        for entry in entries:
            if total <= max_bytes:
                break
            if entry.key == keep:
                continue
            lock = filelock.FileLock(str(self.root / f"{entry.key}.lock"))
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                continue  # in use by another process right now
            try:
                shutil.rmtree(entry.path, ignore_errors=True)
            finally:
                lock.release()
            total -= entry.size_bytes
            evicted.append(entry)
            log.info(
                "llmkick cache: evicted %s (%.2f GB, least recently used)", entry.path, entry.size_bytes / 1e9
            )
        return evicted
