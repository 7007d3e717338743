"""What a model-cache entry looks like on disk: its name (the key) and its manifest.

Only folders named like a key are entries; everything else in the cache folder is left alone.  A manifest
is checked field by field when it is read, so an entry written by another tool (or edited by hand) is
reported as malformed with the reason instead of crashing whoever lists, loads or prunes the cache.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "llmkick_cache.json"
KEY_LENGTH = 32
_KEY = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SCALARS = (str, int, float, bool, type(None))


class MalformedManifest(ValueError):
    """An entry's manifest is missing, unreadable, or has a field of the wrong type."""


def is_key(name: str) -> bool:
    """Whether ``name`` has the shape of a cache key (what :func:`cache_key` makes)."""
    return _KEY.fullmatch(name) is not None


def check_key(key: str) -> str:
    """``key`` itself, or a ValueError: a key never names anything outside its own folder."""
    if not isinstance(key, str) or not is_key(key):
        raise ValueError(f"{key!r} is not a cache key; allowed: {KEY_LENGTH} lowercase hex digits")
    return key


def read_manifest(entry: Path) -> dict[str, Any]:
    """The checked manifest of the entry folder ``entry``, or :class:`MalformedManifest` saying why not."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        raise MalformedManifest(f"it has no {MANIFEST}") from None
    except OSError as error:
        raise MalformedManifest(f"its {MANIFEST} cannot be read ({error.strerror or error})") from None
    except ValueError as error:  # invalid JSON or not UTF-8
        raise MalformedManifest(f"its {MANIFEST} is not valid JSON ({error})") from None
    check_manifest(manifest, entry.name)
    return manifest


def check_manifest(manifest: Any, key: str) -> None:
    """Raise :class:`MalformedManifest` unless every field the cache reads has the type it needs."""
    if not isinstance(manifest, dict):
        raise MalformedManifest(f"the manifest is a {type(manifest).__name__}, not an object")
    if "key" in manifest and manifest["key"] != key:
        raise MalformedManifest(f"the manifest's key {manifest['key']!r} is not the folder's name")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise MalformedManifest("the manifest has no file list ('files' must map file names to sizes)")
    for name, size in files.items():
        _check_file_name(name)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise MalformedManifest(f"files[{name!r}] is {size!r}; allowed: a size in bytes >= 0")
    digests = manifest.get("sha256")
    if digests is None:
        raise MalformedManifest("the manifest has no sha256 digests (written by an older llmkick)")
    if not isinstance(digests, dict) or set(digests) != set(files):
        raise MalformedManifest("'sha256' must map exactly the names in 'files' to their digests")
    for name, digest in digests.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise MalformedManifest(f"sha256[{name!r}] is {digest!r}; allowed: 64 lowercase hex digits")
    _check_object(manifest, "report")
    parts = _check_object(manifest, "key_parts")
    source = _check_object(parts, "source", "key_parts.")
    for field in ("model_id", "local_path"):
        if not isinstance(source.get(field), str | None):
            raise MalformedManifest(f"key_parts.source.{field} is {source[field]!r}; allowed: text")
    spec = _check_object(parts, "spec", "key_parts.")
    for name, value in spec.items():
        if name != "calibration" and not isinstance(value, _SCALARS):
            raise MalformedManifest(f"key_parts.spec.{name} is {value!r}; allowed: a number, text or null")


def _check_file_name(name: str) -> None:
    # A name is joined to the entry folder on every lookup: it must stay inside it.
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or name == MANIFEST:
        raise MalformedManifest(f"files has the name {name!r}; allowed: a relative path inside the entry")


def _check_object(parent: dict[str, Any], field: str, where: str = "") -> dict[str, Any]:
    """``parent[field]`` when it is an object, ``{}`` when absent; anything else is malformed."""
    value = parent.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedManifest(f"{where}{field} is a {type(value).__name__}; allowed: an object")
    return value
