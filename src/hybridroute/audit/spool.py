"""`AuditSpool`: audit entries kept on local disk until the store has them, so none is lost.

Every entry the trail accepts is appended to the spool file (one JSON line, written with a
single `write` before the entry is queued) — a process killed with SIGKILL leaves it in the
file, and a database that is away only makes the file longer. Once a batch is durable in the
store, the spool's offset (a small file beside it, replaced atomically) moves past it; when
everything is confirmed, the file is emptied. At start the trail re-queues what lies past the
offset (skipping any entry the store already has: a crash between the store's commit and the
offset's update), so the entries are written exactly once.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

import orjson

__all__ = ["AuditSpool"]


class AuditSpool:
    """An append-only file of audit entries not yet confirmed stored."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset_path = self.path.with_name(self.path.name + ".offset")
        self._fd: int | None = None
        self._offset = 0
        self._unconfirmed: deque[int] = deque()  # byte length of each unconfirmed line

    def open(self) -> list[dict[str, Any]]:
        """Open (or create) the spool; the entries past the offset, oldest first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._offset = int(self._offset_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            self._offset = 0
        left: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open("rb") as spool:
                spool.seek(self._offset)
                for line in spool:
                    if not line.endswith(b"\n"):
                        break  # a line cut by a crash mid-write: never confirmed, never queued
                    try:
                        left.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        continue
                    self._unconfirmed.append(len(line))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return left

    def append(self, entry: dict[str, Any]) -> None:
        """Keep one entry (before it is queued for the store)."""
        if self._fd is None:
            return
        line = orjson.dumps(entry) + b"\n"
        os.write(self._fd, line)
        self._unconfirmed.append(len(line))

    def confirm(self, count: int) -> None:
        """The oldest `count` entries are durable in the store (or given up): move past them."""
        for _ in range(min(count, len(self._unconfirmed))):
            self._offset += self._unconfirmed.popleft()
        if not self._unconfirmed and self._fd is not None:
            os.ftruncate(self._fd, 0)
            self._offset = 0
        partial = self._offset_path.with_name(self._offset_path.name + ".tmp")
        partial.write_text(str(self._offset))
        partial.replace(self._offset_path)

    @property
    def waiting(self) -> int:
        """Entries kept on disk and not yet confirmed stored."""
        return len(self._unconfirmed)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
