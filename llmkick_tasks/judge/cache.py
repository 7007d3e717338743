"""On-disk response cache for judge (and reference-model) requests: one sqlite file, safe to share.

Each answered request is written the moment its reply arrives, in its own transaction, so a run that is
killed keeps everything answered so far and a re-run sends only what is missing.  The database runs in
WAL mode with a generous busy timeout: several processes (lm-eval data-parallel ranks, two runs at once)
may read and write the same file.  Rows hold the request (model, messages, parameters) and the reply (the
key, a hash, also covers the server and the protocol);
never an API key or a server address.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self: Python >= 3.11

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    usage TEXT,
    created REAL NOT NULL
)
"""
BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CachedResponse:
    """A reply found in the cache."""

    text: str
    usage: dict[str, int] | None


class ResponseCache:
    """A sqlite-backed map from request key to reply text."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit (isolation_level=None): every INSERT is its own short transaction.
        self._db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(SCHEMA)

    def get(self, key: str) -> CachedResponse | None:
        """The cached reply for ``key``, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT response, usage FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return CachedResponse(text=row[0], usage=json.loads(row[1]) if row[1] else None)

    def put(
        self, key: str, model: str, request: dict[str, Any], text: str, usage: dict[str, int] | None
    ) -> None:
        """Store a reply; the first writer of a key wins (replies to one key are interchangeable)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO responses (key, model, request, response, usage, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    json.dumps(request, ensure_ascii=False, sort_keys=True),
                    text,
                    json.dumps(usage) if usage else None,
                    time.time(),
                ),
            )

    def discard(self, key: str) -> None:
        """Remove the reply of ``key`` (an unusable one, so that the next :meth:`put` stores a new one)."""
        with self._lock:
            self._db.execute("DELETE FROM responses WHERE key = ?", (key,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
