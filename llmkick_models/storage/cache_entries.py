"""What the cache holds, as ``llmkick cache ls`` lists it, and which entries the keys a user typed name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkick_models.storage.cache_files import folder_size
from llmkick_models.storage.cache_manifest import (
    KEY_LENGTH,
    MANIFEST,
    MalformedManifest,
    is_key,
    read_manifest,
)

#: The shortest key prefix ``llmkick cache rm`` accepts (a typo of one or two digits deletes nothing).
MIN_KEY_PREFIX = 8
_KEY_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_KEY_PREFIX},{KEY_LENGTH}}}")


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


def scan_entries(root: Path) -> list[CacheEntry]:
    """Every entry under ``root``, least recently used first: complete ones and malformed ones (``problem``
    set).

    Only folders named like a key are entries; anything else in the folder is not the cache's.
    """
    found: list[CacheEntry] = []
    if not root.is_dir():
        return found
    for folder in root.iterdir():
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
        found.append(CacheEntry(folder.name, folder, folder_size(folder), last_used, manifest, problem))
    return sorted(found, key=lambda e: e.last_used)


def resolve_keys(entries: Sequence[CacheEntry], given: Sequence[str], root: Path) -> list[CacheEntry]:
    """The ``entries`` (of the cache at ``root``) that ``given`` names, each once.

    Each item must be a listed key or a prefix of at least 8 hex digits matching exactly one entry;
    otherwise a ValueError naming every item that is not, so that nothing is deleted for any of them.
    """
    chosen: dict[str, CacheEntry] = {}
    problems = []
    for text in given:
        if not _KEY_PREFIX.fullmatch(text):
            problems.append(f"{text!r} is not a key")
            continue
        matches = [entry for entry in entries if entry.key.startswith(text)]
        if not matches:
            problems.append(f"{text!r} matches no entry in {root}")
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
