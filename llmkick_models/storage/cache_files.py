"""File operations under the cache: deleting a folder so that it is never seen half-deleted, its size, and
telling a refused write (disk full, permissions, I/O) from a bug."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import uuid
from pathlib import Path

# How safetensors words an I/O failure ("I/O error: ... (os error 28)"; older releases "IoError(Os {...})").
_SAFETENSORS_IO = re.compile(r"I/O error|IoError|os error \d+")
# Where torch's zip writer fails when a write is refused (its errors carry no errno).
_TORCH_WRITER_MARKS = ("PytorchStreamWriter", "inline_container.cc")


class CacheWriteError(RuntimeError):
    """An entry could not be written (disk full, permissions, I/O error); the cache is left as it was."""


class CacheDeleteError(RuntimeError):
    """An entry could not be (completely) deleted; the message names the folder, the reason, what is left."""


def one_line_reason(error: BaseException) -> str:
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


def files_under(folder: Path) -> list[Path]:
    """The files below ``folder`` (none when it cannot be read)."""
    found = []
    with contextlib.suppress(OSError):
        found = [p for p in folder.rglob("*") if p.is_file()]
    return found


def folder_size(folder: Path) -> int:
    """The bytes of the files below ``folder``."""
    total = 0
    for file in files_under(folder):
        with contextlib.suppress(OSError):  # a file removed while we count
            total += file.stat().st_size
    return total


def _rmtree_collecting(path: Path) -> list[tuple[str, BaseException]]:
    """Delete what can be deleted under ``path``; the (path, error) pairs of what could not."""
    failures: list[tuple[str, BaseException]] = []
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _function, failed, error: failures.append((failed, error)))
    else:
        shutil.rmtree(path, onerror=lambda _function, failed, info: failures.append((failed, info[1])))
    return failures


def delete_entry_folder(entry: Path) -> None:
    """Delete an entry folder: first renamed out of the cache's names in one step, then its files.

    So an entry is either still complete under its key or gone from the listing; files that cannot be
    deleted after the rename are reported (and a later prune retries them).  FileNotFoundError when
    the entry is already gone; :class:`CacheDeleteError` otherwise.
    """
    trash = entry.parent / f".tmp-rm-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(entry, trash)
    except FileNotFoundError:
        raise
    except OSError as error:
        reason = one_line_reason(error)
        raise CacheDeleteError(f"cannot delete {entry} ({reason}); nothing was deleted") from error
    failures = _rmtree_collecting(trash)
    if failures:
        failed, error = failures[0]
        left = len(files_under(trash))
        raise CacheDeleteError(
            f"{entry.name} is out of the cache, but {left} of its files could not be deleted "
            f"({failed}: {one_line_reason(error)}); they are left in {trash}"
        )
