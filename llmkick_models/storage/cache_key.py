"""What identifies a compressed-model cache entry: the source weights, and the key hashed from them.

A local folder is identified by its files' content, a hub id by the commit it resolves to; the key is a
short hash of that, the load options, the compression spec, the calibration content and llmkick's version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from llmkick_models.storage.cache_manifest import MANIFEST

log = logging.getLogger(__name__)

_WHOLE_FILE_HASH_LIMIT = 64 * 2**20  # hash small files fully; large ones by size, mtime and their ends
_EDGE_BYTES = 2**20


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
