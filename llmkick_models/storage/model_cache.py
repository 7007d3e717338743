"""Compressed-model cache: compress once per (model, compression, calibration, llmkick version), then reuse.

An entry is a ``save_pretrained`` folder plus ``llmkick_cache.json`` (what the key was made of, the
compression report, and the size of every file).  Entries are written to a temporary folder and renamed into
place, so a crash never leaves a half-written entry under its final name; an entry whose manifest is missing
or whose files do not match it is treated as absent and rebuilt.  An exclusive file lock per key makes
concurrent processes (e.g. ``accelerate launch`` ranks) compress once: the first takes the lock and
compresses, the others wait, then load.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MANIFEST = "llmkick_cache.json"
CACHE_DIR_ENV = "LLMKICK_CACHE_DIR"
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


def _hub_commit(model_id: str, revision: str | None) -> str | None:
    """The commit a hub revision points to, from the local HF cache or (online) the hub; None if unknown."""
    try:
        from huggingface_hub import HfApi, constants

        folder = Path(constants.HF_HUB_CACHE) / f"models--{model_id.replace('/', '--')}"
        ref = folder / "refs" / (revision or "main")
        if ref.is_file():
            return ref.read_text().strip()
        if revision and (folder / "snapshots" / revision).is_dir():
            return revision
        if not constants.HF_HUB_OFFLINE:
            return HfApi().model_info(model_id, revision=revision).sha
    except Exception as error:  # unreachable hub, unknown repo: fall back to the revision name
        log.debug("could not resolve %s@%s to a commit: %r", model_id, revision, error)
    return None


def describe_source(
    pretrained: str, revision: str | None = None, gguf_file: str | None = None
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
        "commit": _hub_commit(pretrained, revision),
        "gguf_file": gguf_file,
    }


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of everything that determines the compressed weights."""
    canonical = json.dumps({**parts, "llmkick_version": llmkick_version()}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class ModelCache:
    """A directory of compressed models, one sub-folder per key."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def entry_dir(self, key: str) -> Path:
        """Where the entry for ``key`` lives once complete."""
        return self.root / key

    def lookup(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """The complete entry for ``key`` and its manifest, or None (absent, partial or corrupt)."""
        entry = self.entry_dir(key)
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
            for name, size in manifest["files"].items():
                if (entry / name).stat().st_size != size:
                    raise ValueError(f"{name} has the wrong size")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("llmkick cache entry %s is corrupt (%s); it will be rebuilt", entry, error)
            return None
        return entry, manifest

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive, blocking, per-key lock shared by all processes using this cache directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f"{key}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def store(self, key: str, save: Callable[[Path], None], manifest: dict[str, Any]) -> Path:
        """Write an entry atomically: ``save(tmp_dir)``, add the manifest, rename into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            save(tmp)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / MANIFEST).write_text(
                json.dumps({**manifest, "key": key, "files": files}, indent=1, default=str)
            )
            final = self.entry_dir(key)
            if final.exists():  # a corrupt entry we were asked to replace
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
